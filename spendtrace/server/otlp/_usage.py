"""Usage items from the standard attributes of an OTel span: GenAI semantic conventions and AWS SDK spans.

The items are the ones the SDK's own instrumentation records for the same call (same ``key``,
``service``, ``provider``, ``model`` fields; ``spendtrace.sdk.instrument``), so an OTel-traced call
costs what an SDK-recorded one does. The model-id → key function and the DynamoDB capacity reader
are the SDK's own (``_models``, ``_dynamodb``: they import nothing but the schema).

GenAI tokens: the conventions say ``gen_ai.usage.input_tokens`` *includes* cache reads and cache
writes; ``UsageItem.input_tokens`` never does, so they are subtracted. Some instrumentations
(botocore's Bedrock Converse) report Bedrock's own split, where the input excludes the cache; when
the cache counts exceed the input that is what happened, and the input is kept as it is.
Cache writes have no 5-minute / 1-hour split in the conventions: all go to ``cache_write_tokens``.

AWS spans (``rpc.system = aws-api``): DynamoDB read / write capacity from
``aws.dynamodb.consumed_capacity`` (present when the app asked for ``ReturnConsumedCapacity``), else
one unit per call (the minimum a call is billed; an underestimate for large items); S3, SQS and
Lambda requests by operation as the SDK counts them (bytes are not in the attributes: 0); any other
AWS operation one request under ``aws_<service>_<operation>``, which the price book does not know,
so it shows as unpriced with its service and operation, never as $0. Failed calls record nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from spendtrace.schema import MAX_KEY_LEN, MAX_UNITS, UsageItem
from spendtrace.sdk.instrument._dynamodb import OPERATIONS as DYNAMODB_OPERATIONS
from spendtrace.sdk.instrument._dynamodb import consumed_units
from spendtrace.sdk.instrument._models import model_key, profile_geography, sanitize

__all__ = [
    "S3_OPERATIONS",
    "SQS_OPERATIONS",
    "TOKEN_KEYS",
    "USAGE_ATTRIBUTES",
    "USAGE_TRIGGERS",
    "OutOfRange",
    "out_of_range",
    "usage_items",
]

# The operation sets of spendtrace.sdk.instrument._botocore (tests/otlp check they stay equal).
S3_OPERATIONS: dict[str, str] = {
    **dict.fromkeys(("GetObject", "HeadObject", "GetObjectAttributes", "GetObjectTagging", "GetObjectAcl"), "s3_get"),
    **dict.fromkeys(("PutObject", "UploadPart", "CopyObject", "UploadPartCopy", "CreateMultipartUpload",
                     "CompleteMultipartUpload", "PutObjectTagging", "PutObjectAcl"), "s3_put"),
    **dict.fromkeys(("ListObjects", "ListObjectsV2", "ListObjectVersions", "ListBuckets", "ListMultipartUploads",
                     "ListParts"), "s3_list"),
    **dict.fromkeys(("DeleteObject", "DeleteObjects"), "s3_delete"),
}  # fmt: skip
SQS_OPERATIONS: dict[str, str] = {
    "SendMessage": "sqs_send",
    "SendMessageBatch": "sqs_send",
    "ReceiveMessage": "sqs_receive",
    "DeleteMessage": "sqs_delete",
    "DeleteMessageBatch": "sqs_delete",
}
_LAMBDA_INVOKE = frozenset({"Invoke", "InvokeWithResponseStream", "InvokeAsync"})

# Usage items are frozen: the ones that depend on the operation alone are made once.
_S3_ITEMS = {op: (UsageItem(key=key, service="s3", count=1.0),) for op, key in S3_OPERATIONS.items()}
_SQS_ITEMS = {op: (UsageItem(key=key, service="sqs", count=1.0),) for op, key in SQS_OPERATIONS.items()}
_LAMBDA_ITEMS = (UsageItem(key="aws_lambda_request", service="lambda", count=1.0),)

# Model ids (model_key is memoised) and capacity documents repeat from span to span: read each distinct one once.
_profile_geography = lru_cache(maxsize=1024)(profile_geography)

#: OTel provider names (``gen_ai.provider.name`` / ``gen_ai.system``) → ours; others are kept as sent.
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "aws.bedrock": "bedrock", "aws_bedrock": "bedrock",
             "bedrock": "bedrock"}  # fmt: skip


#: The GenAI token keys: a span with one of them is an LLM call.
TOKEN_KEYS = frozenset({
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.prompt_tokens",  # before semantic conventions 1.27
    "gen_ai.usage.completion_tokens",
})  # fmt: skip


#: Without one of these ``usage_items`` finds nothing: a span lacking them all is no billable call.
USAGE_TRIGGERS = TOKEN_KEYS | {"rpc.system"}
#: Every attribute ``usage_items`` reads (``convert`` reads no other attribute of a span for usage;
#: tests/otlp check this list against the code of this module).
USAGE_ATTRIBUTES = USAGE_TRIGGERS | {
    "rpc.service",
    "rpc.method",
    "http.status_code",
    "http.response.status_code",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "openai.response.service_tier",
    "gen_ai.openai.response.service_tier",
    "aws.dynamodb.consumed_capacity",
    "aws.dynamodb.statement",
    "db.statement",
}


class OutOfRange(ValueError):
    """A usage unit above ``MAX_UNITS``; the message is the reason the span is refused (``out_of_range``)."""


@lru_cache(maxsize=1024)
def _provider(raw: str) -> str:
    return PROVIDERS.get(raw) or sanitize(raw) or "genai"


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float) and value == value and value > 0:
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


#: Longest provider or model name read (a usage key keeps ``MAX_KEY_LEN``, 256 characters, of it).
_LONGEST_NAME = 1024


def _identity(raw_provider: Any, request_model: Any, response_model: Any, tier: Any,
              aws_service: str | None) -> tuple[str, str, str | None, str | None, str | None]:  # fmt: skip
    """What a GenAI call's item says besides its counts: (key, provider, model, service tier, region).

    Names are read up to ``_LONGEST_NAME`` characters (what is stored of them is shorter still), so the
    caches below (``_provider``, ``model_key``) never keep a long string an export sent.
    """
    n = _LONGEST_NAME
    raw = str(raw_provider or "")[:n].strip().lower()
    if not raw and aws_service == "Bedrock Runtime":
        raw = "aws.bedrock"
    provider = _provider(raw)
    model = str(response_model or request_model or "")[:n]
    if provider == "bedrock":  # the request's id keeps the inference profile (us., global.) the bill depends on
        model = str(request_model or model)[:n]
    return (model_key(provider, model), provider[:64], model[:MAX_KEY_LEN] or None, str(tier)[:64] if tier else None,
            _profile_geography(model) if provider == "bedrock" else None)  # fmt: skip


#: ``_identity`` by its arguments, for calls whose names are all short strings (or absent): calls repeat a few
#: models. Only those are kept, so no key holds a long string, and no 1 or True (equal to a dict, not to
#: ``str``) stands for another. At most 4096 entries, then it starts again.
_IDENTITY: dict[tuple[Any, ...], tuple[str, str, str | None, str | None, str | None]] = {}


def _genai(attrs: Mapping[str, Any], aws_service: str | None) -> UsageItem:
    names = (attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system"), attrs.get("gen_ai.request.model"),
             attrs.get("gen_ai.response.model"),
             attrs.get("openai.response.service_tier") or attrs.get("gen_ai.openai.response.service_tier"),
             aws_service)  # fmt: skip
    try:
        identity = _IDENTITY.get(names)
    except TypeError:  # a value that cannot be a key (a list)
        identity = None
    if identity is None:
        identity = _identity(*names)
        if all(v is None or (type(v) is str and len(v) <= _LONGEST_NAME) for v in names):
            if len(_IDENTITY) >= 4096:
                _IDENTITY.clear()
            _IDENTITY[names] = identity
    key, provider, model, tier, region = identity
    # counts are ints almost always: those skip the call to _int
    inp = attrs.get("gen_ai.usage.input_tokens")
    if inp is None:
        inp = attrs.get("gen_ai.usage.prompt_tokens")
    inp = inp if type(inp) is int and inp >= 0 else _int(inp)
    out = attrs.get("gen_ai.usage.output_tokens")
    if out is None:
        out = attrs.get("gen_ai.usage.completion_tokens")
    out = out if type(out) is int and out >= 0 else _int(out)
    read = attrs.get("gen_ai.usage.cache_read.input_tokens")
    read = 0 if read is None else _int(read)
    write = attrs.get("gen_ai.usage.cache_creation.input_tokens")
    write = 0 if write is None else _int(write)
    if read + write <= inp:  # the conventions: input includes the cache; ours never does
        inp -= read + write
    item = UsageItem(key=key, service=provider, count=1.0, input_tokens=inp, output_tokens=out,
                     cache_read_tokens=read, cache_write_tokens=write, provider=provider, model=model,
                     service_tier=tier, region=region)  # fmt: skip
    if max(inp, out, read, write) > MAX_UNITS:
        raise OutOfRange(out_of_range((item,)))
    return item


def _dynamodb(attrs: Mapping[str, Any], method: str) -> tuple[UsageItem, ...]:
    kind = DYNAMODB_OPERATIONS.get(method)
    if kind is None:
        return (UsageItem(key=f"aws_dynamodb_{sanitize(method)}"[:MAX_KEY_LEN], service="dynamodb", count=1.0),)
    if method == "ExecuteStatement":
        statement = str(attrs.get("aws.dynamodb.statement") or attrs.get("db.statement") or "SELECT")
        kind = "read" if statement.lstrip()[:6].upper() == "SELECT" else "write"
    raw = attrs.get("aws.dynamodb.consumed_capacity")
    entries = tuple(raw) if type(raw) is list or type(raw) is tuple else (raw,) if raw is not None else ()
    try:  # the usual form, short JSON strings: each distinct list is read once
        items = _CAPACITY.get((kind, entries))
    except TypeError:  # a kvlist (dict) among them: unhashable
        return _capacity(kind, entries)
    if items is None:
        items = _capacity(kind, entries)
        if len(_CAPACITY) >= 4096:
            _CAPACITY.clear()
        if sum(len(e) if type(e) is str else 1 for e in entries) <= 4096:  # long ones would pin request data
            _CAPACITY[kind, entries] = items
    return items


#: Capacity items by (read or write, the attribute's entries): at most 4096 lists of up to 4096 characters
#: (one table's ConsumedCapacity is some 100-300). Equal entries of other types (1, 1.0, True) are none of
#: them a ConsumedCapacity, so they give the same items.
_CAPACITY: dict[tuple[str, tuple[Any, ...]], tuple[UsageItem, ...]] = {}

_CAPACITY_FIELDS = ("CapacityUnits", "ReadCapacityUnits", "WriteCapacityUnits")


def _readable(doc: Any) -> bool:
    """A ``ConsumedCapacity`` whose units are absent or non-negative numbers, as DynamoDB writes them (too
    large a number is refused later, with its reason, by ``out_of_range``)."""
    if not isinstance(doc, Mapping):
        return False
    for name in _CAPACITY_FIELDS:
        v = doc.get(name)
        if v is not None and not (type(v) in (int, float) and v >= 0):  # NaN fails >= 0
            return False
    return True


def _capacity(kind: str, entries: tuple[Any, ...]) -> tuple[UsageItem, ...]:
    """Capacity items from ``aws.dynamodb.consumed_capacity`` entries; entries that are not a readable
    ``ConsumedCapacity`` (bad JSON, units that are not numbers) are skipped, as if absent."""
    consumed: list[Any] = []
    for entry in entries:
        try:
            doc = json.loads(entry) if isinstance(entry, str) else entry
        except (ValueError, RecursionError):
            continue
        if _readable(doc):
            consumed.append(doc)
    units = consumed_units(consumed, kind) or {kind: 1.0}
    items = tuple(UsageItem(key=f"dynamodb_{k}", service="dynamodb", count=float(n)) for k, n in units.items() if n > 0)
    if (why := out_of_range(items)) is not None:
        raise OutOfRange(why)
    return items


def _aws(attrs: Mapping[str, Any], service: str, method: str) -> tuple[UsageItem, ...]:
    if service == "DynamoDB":
        return _dynamodb(attrs, method)
    if service == "S3":
        return _S3_ITEMS.get(method, ())
    if service == "SQS":
        return _SQS_ITEMS.get(method, ())
    if service == "Lambda":
        return _LAMBDA_ITEMS if method in _LAMBDA_INVOKE else ()
    svc = sanitize(service) or "aws"
    return (UsageItem(key=f"aws_{svc}_{sanitize(method)}"[:MAX_KEY_LEN], service=svc[:64], count=1.0),)


_UNIT_FIELDS = ("count", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                "cache_write_1h_tokens", "bytes", "gb_seconds")


def out_of_range(usage: tuple[UsageItem, ...]) -> str | None:
    """Why ``usage`` cannot be stored (a unit above ``MAX_UNITS``), or None.

    Such a span is refused at the receiver, in the export's partial success: a token count of 1e20
    would otherwise fail to encode and answer 503 on every retry until the exporter gave up. Only
    units read from attributes can be that large (token counts, DynamoDB capacity): ``usage_items``
    checks those where it makes them and raises ``OutOfRange``; the other items count one request.
    """
    for item in usage:
        for name in _UNIT_FIELDS:
            if getattr(item, name) > MAX_UNITS:
                return f"usage {name} above {MAX_UNITS} (the largest storable count)"
    return None


def usage_items(attrs: Mapping[str, Any], failed: bool, tokens: bool | None = None) -> tuple[UsageItem, ...]:
    """What the call a span describes used, from its attributes; empty for spans that are not billable calls.

    ``tokens``: whether ``attrs`` has a GenAI token key (None: look). Raises ``OutOfRange`` with the
    reason when a unit is above ``MAX_UNITS``.
    """
    aws = attrs.get("rpc.system") == "aws-api"
    service = str(attrs.get("rpc.service") or "") if aws else None
    if tokens if tokens is not None else not attrs.keys().isdisjoint(TOKEN_KEYS):
        return (_genai(attrs, service),)
    if not aws or failed:
        return ()
    status = attrs.get("http.status_code", attrs.get("http.response.status_code"))
    if isinstance(status, int) and status >= 300:
        return ()
    method = str(attrs.get("rpc.method") or "")
    if service == "Bedrock Runtime" or not method:
        return ()  # a Bedrock call without token attributes: nothing known to bill
    return _aws(attrs, service or "", method)
