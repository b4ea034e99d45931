"""Wire types shared by the SDK and the consumers: one span, its usage items, and their codecs.

Rules (see STYLE.md): structs are frozen where possible, ``array_like`` because the spans
topic is hot, and new fields are only ever appended at the end with a default, so an old
consumer can read a new producer's spans and vice versa (``tests/sdk/test_schema.py``).
The SDK builds spans without validation on the hot path; the consumers decode with the
constraints below, and whatever fails them goes to the dead-letter topic with the reason.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = [
    "EARLIEST_START_NS",
    "MAX_DURATION_NS",
    "MAX_KEY_LEN",
    "MAX_NAME_LEN",
    "MAX_TIME_NS",
    "MAX_UNITS",
    "MAX_WEIGHT",
    "UNATTRIBUTED",
    "Span",
    "UsageItem",
    "decode_span",
    "decode_spans",
    "encode_span",
]

#: Feature name used for usage recorded outside any scope.
UNATTRIBUTED = "__unattributed__"

#: Longest feature / tenant / endpoint / operation name accepted by the consumers.
MAX_NAME_LEN = 512
#: Longest price key accepted by the consumers.
MAX_KEY_LEN = 256

#: Largest token / byte count and ``count`` / ``gb_seconds`` of one usage item (2**44 - 1, about 1.8e13).
#: Far above any real call, and low enough that sums over a batch of 500,000 items still fit the
#: stores' 64-bit integers (SQLite INTEGER, ClickHouse Int64); a power of two minus one, so the
#: SDK checks six int fields with one ``|``.
MAX_UNITS = 2**44 - 1
#: Latest span start accepted: 2100-01-01T00:00:00Z in epoch nanoseconds (ClickHouse's ``DateTime``,
#: which partitions the spans, ends in 2106; SQLite's int64 nanoseconds in 2262).
MAX_TIME_NS = 4_102_444_800 * 10**9
#: Earliest span start the stores accept as a real date (2000-01-01 UTC): a host clock saying 1970 is
#: wrong, and its spans would vanish from every total at the next retention run (dead letters instead).
EARLIEST_START_NS = 946_684_800 * 10**9
#: Longest span duration / CPU time accepted (100 years): start + duration still fits an int64.
MAX_DURATION_NS = 3_155_760_000 * 10**9
#: Largest sample weight accepted (a sample rate of 1e-12); infinite weights would poison every sum.
MAX_WEIGHT = 1e12

_Units = Annotated[float, msgspec.Meta(ge=0, le=MAX_UNITS)]
_Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_UNITS)]
_Nanos = Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_NS)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LEN)]
_OptName = _Name | None
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_OptLabel = Annotated[str, msgspec.Meta(max_length=64)] | None
_OptModel = Annotated[str, msgspec.Meta(max_length=MAX_KEY_LEN)] | None


class UsageItem(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """What one API call used, in the units its price key is billed by.

    ``count`` is billed requests (read/write capacity units for DynamoDB; for SQS one per
    started 64 KB of a call, however many messages it batches). Token fields follow each
    provider's billing convention as normalised by the SDK: ``input_tokens`` never includes
    cache reads or cache writes, so nothing is counted twice (see ``spendtrace.instrument``).
    """

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_LEN)]
    service: Annotated[str, msgspec.Meta(max_length=64)] = ""
    count: _Units = 0.0
    input_tokens: _Tokens = 0
    output_tokens: _Tokens = 0
    cache_read_tokens: _Tokens = 0
    #: Cache writes billed at the default (5-minute) cache-write rate.
    cache_write_tokens: _Tokens = 0
    #: Anthropic 1-hour cache writes, billed at their own (higher) rate.
    cache_write_1h_tokens: _Tokens = 0
    bytes: _Tokens = 0
    gb_seconds: _Units = 0.0
    # What the bill depends on besides the units, so the consumers can price (and re-price) the
    # item as the provider bills it. All optional: items from older producers leave them None and
    # are priced by ``key`` alone, as before.
    #: Who served the call: ``openai``, ``anthropic``, ``bedrock``, ``lambda`` ...
    provider: _OptLabel = None
    #: The model id exactly as the API returned it (the response's model, else the request's).
    model: _OptModel = None
    #: Service tier / processing mode the response reports (``flex``, ``priority``, ``batch``, ``default`` ...).
    service_tier: _OptLabel = None
    #: Bedrock inference-profile geography of ``model`` (``us``, ``eu``, ``apac``, ``global`` ...), else None.
    region: _OptLabel = None
    #: CPU architecture the usage ran on where the price depends on it (Lambda: ``x86_64`` / ``arm64``).
    architecture: _OptLabel = None


class Span(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One finished scope: who (feature, tenant, endpoint), where in the request tree, and what it used."""

    span_id: _Id
    parent_id: _Id | None
    request_id: _Id
    feature: _Name
    operation: _OptName = None
    endpoint: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] | None = None
    user_id: _OptName = None
    #: Wall-clock start, nanoseconds since the Unix epoch (UTC).
    start_ns: Annotated[int, msgspec.Meta(ge=0, le=MAX_TIME_NS)] = 0
    duration_ns: _Nanos = 0
    cpu_ns: _Nanos = 0
    error: bool = False
    error_type: Annotated[str, msgspec.Meta(max_length=MAX_NAME_LEN)] | None = None
    usage: tuple[UsageItem, ...] = ()
    #: 1 / sample rate in force when the request's root decided to record it.
    weight: Annotated[float, msgspec.Meta(ge=1.0, le=MAX_WEIGHT)] = 1.0
    #: Distinct features on the path from the root to this span, root first, this span's last.
    path: tuple[_Name, ...] = ()
    #: Memory size of the Lambda function this ran in (0: not on Lambda); prices root spans in GB-s.
    lambda_memory_mb: Annotated[int, msgspec.Meta(ge=0, le=1_048_576)] = 0
    #: CPU architecture of that Lambda function (``x86_64`` / ``arm64``; None: x86 rates), for its GB-s rate.
    lambda_architecture: Annotated[str, msgspec.Meta(max_length=16)] | None = None


_encoder = msgspec.msgpack.Encoder()
_span_decoder = msgspec.msgpack.Decoder(Span)
_spans_decoder = msgspec.msgpack.Decoder(list[Span])


def encode_span(span: Span) -> bytes:
    """Encode one span as the value of a ``spendtrace.spans`` message."""
    return _encoder.encode(span)


def decode_span(data: bytes) -> Span:
    """Decode and validate one span; raises ``msgspec.ValidationError`` / ``DecodeError`` on bad input.

    NaN units fail the ``ge=0`` constraints, so they are rejected like negative ones.
    """
    return _span_decoder.decode(data)


def decode_spans(data: bytes) -> list[Span]:
    """Decode a msgpack array of spans (the spill file's frame payload)."""
    return _spans_decoder.decode(data)
