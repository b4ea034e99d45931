"""boto3 / botocore through botocore's own event system: DynamoDB, S3, SQS, Lambda and Bedrock runtime.

How the handlers get in, without patching any botocore function:

- every botocore ``Session`` copies ``botocore.handlers.BUILTIN_HANDLERS`` into its event emitter
  when it is created, and every client copies its session's emitter. Adding our handlers to that
  list covers every session, and every client, created after ``auto_instrument()``;
- sessions and clients that already exist (a module-level ``boto3.client(...)`` made before
  ``auto_instrument()``) are found once with ``gc.get_objects()`` and get the handlers registered
  on their emitters. That scan only runs if botocore has been imported already; if it has not,
  nothing is imported now: the handlers are added when the app first imports botocore.

On each call two events fire on the caller's thread, in the caller's context:
``before-parameter-build.<service>`` (we note the request, and ask DynamoDB for
``ReturnConsumedCapacity=TOTAL`` when the caller did not choose) and ``after-call.<service>``
(we read the response and record one ``UsageItem``). Failed calls (HTTP status >= 300) record nothing.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import math
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from spendtrace.schema import UsageItem
from spendtrace.sdk.instrument import _bedrock, _dynamodb, _hooks
from spendtrace.sdk.instrument._common import note_error
from spendtrace.sdk.scope import is_suppressed, record_usage

__all__ = ["install", "uninstall"]

WHERE = "boto3"
_P = "spendtrace.params"  # keys we add to botocore's per-call request context
_INJECTED = "spendtrace.cc"
_BYTES = "spendtrace.bytes"
_SQS_CHUNK = 64 * 1024  # SQS bills every 64 KB of a request's payload as one request

# --------------------------------------------------------------------------- DynamoDB


def _ddb_before(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    if model.name not in _dynamodb.OPERATIONS or is_suppressed():
        return
    context[_P] = params
    if "ReturnConsumedCapacity" not in params:
        params["ReturnConsumedCapacity"] = "TOTAL"
        context[_INJECTED] = True


def _ddb_after(parsed: dict[str, Any], model: Any, context: dict[str, Any]) -> None:
    op = model.name
    params = context.get(_P)
    if params is None:
        return
    kind = _dynamodb.OPERATIONS[op]
    if op == "ExecuteStatement" and str(params.get("Statement", "")).lstrip()[:6].upper() != "SELECT":
        kind = "write"
    consumed = parsed.get("ConsumedCapacity")
    if context.get(_INJECTED):  # the caller did not ask for it: hand back the response it expects
        parsed.pop("ConsumedCapacity", None)
    units = _dynamodb.consumed_units(consumed, kind)
    if units is None:
        units = {kind: _dynamodb.estimate_units(op, params, parsed)}
    for k, n in units.items():
        if n > 0:
            record_usage(UsageItem(key=f"dynamodb_{k}", service="dynamodb", count=float(n)))


# --------------------------------------------------------------------------- S3

_S3_GET = frozenset({"GetObject", "HeadObject", "GetObjectAttributes", "GetObjectTagging", "GetObjectAcl"})
_S3_PUT = frozenset(
    {"PutObject", "UploadPart", "CopyObject", "UploadPartCopy", "CreateMultipartUpload",
     "CompleteMultipartUpload", "PutObjectTagging", "PutObjectAcl"}
)  # fmt: skip
_S3_LIST = frozenset({"ListObjects", "ListObjectsV2", "ListObjectVersions", "ListBuckets", "ListMultipartUploads",
                      "ListParts"})  # fmt: skip
_S3_DELETE = frozenset({"DeleteObject", "DeleteObjects"})


def _body_size(params: Mapping[str, Any]) -> int:
    """Bytes an upload sends: ``ContentLength`` if given, else the length of the body (bytes, str or file)."""
    length = params.get("ContentLength")
    if isinstance(length, int):
        return length
    body = params.get("Body")
    if body is None:
        return 0
    if isinstance(body, bytes | bytearray | memoryview):
        return len(body)
    if isinstance(body, str):
        return len(body.encode())
    if hasattr(body, "__len__"):
        return len(body)
    if hasattr(body, "seek") and hasattr(body, "tell"):
        pos = body.tell()
        end = body.seek(0, 2)
        body.seek(pos)
        return max(0, int(end) - int(pos))
    return 0


def _s3_before(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    if model.name in ("PutObject", "UploadPart") and not is_suppressed():
        context[_BYTES] = _body_size(params)


def _s3_after(parsed: dict[str, Any], model: Any, context: dict[str, Any]) -> None:
    op = model.name
    if op in _S3_GET:
        nbytes = parsed.get("ContentLength", 0) if op == "GetObject" else 0
        record_usage(UsageItem(key="s3_get", service="s3", count=1.0, bytes=int(nbytes or 0)))
    elif op in _S3_PUT:
        record_usage(UsageItem(key="s3_put", service="s3", count=1.0, bytes=int(context.get(_BYTES, 0))))
    elif op in _S3_LIST:
        record_usage(UsageItem(key="s3_list", service="s3", count=1.0))
    elif op in _S3_DELETE:  # free in S3, but a request all the same: priced at $0, visible in counts
        record_usage(UsageItem(key="s3_delete", service="s3", count=1.0))


# --------------------------------------------------------------------------- SQS


def _attributes_size(attributes: Any) -> int:
    if not isinstance(attributes, Mapping):
        return 0
    size = 0
    for name, attr in attributes.items():
        size += len(str(name).encode()) + len(str(attr.get("DataType", "")).encode())
        value = attr.get("StringValue", attr.get("BinaryValue", b""))
        size += len(value) if isinstance(value, bytes | bytearray) else len(str(value).encode())
    return size


def _message_size(msg: Mapping[str, Any], body_key: str) -> int:
    return len(str(msg.get(body_key, "")).encode()) + _attributes_size(msg.get("MessageAttributes"))


def _sqs_after(parsed: dict[str, Any], model: Any, context: dict[str, Any]) -> None:
    op = model.name
    params = context.get(_P) or {}
    if op == "SendMessage":
        key, size = "sqs_send", _message_size(params, "MessageBody")
    elif op == "SendMessageBatch":
        key, size = "sqs_send", sum(_message_size(e, "MessageBody") for e in params.get("Entries") or ())
    elif op == "ReceiveMessage":
        key, size = "sqs_receive", sum(_message_size(m, "Body") for m in parsed.get("Messages") or ())
    elif op in ("DeleteMessage", "DeleteMessageBatch"):
        key, size = "sqs_delete", 0
    else:
        return
    # One billed request per started 64 KB; a batch of up to 10 small messages is still one request.
    count = max(1, math.ceil(size / _SQS_CHUNK))
    record_usage(UsageItem(key=key, service="sqs", count=float(count), bytes=size))


def _keep_params(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    context[_P] = params


# --------------------------------------------------------------------------- Lambda


def _lambda_after(parsed: dict[str, Any], model: Any, context: dict[str, Any]) -> None:
    if model.name in ("Invoke", "InvokeWithResponseStream", "InvokeAsync"):
        record_usage(UsageItem(key="aws_lambda_request", service="lambda", count=1.0))


# --------------------------------------------------------------------------- Bedrock runtime


def _bedrock_after(http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any]) -> None:
    op = model.name
    model_id = str((context.get(_P) or {}).get("modelId", ""))
    if op == "InvokeModel":
        item = _bedrock.invoke_model_usage(model_id, http_response, parsed)
    elif op == "Converse":
        item = _bedrock.converse_usage(model_id, parsed)
    elif op == "InvokeModelWithResponseStream":
        _bedrock.observe_stream(parsed.get("body"), model_id, converse=False)
        return
    elif op == "ConverseStream":
        _bedrock.observe_stream(parsed.get("stream"), model_id, converse=True)
        return
    else:
        return
    if item is not None:
        record_usage(item)


# --------------------------------------------------------------------------- registration


def _after(service: Callable[..., None]) -> Callable[..., None]:
    """Wrap a service's after-call reader: skip failures and suppressed calls, count our own errors."""

    def after_call(http_response: Any, parsed: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        if getattr(http_response, "status_code", 200) >= 300 or not isinstance(parsed, dict) or is_suppressed():
            return
        try:
            if service is _bedrock_after:
                service(http_response, parsed, model, context)
            else:
                service(parsed, model, context)
        except Exception:
            note_error(WHERE)

    after_call.__name__ = f"spendtrace_{service.__name__.strip('_')}"
    return after_call


def _guard(before: Callable[..., None]) -> Callable[..., None]:
    def before_parameter_build(params: Any, model: Any, context: Any, **_: Any) -> None:
        try:
            if isinstance(params, dict) and isinstance(context, dict):
                before(params, model, context)
        except Exception:
            note_error(WHERE)

    before_parameter_build.__name__ = f"spendtrace_{before.__name__.strip('_')}"
    return before_parameter_build


#: (event, handler) pairs, built once so that register / unregister see the same function objects.
HANDLERS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("before-parameter-build.dynamodb", _guard(_ddb_before)),
    ("after-call.dynamodb", _after(_ddb_after)),
    ("before-parameter-build.s3", _guard(_s3_before)),
    ("after-call.s3", _after(_s3_after)),
    ("before-parameter-build.sqs", _guard(_keep_params)),
    ("after-call.sqs", _after(_sqs_after)),
    ("after-call.lambda", _after(_lambda_after)),
    ("before-parameter-build.bedrock-runtime", _guard(_keep_params)),
    ("after-call.bedrock-runtime", _after(_bedrock_after)),
)


def _live_emitters() -> list[Any]:
    """Event emitters of every botocore session and client alive now (empty if botocore was never imported)."""
    if "botocore.client" not in sys.modules:
        return []
    from botocore.client import BaseClient
    from botocore.session import Session

    found = []
    kinds: dict[type, int] = {}  # 0: neither, 1: client, 2: session
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance reads __class__, which lazy-import proxies (openai's)
        # answer by importing their module.
        cls = type(obj)
        kind = kinds.get(cls)
        if kind is None:
            kind = kinds[cls] = 1 if issubclass(cls, BaseClient) else 2 if issubclass(cls, Session) else 0
        if kind == 1:
            found.append(obj.meta.events)
        elif kind == 2:
            found.append(obj.get_component("event_emitter"))
    return found


def _unregister(emitter: Any, event: str, handler: Callable[..., None]) -> None:
    # Not registered: botocore raises AttributeError for an event node that holds no handlers.
    with contextlib.suppress(AttributeError, ValueError):
        emitter.unregister(event, handler)


def _apply(handlers_module: ModuleType, scan: bool) -> None:
    builtin = handlers_module.BUILTIN_HANDLERS
    for spec in HANDLERS:
        if spec not in builtin:
            builtin.append(spec)
    if not scan:
        return
    for emitter in _live_emitters():
        for event, handler in HANDLERS:
            _unregister(emitter, event, handler)  # never registered twice
            emitter.register(event, handler)


def install() -> bool:
    """Add the handlers to botocore's built-in list and to every live session and client; ``False`` without botocore.

    If botocore is not imported yet, this waits for its import (no session or client can exist before).
    """
    if "botocore.handlers" in sys.modules:
        _apply(sys.modules["botocore.handlers"], scan=True)
        return True
    if importlib.util.find_spec("botocore") is None:
        return False
    _hooks.when_imported("botocore.handlers", lambda module: _apply(module, scan=False))
    return True


def uninstall() -> None:
    """Remove the handlers from botocore's built-in list and from every live session and client."""
    module = sys.modules.get("botocore.handlers")
    if module is None:
        return
    builtin = module.BUILTIN_HANDLERS
    builtin[:] = [spec for spec in builtin if spec not in HANDLERS]
    for emitter in _live_emitters():
        for event, handler in HANDLERS:
            _unregister(emitter, event, handler)
