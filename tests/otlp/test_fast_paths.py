"""The receiver's shortcuts give what the long way gives: one-pass attribute reading, the rules' per-resource
result, the usage key list, Kafka's partition hash, and record batches compressed by the sink itself."""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import random
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from source_ast import parse_source
from support import topic_span_ids

from spendtrace.schema import Span
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.otlp import _usage, convert, load_rules
from spendtrace.server.otlp.receiver import KafkaSink, _builds_plain_batches, compress_batch, murmur2

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def _export(resource: dict[str, str], spans: list[tuple[str, int, int | None, list[tuple[str, Any]]]]) -> Any:
    """A raw ExportTraceServiceRequest: spans as (name, span number, parent number, [(key, value), ...]).

    Built with the protobuf classes, not the SDK, so a span can carry a key twice.
    """
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in resource.items():
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    scope = rs.scope_spans.add()
    for name, number, parent, attrs in spans:
        span = scope.spans.add()
        span.name, span.trace_id, span.span_id = name, TRACE, number.to_bytes(8, "big")
        if parent is not None:
            span.parent_span_id = parent.to_bytes(8, "big")
        span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_000_000_100
        for key, value in attrs:
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
    return req


def test_rules_see_span_attributes_over_resource_ones_for_each_span(tmp_path: Path) -> None:
    """A rule matching the resource applies to spans without the attributes it reads, not to a span whose own
    value fails its condition, and a ``*_from`` attribute only the span has still fills the dimension."""
    f = tmp_path / "rules.toml"
    f.write_text(
        '[[rule]]\nmatch = { "deployment.tier" = "gold" }\nfeature = "premium"\ntenant_from = "app.customer"\n'
    )
    rules = load_rules(f)
    req = _export({"service.name": "shop", "deployment.tier": "gold"}, [
        ("plain", 1, None, [("http.method", "GET")]),
        ("free", 2, None, [("deployment.tier", "free")]),
        ("customer", 3, None, [("app.customer", "initech")]),
    ])  # fmt: skip
    spans = {s.operation: s for s in convert(req, rules).spans}
    assert (spans["plain"].feature, spans["plain"].user_id) == ("premium", None)
    assert (spans["free"].feature, spans["free"].user_id) == ("shop", None)
    assert (spans["customer"].feature, spans["customer"].user_id) == ("premium", "initech")


def test_a_repeated_attribute_key_keeps_its_last_value_and_unread_attributes_change_nothing() -> None:
    """A key sent twice counts as its last value (as before); attributes nothing reads leave the span as it was."""
    usage = [("gen_ai.provider.name", "openai"), ("gen_ai.request.model", "gpt-4o-mini"),
             ("gen_ai.usage.input_tokens", 100), ("gen_ai.usage.input_tokens", 250),
             ("gen_ai.usage.output_tokens", 9)]  # fmt: skip
    noise = [(f"x.attr{i}", f"value {i}") for i in range(20)] + [("gen_ai.usage.total_tokens", 7)]
    plain = convert(_export({}, [("chat", 1, None, [("spendtrace.feature", "a"), ("spendtrace.feature", "b"),
                                                     *usage])])).spans  # fmt: skip
    noisy = convert(_export({}, [("chat", 1, None, [*noise[:10], ("spendtrace.feature", "a"), *noise[10:],
                                                     ("spendtrace.feature", "b"), *usage])])).spans  # fmt: skip
    assert plain == noisy
    (span,) = plain
    assert span.feature == "b" and span.path == ("b",)
    (item,) = span.usage
    assert (item.input_tokens, item.output_tokens, item.model) == (250, 9, "gpt-4o-mini")


def test_a_child_before_its_parent_inherits_as_one_after_it() -> None:
    """Children end, and are exported, before their parents: the order in the export changes no span."""
    tree = [("root", 1, None, [("spendtrace.feature", "checkout"), ("enduser.id", "acme"), ("http.route", "/buy")]),
            ("mid", 2, 1, [("spendtrace.feature", "pricing")]),
            ("leaf", 3, 2, [("rpc.system", "aws-api"), ("rpc.service", "S3"), ("rpc.method", "PutObject")]),
            ("sibling", 4, 2, [])]  # fmt: skip
    forward = {s.operation: s for s in convert(_export({"service.name": "shop"}, tree)).spans}
    backward = {s.operation: s for s in convert(_export({"service.name": "shop"}, tree[::-1])).spans}
    assert forward == backward
    leaf = forward["leaf"]
    assert (leaf.feature, leaf.user_id, leaf.endpoint) == ("pricing", "acme", "/buy")
    assert leaf.path == ("checkout", "pricing")
    assert [u.key for u in leaf.usage] == ["s3_put"] and forward["sibling"].usage == ()


def test_usage_attributes_list_every_key_the_usage_reader_reads() -> None:
    """``convert`` keeps only the listed keys for usage: each key ``_usage`` reads from a span must be listed."""
    read: set[str] = set()
    for node in ast.walk(parse_source(inspect.getsource(_usage))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "attrs" and isinstance(node.args[0], ast.Constant):
                read.add(node.args[0].value)
    assert len(read) >= 15  # the walk found the reads (a refactoring that hides them must update this test)
    assert read | _usage.TOKEN_KEYS <= _usage.USAGE_ATTRIBUTES
    assert {*_usage.TOKEN_KEYS, "rpc.system"} == _usage.USAGE_TRIGGERS


def test_murmur2_is_kafkas_partition_hash() -> None:
    """The same hash as aiokafka's (the Java client's), for request ids and keys of every length up to 300 bytes."""
    rng = random.Random(17)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(301)]
    keys += [os.urandom(16).hex().encode() for _ in range(500)]
    assert [murmur2(k) for k in keys] == [aiokafka_murmur2(k) for k in keys]


def _plain_batch(records: list[tuple[bytes, bytes]]) -> bytes:
    b = BatchBuilder(1024 * 1024, 0)
    for key, value in records:
        assert b.append(timestamp=None, key=key, value=value) is not None
    return bytes(b._build())


CODECS = {"gzip": DefaultRecordBatch.CODEC_GZIP, "zstd": DefaultRecordBatch.CODEC_ZSTD}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_batch_the_sink_compresses_is_one_aiokafka_reads_back_record_for_record(codec: str) -> None:
    """The batch compressed by the sink: valid CRC, the codec's id, smaller, and the same records as the plain one."""
    records = [(f"req-{i % 9}".encode(), f'{{"span": {i}, "feature": "recommendations"}}'.encode()) for i in range(400)]
    plain = _plain_batch(records)
    packed = compress_batch(plain, codec, 1)
    assert len(packed) < len(plain) / 3
    batch = DefaultRecordBatch(bytearray(packed))
    assert batch.validate_crc() and batch.compression_type == CODECS[codec]
    assert [(r.offset, r.key, r.value) for r in batch] == [(i, k, v) for i, (k, v) in enumerate(records)]


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_compression_leaves_incompressible_and_compressed_batches_alone(codec: str) -> None:
    """Random bytes do not shrink: the batch goes as built (as aiokafka does); a compressed one is not compressed
    twice, whatever the codec."""
    rng = random.Random(5)
    noise = _plain_batch([(b"k", bytes(rng.randrange(256) for _ in range(200)))])
    assert compress_batch(noise, codec, 1) is noise
    packed = compress_batch(_plain_batch([(b"k", b"v" * 1000)]), codec, 1)
    assert all(compress_batch(packed, other, 1) is packed for other in CODECS)


@pytest.mark.parametrize("codec", [None, *sorted(CODECS)])
def test_the_sink_compresses_its_batches_and_the_broker_takes_them(
    broker: EmbeddedBroker, topic_name: str, codec: str | None
) -> None:
    """With the installed aiokafka the sink compresses its own batches (zstd unless told otherwise); the broker
    stores them and every span reads back from the topic, through aiokafka's consumer, as it was published."""
    assert _builds_plain_batches()
    spans = [Span(span_id=f"{i:016x}", parent_id=None, request_id=f"{i % 37:032x}", feature="search",
                  operation="query", start_ns=1_700_000_000_000_000_000 + i) for i in range(1_200)]  # fmt: skip
    if codec == "zstd":  # the default
        sink = KafkaSink(broker.bootstrap, topic_name, partitions=3)
    else:
        sink = KafkaSink(broker.bootstrap, topic_name, partitions=3, compression_type=codec)

    async def run() -> tuple[str | None, bool]:
        try:
            await asyncio.gather(sink.publish(spans[:700]), sink.publish(spans[700:]))
            return sink._codec, sink._own
        finally:
            await sink.close()

    assert asyncio.run(run()) == (codec, True)  # True: the batches were written whole by _wire.records
    ids = topic_span_ids(broker.bootstrap, topic_name)
    assert sorted(ids) == sorted(s.span_id for s in spans)


def test_parent_cycles_and_deep_chains_convert_in_either_export_order() -> None:
    """Spans are resolved last to first (parents usually come after their children); a parent loop (a span its
    own parent, two spans each other's) still ends and keeps every span, and a chain deeper than Python's
    recursion limit inherits down to its leaf whichever end the export starts with."""
    loops = [("self", 1, 1, [("spendtrace.feature", "solo")]),
             ("a", 2, 3, [("spendtrace.feature", "left")]), ("b", 3, 2, [("enduser.id", "acme")])]  # fmt: skip
    for order in (loops, loops[::-1]):
        spans = {s.operation: s for s in convert(_export({"service.name": "shop"}, order)).spans}
        assert sorted(spans) == ["a", "b", "self"]
        assert spans["self"].feature == "solo" and spans["self"].parent_id == spans["self"].span_id
        assert spans["a"].feature == "left" and spans["b"].user_id in ("acme", None)
        assert spans["b"].feature in ("left", "shop")
    depth = 3000
    chain = [("root", 1, None, [("spendtrace.feature", "checkout"), ("enduser.id", "acme")])]
    chain += [(f"s{n}", n, n - 1, []) for n in range(2, depth)]
    s3 = [("rpc.system", "aws-api"), ("rpc.service", "S3"), ("rpc.method", "GetObject")]
    chain.append(("leaf", depth, depth - 1, s3))
    for order in (chain, chain[::-1], chain[1::2] + chain[0::2]):
        spans = {s.operation: s for s in convert(_export({}, order)).spans}
        assert len(spans) == depth
        leaf = spans["leaf"]
        assert (leaf.feature, leaf.user_id, leaf.path, [u.key for u in leaf.usage]) == (
            "checkout", "acme", ("checkout",), ["s3_get"])  # fmt: skip


def test_units_too_large_to_store_are_refused_with_their_reason_whatever_attribute_carries_them() -> None:
    """Token counts and DynamoDB capacity above MAX_UNITS refuse their span (the reason names the unit);
    counts at the limit pass, and the export's other spans convert."""
    from spendtrace.schema import MAX_UNITS

    def llm(n: int, key: str) -> list[tuple[str, Any]]:
        return [("gen_ai.provider.name", "openai"), ("gen_ai.request.model", "gpt-4o-mini"), (key, n)]

    def ddb(units: float) -> list[tuple[str, Any]]:
        doc = f'{{"TableName": "t", "CapacityUnits": {units}}}'
        return [("rpc.system", "aws-api"), ("rpc.service", "DynamoDB"), ("rpc.method", "GetItem"),
                ("aws.dynamodb.consumed_capacity", doc)]  # fmt: skip

    export = _export({}, [
        ("ok", 1, None, llm(MAX_UNITS, "gen_ai.usage.output_tokens")),
        ("out", 2, 1, llm(MAX_UNITS + 1, "gen_ai.usage.output_tokens")),
        ("write", 3, 1, llm(MAX_UNITS + 1, "gen_ai.usage.cache_creation.input_tokens")),
        ("ddb-ok", 4, 1, ddb(2.5)),
        ("ddb", 5, 1, ddb(MAX_UNITS * 2.0)),
    ])  # fmt: skip
    out = convert(export)
    assert sorted(s.operation or "" for s in out.spans) == ["ddb-ok", "ok"]
    assert out.rejected == 3
    assert sorted(r.split(" above")[0] for r in out.reasons) == ["usage cache_write_tokens", "usage count",
                                                                  "usage output_tokens"]  # fmt: skip
    ok = next(s for s in out.spans if s.operation == "ok")
    assert ok.usage[0].output_tokens == MAX_UNITS


def test_genai_names_are_read_cut_and_the_identity_cache_keeps_only_short_strings() -> None:
    """A 100,000-character model id gives the same (cut) key as always, and no cache keeps it; names that are
    not strings are never cached, so 1 and True (equal as dict keys) still give different providers."""
    from spendtrace.schema import MAX_KEY_LEN

    long = "m" * 100_000
    (item,) = _usage.usage_items({"gen_ai.provider.name": "openai", "gen_ai.request.model": long,
                                  "gen_ai.usage.input_tokens": 5}, False)  # fmt: skip
    assert item.key == f"openai:{long}"[:MAX_KEY_LEN] and item.model == long[:MAX_KEY_LEN]
    assert all(len(v) <= _usage._LONGEST_NAME for names in _usage._IDENTITY for v in names if isinstance(v, str))
    one, true = ({"gen_ai.provider.name": p, "gen_ai.usage.input_tokens": 5} for p in (1, True))
    assert (_usage.usage_items(one, False)[0].provider, _usage.usage_items(true, False)[0].provider) == ("1", "true")
