"""The C reader (``wire.scan``) reads from an export's bytes exactly what ``_read_message`` reads from upb's parsed
message, or declines (None) and leaves it to that reader; conversion through either gives the same spans.

Exports come from the OpenTelemetry SDK's own encoder, from hypothesis (every AnyValue kind, nesting, invalid
ids, exception events, extreme times and status codes), and from byte-level changes to those that upb still
parses: concatenated messages (protobuf merges them), repeated and reordered fields, unknown fields.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from spendtrace.server.otlp import _convert, convert, load_rules
from spendtrace.server.otlp._rules import DEFAULT_RULES
from spendtrace.server.otlp.receiver import _murmur2, murmur2

wire = _convert._wire
# The dev install builds the reader (setup.py); without a C compiler it is skipped at install, and this says so.
assert wire is not None, "spendtrace.server.otlp._c.wire was not built: install with a C compiler (pip install -e .)"

WANTED = _convert._plan(DEFAULT_RULES)
KEYS = sorted(WANTED.wanted)


def _both(body: bytes, plan: Any = WANTED) -> tuple[Any, Any]:
    """(what the C reader gives, what the Python reader gives) for a body upb parses."""
    request = ExportTraceServiceRequest.FromString(body)
    return wire.scan(body, plan.keys), _convert._read_message(request, plan.wanted)


def _same(body: bytes, plan: Any = WANTED) -> bool:
    """Assert the readers agree where the C one reads; True if it read (False: it declined)."""
    fast, slow = _both(body, plan)
    if fast is None:
        return False
    assert fast == slow
    return True


def _sdk_export() -> bytes:
    """A real SDK export: HTTP root, feature, GenAI and DynamoDB spans, a failed span with an exception event."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop", "deployment.environment": "prod"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(20):
        with tracer.start_as_current_span("GET /r", attributes={"http.route": "/r", "enduser.id": f"t{i % 3}",
                                                                  "http.method": "GET", "net.peer.port": 443}):
            with tracer.start_as_current_span("chat", attributes={
                "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 1000 + i, "gen_ai.usage.output_tokens": 50,
                "gen_ai.usage.cache_read.input_tokens": 200, "llm.temperature": 0.5, "stream": False}):
                pass
            ddb = {"rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": "Query",
                   "aws.dynamodb.consumed_capacity": ('{"TableName": "t", "CapacityUnits": 1.5}',)}
            with tracer.start_as_current_span("DynamoDB.Query", attributes=ddb) as span:
                if i % 4 == 0:
                    span.record_exception(KeyError("k"))
                    span.set_status(Status(StatusCode.ERROR, "boom"))
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return encode_spans(spans).SerializeToString()


def test_sdk_exports_are_read_in_c_exactly_as_from_the_parsed_message() -> None:
    body = _sdk_export()
    assert _same(body), "the C reader declined an ordinary SDK export"
    fast, _ = _both(body)
    assert sum(len(spans) for _, spans in fast) == 60
    failed = [s for _, spans in fast for s in spans if s[6] == 2]
    assert len(failed) == 5 and {s[9] for s in failed} == {"KeyError"}
    request = ExportTraceServiceRequest.FromString(body)
    slow, quick = convert(request), convert(request, body=body)
    assert quick.spans == slow.spans and len(quick.spans) == 60
    assert {s.error_type for s in quick.spans if s.error} == {"KeyError"}


def test_rules_from_a_file_read_the_same_keys_in_c(tmp_path: Any) -> None:
    """A rule file adds keys to the table (conditions, ``*_from`` sources): the C reader keeps those too."""
    f = tmp_path / "rules.toml"
    f.write_text('tenant = ["app.customer"]\n[[rule]]\nmatch = { "http.method" = "GET" }\n'
                 'feature_from = "net.peer.port"\n')
    rules = load_rules(f)
    body = _sdk_export()
    plan = _convert._plan(rules)
    assert "http.method" in plan.wanted and _same(body, plan)
    request = ExportTraceServiceRequest.FromString(body)
    assert convert(request, rules, body).spans == convert(request, rules).spans


# ---- generated exports ----

_text = st.text(st.characters(codec="utf-8"), max_size=12)
_key = st.one_of(st.sampled_from(KEYS), _text)


def _any_value(depth: int = 2) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.tuples(st.just("string_value"), _text),
        st.tuples(st.just("bool_value"), st.booleans()),
        st.tuples(st.just("int_value"), st.integers(-(2**63), 2**63 - 1)),
        st.tuples(st.just("double_value"), st.floats(allow_nan=False)),
        st.tuples(st.just("bytes_value"), st.binary(max_size=6)),
        st.tuples(st.just("unset"), st.none()),
    )
    if depth == 0:
        return scalars
    inner = _any_value(depth - 1)
    return st.one_of(
        scalars,
        st.tuples(st.just("array_value"), st.lists(inner, max_size=3)),
        st.tuples(st.just("kvlist_value"), st.lists(st.tuples(_text, inner), max_size=3)),
    )


def _fill(value: Any, spec: tuple[str, Any]) -> None:
    kind, v = spec
    if kind == "unset":
        return
    if kind == "array_value":
        value.array_value.SetInParent()
        for item in v:
            _fill(value.array_value.values.add(), item)
    elif kind == "kvlist_value":
        value.kvlist_value.SetInParent()
        for k, item in v:
            kv = value.kvlist_value.values.add()
            kv.key = k
            _fill(kv.value, item)
    else:
        setattr(value, kind, v)


_attrs = st.lists(st.tuples(_key, _any_value()), max_size=6)
_id = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=17), st.just(bytes(8)))
_span = st.fixed_dictionaries({
    "trace_id": st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=17)),
    "span_id": _id, "parent_span_id": _id, "name": _text,
    "start_time_unix_nano": st.integers(0, 2**64 - 1), "end_time_unix_nano": st.integers(0, 2**64 - 1),
    "attributes": _attrs, "code": st.integers(-(2**31), 2**31 - 1),
    "events": st.lists(st.tuples(st.sampled_from(["exception", "log", ""]),
                                 st.lists(st.tuples(st.sampled_from(["exception.type", "exception.message"]),
                                                    _any_value(1)), max_size=3)), max_size=3),
})  # fmt: skip
_export = st.lists(st.tuples(_attrs, st.lists(st.lists(_span, max_size=4), max_size=2)), max_size=3)


def _build(export: list[Any]) -> bytes:
    req = ExportTraceServiceRequest()
    for resource_attrs, scopes in export:
        rs = req.resource_spans.add()
        for k, v in resource_attrs:
            kv = rs.resource.attributes.add()
            kv.key = k
            _fill(kv.value, v)
        for spans in scopes:
            ss = rs.scope_spans.add()
            for s in spans:
                span = ss.spans.add()
                for f in ("trace_id", "span_id", "parent_span_id", "name"):
                    setattr(span, f, s[f])
                span.start_time_unix_nano, span.end_time_unix_nano = s["start_time_unix_nano"], s["end_time_unix_nano"]
                span.status.code = s["code"]  # type: ignore[assignment]  # an open enum: any int32
                for k, v in s["attributes"]:
                    kv = span.attributes.add()
                    kv.key = k
                    _fill(kv.value, v)
                for name, attrs in s["events"]:
                    event = span.events.add()
                    event.name = name
                    for k, v in attrs:
                        kv = event.attributes.add()
                        kv.key = k
                        _fill(kv.value, v)
    return req.SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_export)
def test_generated_exports_read_the_same(export: list[Any]) -> None:
    body = _build(export)
    assert _same(body), "the C reader declined a message the protobuf classes wrote"
    request = ExportTraceServiceRequest.FromString(body)
    slow, quick = convert(request), convert(request, body=body)
    assert (quick.spans, quick.rejected, quick.reasons) == (slow.spans, slow.rejected, slow.reasons)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_export, _export)
def test_concatenated_exports_merge_or_are_declined(a: list[Any], b: list[Any]) -> None:
    """Two serialized messages one after the other are one message to protobuf (repeated fields appended)."""
    assert _same(_build(a) + _build(b))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _one_span(span: bytes) -> bytes:
    return _field(1, _field(2, _field(2, span)))  # ExportTraceServiceRequest.resource_spans.scope_spans.spans


SPAN = (_field(1, bytes(range(1, 17))) + _field(2, bytes(range(1, 9))) + _field(5, b"op")
        + _field(9, _field(1, b"gen_ai.request.model") + _field(2, _field(1, b"gpt-4o"))))  # fmt: skip
STATUS_ERROR = _field(15, _varint(3 << 3) + _varint(2))
INT_7 = _varint(3 << 3) + _varint(7)  # AnyValue.int_value = 7


def _kv(key: bytes, *values: bytes) -> bytes:
    """A span attribute (Span.attributes, field 9) with each of ``values`` as a ``value`` field of its own."""
    return _field(9, _field(1, key) + b"".join(_field(2, v) for v in values))


def _array(*items: bytes) -> bytes:
    return _field(5, b"".join(_field(1, item) for item in items))  # AnyValue.array_value.values


HAND_MADE = {
    "status once": (STATUS_ERROR, True),
    "status twice: merged": (STATUS_ERROR + _field(15, _field(2, b"m")), False),
    "a value twice: merged": (_kv(b"gen_ai.system", _field(1, b"a"), INT_7), False),
    "value before key": (_field(9, _field(2, _field(1, b"x")) + _field(1, b"gen_ai.system")), True),
    "a oneof set twice: the last wins": (_kv(b"gen_ai.system", _field(1, b"a") + INT_7), True),
    "an array twice: merged": (_kv(b"aws.dynamodb.consumed_capacity", _array(_field(1, b"a")) + _array(INT_7)), False),
    "unknown fields": (_field(1, bytes(16)) + _varint(99 << 3) + _varint(5) + _field(100, b"unknown"), True),
    "a known field, another wire type": (_varint(7 << 3 | 2) + _varint(1) + b"x", False),
    "name twice: the last wins": (_field(5, b"renamed"), True),
}


@pytest.mark.parametrize(("extra", "reads"), HAND_MADE.values(), ids=HAND_MADE.keys())
def test_hand_made_bodies(extra: bytes, reads: bool) -> None:
    body = _one_span(SPAN + extra)
    assert _same(body) is reads


def test_bytes_changed_at_random_are_read_the_same_or_declined() -> None:
    """Flipped, dropped and duplicated bytes of real exports: whatever upb still parses, the readers agree on."""
    rng = random.Random(int(os.environ.get("SPENDTRACE_FUZZ_SEED", "7")))
    failed: dict[str, Any] = {"trace_id": b"t" * 16, "span_id": b"s" * 8, "parent_span_id": b"", "name": "n",
                              "start_time_unix_nano": 1, "end_time_unix_nano": 2, "code": 2,
                              "attributes": [("error.type", ("int_value", 3))],
                              "events": [("exception", [("exception.type", ("string_value", "E"))])]}  # fmt: skip
    bodies = [_sdk_export(), _build([([("service.name", ("string_value", "s"))], [[failed]])])]
    parsed = read = 0
    for _ in range(3000):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(body))
            choice = rng.random()
            if choice < 0.5:
                body[i] = rng.randrange(256)
            elif choice < 0.75:
                del body[i : i + rng.randint(1, 8)]
            else:
                j = rng.randrange(len(body))
                body[i:i] = body[j : j + rng.randint(1, 40)]
        try:
            ExportTraceServiceRequest.FromString(bytes(body))
        except Exception:
            continue
        parsed += 1
        read += _same(bytes(body))
    assert parsed > 100 and read > 50, (parsed, read)


def test_values_nested_as_deep_as_upb_parses_are_read_the_same() -> None:
    """upb refuses messages nested past 100 levels (two per array level); the C reader's own limit is beyond."""
    deepest = None
    for depth in range(1, 60):
        value = _field(1, b"leaf")
        for _ in range(depth):
            value = _field(5, _field(1, value))  # AnyValue.array_value.values
        body = _one_span(SPAN + _field(9, _field(1, b"aws.dynamodb.consumed_capacity") + _field(2, value)))
        try:
            ExportTraceServiceRequest.FromString(body)
        except Exception:
            break
        assert _same(body)
        deepest = depth
    assert deepest is not None and 40 < deepest < 59


def test_the_c_partition_hash_is_kafkas() -> None:
    rng = random.Random(3)
    for n in [*range(70), 255, 1000]:
        key = rng.randbytes(n)
        assert _murmur2(key) == murmur2(key)
    assert _murmur2 is wire.murmur2  # the receiver uses it


def test_without_the_c_reader_upbs_objects_give_the_same_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without a C compiler has no ``_c.wire``: the body is ignored and the parsed message read instead."""
    body = _sdk_export()
    request = ExportTraceServiceRequest.FromString(body)
    with_c = convert(request, body=body)
    monkeypatch.setattr(_convert, "_wire", None)
    _convert._plan.cache_clear()
    try:
        assert _convert._plan(DEFAULT_RULES).keys is None
        without = convert(request, body=body)
    finally:
        _convert._plan.cache_clear()
    assert without.spans == with_c.spans and len(without.spans) == 60


# ---- record batches ----


def _aiokafka_batches(pairs: list[tuple[bytes, bytes]], ts: int, limit: int) -> list[bytes]:
    """The same records through aiokafka's own builder, a new batch whenever it says the last one is full."""
    from aiokafka.producer.message_accumulator import BatchBuilder

    out, b = [], BatchBuilder(limit, 0)
    for key, value in pairs:
        if b.append(timestamp=ts, key=key, value=value) is None:
            out.append(bytes(b._build()))
            b = BatchBuilder(limit, 0)
            assert b.append(timestamp=ts, key=key, value=value) is not None
    if b.record_count():
        out.append(bytes(b._build()))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=3000)), max_size=60),
       st.integers(200, 20_000), st.integers(0, 2**41))  # fmt: skip
def test_record_batches_are_byte_for_byte_aiokafkas(pairs: list[tuple[bytes, bytes]], limit: int, ts: int) -> None:
    """Uncompressed, the sink's batches are the bytes aiokafka's builder writes (CRC included), split alike."""
    from spendtrace.server.otlp.receiver import _HEADER, record_batch

    chunks = wire.records(pairs, limit - _HEADER.size)
    ours = [bytes(record_batch(records, count, ts, None)) for records, count in chunks]
    assert ours == _aiokafka_batches(pairs, ts, limit)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_compressed_record_batches_read_back_record_for_record(codec: str) -> None:
    from aiokafka.record.default_records import DefaultRecordBatch

    from spendtrace.server.otlp.receiver import record_batch

    pairs = [(f"{i % 7:032x}".encode(), b'{"feature": "search", "n": %d}' % i) for i in range(500)]
    ((records, count),) = wire.records(pairs, 1 << 20)
    batch = DefaultRecordBatch(record_batch(records, count, 1_700_000_000_000, codec))
    assert batch.validate_crc() and batch.compression_type == {"gzip": 1, "zstd": 4}[codec]
    assert [(r.offset, r.key, r.value, r.timestamp) for r in batch] == [
        (i, k, v, 1_700_000_000_000) for i, (k, v) in enumerate(pairs)
    ]


def test_each_caller_gets_the_acks_of_every_batch_holding_one_of_its_records() -> None:
    """Parts (one caller's records for a partition) split across batches own each batch they have records in."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    from spendtrace.server.otlp.receiver import _HEADER, _own_batches, _Part

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", acks="all")  # never started: batches only
        try:
            loop = asyncio.get_running_loop()
            sizes = [3, 1, 7, 2, 5]
            parts = [_Part([(b"k%d" % p, b"v" * 90) for _ in range(n)], loop.create_future())
                     for p, n in enumerate(sizes)]  # fmt: skip
            one = len(wire.records([(b"k0", b"v" * 90)], 1 << 20)[0][0])  # bytes of one record
            built = _own_batches(producer, parts, None, _HEADER.size + 4 * one + 1)  # four records a batch
            assert [b.record_count() for b, _ in built] == [4, 4, 4, 4, 2]
            owners = [[parts.index(p) for p in owned] for _, owned in built]
            assert owners == [[0, 1], [2], [2, 3], [3, 4], [4]]
        finally:
            await producer.stop()

    asyncio.run(run())
