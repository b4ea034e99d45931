"""The receiver with the real OTLP/HTTP exporter and real instrumentations: exact totals, OTLP status codes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider
from support import GatedSink, dead_broker, instrumented, json_export, post, shop_calls

from spendtrace.server.otlp.receiver import KafkaSink, Receiver, StoreSink
from spendtrace.server.store.base import open_store


def test_instrumented_calls_are_stored_at_published_rates(
    make_tracer: Callable[..., TracerProvider], store_receiver: Receiver, db_path: Path
) -> None:
    """botocore (Stubber) and openai-v2 (httpx transport) spans, sent by the real exporter, cost what the rates say."""
    provider = make_tracer("shop")
    with instrumented(provider):
        expected = {t: shop_calls(provider, t, i) for i, t in enumerate(("acme", "globex"))}
    with open_store(db_path) as store:
        total = store.total()
        by_user = {r["user_id"]: r for r in store.aggregate_by_user()}
        by_feature = {r["feature"]: r for r in store.aggregate_by_feature()}
    assert total["cost_nano"] == sum(expected.values())
    assert total["unpriced_count"] == 0 and total["request_count"] == 2
    assert total["transaction_count"] == 2 * 7  # root, feature span, chat, 2 DynamoDB, S3, SQS per request
    assert {u: r["cost_nano"] for u, r in by_user.items()} == expected
    assert by_feature["recommendations"]["cost_nano"] == sum(expected.values())
    assert set(by_feature["recommendations"]["service_costs_nano"]) == {"openai", "dynamodb", "s3", "sqs"}
    assert store_receiver.stats.spans_accepted == 14 and store_receiver.stats.malformed == 0


def test_without_baggage_spans_inherit_from_ancestors_in_the_same_export(
    make_tracer: Callable[..., TracerProvider], db_path: Path
) -> None:
    """Tenant and feature set on ancestors only reach the calls below them when they arrive in one export."""
    provider = make_tracer("shop", batch=True)
    with instrumented(provider):
        expected = shop_calls(provider, "initech", baggage=False)
    assert provider.force_flush(60)
    with open_store(db_path) as store:
        by_user = {r["user_id"]: r["cost_nano"] for r in store.aggregate_by_user()}
        by_feature = {r["feature"]: r["cost_nano"] for r in store.aggregate_by_feature()}
    assert by_user == {"initech": expected}
    assert by_feature == {"recommendations": expected, "shop": 0}  # the root has no feature: the service name


def test_malformed_bodies_get_400_and_nothing_accepted_is_lost(store_receiver: Receiver, db_path: Path) -> None:
    """Garbage answers 400 with a reason, a wrong type 415; good spans before and after are all stored once."""
    now = time.time_ns()  # within the raw retention, which the local store applies between batches
    good = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "a",
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 10**8)}  # fmt: skip
    status, _, _ = post(store_receiver.url, json_export([good]), "application/json", gzip_it=True)
    assert status == 200
    status, headers, body = post(store_receiver.url, b"\x0a\xff\xff\xff", "application/x-protobuf")
    assert status == 400 and headers["content-type"] == "application/x-protobuf"
    assert b"protobuf" in body and body[:2] == b"\x08\x03"  # google.rpc.Status code 3 (INVALID_ARGUMENT)
    status, _, body = post(store_receiver.url, b"{oops", "application/json")
    assert status == 400 and json.loads(body)["code"] == 3 and "JSON" in json.loads(body)["message"]
    status, _, body = post(store_receiver.url, b"not gzip", "application/json; charset=utf-8", gzip_it=False)
    assert status == 400
    req_gz = b"\x1f\x8b\x08\x00garbage"
    import urllib.request

    r = urllib.request.Request(store_receiver.url, data=req_gz, method="POST",
                               headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})  # fmt: skip
    try:
        urllib.request.urlopen(r, timeout=60)
        raise AssertionError("bad gzip was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and b"gzip" in exc.read()
    status, _, _ = post(store_receiver.url, b"hello", "text/plain")
    assert status == 415
    second = {**good, "spanId": "b7ad6b7169203332", "parentSpanId": "b7ad6b7169203331", "name": "b"}
    no_ids = {"name": "lost?"}
    status, _, body = post(store_receiver.url, json_export([second, no_ids]), "application/json")
    assert status == 200
    partial = json.loads(body)["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "trace_id" in partial["errorMessage"]
    with open_store(db_path) as store:
        rows = store.get_request_subtree("0af7651916cd43dd8448eb211c80319c")
    assert sorted(r["span_id"] for r in rows) == ["b7ad6b7169203331", "b7ad6b7169203332"]
    stats = store_receiver.stats
    assert (stats.spans_accepted, stats.spans_rejected, stats.malformed) == (2, 1, 5)


def test_protobuf_success_answers_an_export_response(
    make_tracer: Callable[..., TracerProvider], store_receiver: Receiver
) -> None:
    """A protobuf export is answered with a protobuf ExportTraceServiceResponse and no partial success."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("x"):
        pass
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    status, headers, raw = post(store_receiver.url, body, "application/x-protobuf", gzip_it=True)
    assert status == 200 and headers["content-type"] == "application/x-protobuf"
    resp = ExportTraceServiceResponse.FromString(raw)
    assert not resp.HasField("partial_success")


def test_back_pressure_answers_429_with_retry_after(db_path: Path) -> None:
    """Over max_pending spans in flight, an export is refused with 429 + Retry-After; retried later, it is stored."""
    sink = GatedSink(db_path)
    at = {"startTimeUnixNano": str(time.time_ns()), "endTimeUnixNano": str(time.time_ns())}  # 0 is a dead letter
    first = {"traceId": "11111111111111111111111111111111", "spanId": "1111111111111111", "name": "first", **at}
    second = {"traceId": "22222222222222222222222222222222", "spanId": "2222222222222222", "name": "second", **at}
    with Receiver(sink, port=0, max_pending=1) as receiver:
        results: list[int] = []
        t = threading.Thread(target=lambda: results.append(post(receiver.url, json_export([first]),
                                                                "application/json")[0]))  # fmt: skip
        t.start()
        assert sink.entered.wait(60), "the first export never reached the sink"
        status, headers, body = post(receiver.url, json_export([second]), "application/json")
        assert status == 429 and int(headers["retry-after"]) > 0 and json.loads(body)["code"] == 8
        sink.go.set()
        t.join(60)
        assert results == [200]
        assert post(receiver.url, json_export([second]), "application/json")[0] == 200  # the exporter's retry
        assert receiver.stats.throttled == 1
    with open_store(db_path) as store:
        assert store.total()["transaction_count"] == 2


def test_a_broker_that_is_down_answers_503_with_retry_after(tmp_path: Path) -> None:
    """When spans cannot be acknowledged the export is refused as retryable, not swallowed."""
    dead = dead_broker()
    span = {"traceId": "33333333333333333333333333333333", "spanId": "3333333333333333", "name": "x"}
    with Receiver(KafkaSink(dead, "t", timeout=1.0), port=0) as receiver:
        status, headers, body = post(receiver.url, json_export([span]), "application/json")
        assert status == 503 and int(headers["retry-after"]) > 0 and json.loads(body)["code"] == 14
        assert receiver.stats.unavailable == 1 and receiver.stats.spans_accepted == 0


def test_oversized_bodies_and_gzip_bombs_are_refused(db_path: Path) -> None:
    """A body over the limit answers 413 unread; gzip that inflates past the limit answers 400, nothing stored."""
    big = json_export([{"traceId": "55555555555555555555555555555555", "spanId": "5555555555555555",
                        "name": "n" * 4096}])  # fmt: skip
    with Receiver(StoreSink(db_path), port=0, max_body=2048) as receiver:
        status, _, body = post(receiver.url, big, "application/json")
        assert status == 413 and "limit" in json.loads(body)["message"]
        bomb = json_export([{"traceId": "55555555555555555555555555555555", "spanId": "5555555555555555",
                             "name": " " * 100_000}])  # fmt: skip
        status, _, body = post(receiver.url, bomb, "application/json", gzip_it=True)
        assert status == 400 and "decompressed" in json.loads(body)["message"]
        assert receiver.stats.spans_accepted == 0
    assert not db_path.exists()  # nothing was ever written


def test_a_token_count_too_large_to_store_is_refused_in_the_partial_success(
    store_receiver: Receiver, db_path: Path
) -> None:
    """A GenAI span claiming 1e20 input tokens is rejected with its reason; the rest of the export is stored.

    Before, the count reached the encoder, which raised OverflowError: the receiver answered 503 on every
    retry and the exporter finally dropped the whole export, good spans included.
    """
    now = time.time_ns()
    trace = "0af7651916cd43dd8448eb211c80319d"
    good = {"traceId": trace, "spanId": "c7ad6b7169203331", "name": "root",
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 10**8)}  # fmt: skip
    tokens = [{"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
              {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
              {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "7"}}]  # fmt: skip
    huge = {**good, "spanId": "c7ad6b7169203332", "parentSpanId": good["spanId"], "name": "chat",
            "attributes": [*tokens, {"key": "gen_ai.usage.input_tokens", "value": {"doubleValue": 1e20}}]}  # fmt: skip
    fine = {**good, "spanId": "c7ad6b7169203333", "parentSpanId": good["spanId"], "name": "chat",
            "attributes": [*tokens, {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}}]}  # fmt: skip
    status, _, body = post(store_receiver.url, json_export([good, huge, fine]), "application/json")
    assert status == 200, body
    partial = json.loads(body)["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "input_tokens above 17592186044415" in partial["errorMessage"]
    with open_store(db_path) as store:
        rows = store.get_request_subtree(trace)
    assert sorted(r["span_id"] for r in rows) == ["c7ad6b7169203331", "c7ad6b7169203333"]
    assert store_receiver.stats.spans_rejected == 1


def test_unreadable_dynamodb_capacity_counts_as_absent_and_the_export_is_stored(
    store_receiver: Receiver, db_path: Path
) -> None:
    """Consumed capacity whose units are not numbers (or JSON nested past Python's recursion limit) is read as
    absent: one unit, as for a call without it. Before, float() raised out of the conversion: the receiver
    answered 500, which OTLP exporters do not retry, and the whole export was lost."""
    now = time.time_ns()
    trace = "0af7651916cd43dd8448eb211c80319e"
    entries = ['{"TableName": "t", "CapacityUnits": "abc"}', '{"CapacityUnits": [1]}',
               '{"ReadCapacityUnits": {"a": 1}}', '{"CapacityUnits": -2}', "[" * 100_000]  # fmt: skip
    spans = []
    for i, entry in enumerate(entries):
        attrs = {"rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": "GetItem",
                 "aws.dynamodb.consumed_capacity": entry}  # fmt: skip
        spans.append({"traceId": trace, "spanId": f"c7ad6b716920333{i}", "name": f"ddb{i}",
                      "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 10**8),
                      "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]})  # fmt: skip
    status, _, body = post(store_receiver.url, json_export(spans), "application/json")
    assert status == 200 and "partialSuccess" not in json.loads(body or b"{}"), body
    with open_store(db_path) as store:
        rows = store.get_request_subtree(trace)
    assert len(rows) == len(entries)
    for row in rows:
        assert [(u["key"], u["count"]) for u in row["usage"]] == [("dynamodb_read", 1.0)], row
