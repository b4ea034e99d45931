"""OTLP/gRPC: the real OpenTelemetry gRPC exporter sends to the receiver; errors answer with gRPC's codes.

The gRPC service shares the HTTP receiver's intake: one back-pressure limit, one set of counters.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import Compression, OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from support import GatedSink, dead_broker, instrumented, json_export, post, shop_calls

from spendtrace.server.otlp._grpc import SERVICE
from spendtrace.server.otlp.receiver import KafkaSink, Receiver, StoreSink
from spendtrace.server.store.base import open_store

EXPORT = f"/{SERVICE}/Export"
TENANTS = ("acme", "globex", "initech")


def _export(target: str, body: bytes, timeout: float = 30.0) -> bytes:
    """One raw ``Export`` call with ``body`` as the request message; returns the response bytes."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        out: bytes = call(body, timeout=timeout)
        return out


def _one_span(trace: str, span: str = "c7ad6b7169203331", name: str = "x") -> bytes:
    """An ``ExportTraceServiceRequest`` of one span, as protobuf bytes (through the JSON the tests write)."""
    from spendtrace.server.otlp import JSON, decode_body

    now = str(time.time_ns())
    doc = json_export([{"traceId": trace, "spanId": span, "name": name, "startTimeUnixNano": now,
                        "endTimeUnixNano": now}])  # fmt: skip
    message: ExportTraceServiceRequest = decode_body(doc, JSON)
    return message.SerializeToString()


def _provider(target: str, *, gzip: bool = False) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor

    provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
    exporter = OTLPSpanExporter(endpoint=target, insecure=True,
                                compression=Compression.Gzip if gzip else Compression.NoCompression)  # fmt: skip
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_the_grpc_exporter_stores_instrumented_calls_exactly(db_path: Path, gzip: bool) -> None:
    """The real OTLP gRPC exporter (plain and gzip) → receiver → store: per-tenant spend equals the rates' sum."""
    with Receiver(StoreSink(db_path), port=0, grpc_port=0) as receiver:
        assert receiver.grpc_target is not None and receiver.grpc_port != receiver.port
        provider = _provider(receiver.grpc_target, gzip=gzip)
        expected: dict[str, int] = {}
        try:
            with instrumented(provider):
                for i in range(6):
                    tenant = TENANTS[i % 3]
                    expected[tenant] = expected.get(tenant, 0) + shop_calls(provider, tenant, i)
        finally:
            provider.shutdown()
        assert receiver.stats.spans_accepted == 6 * 7 and receiver.stats.malformed == 0
    with open_store(db_path) as store:
        got = {r["user_id"]: r["cost_nano"] for r in store.aggregate_by_user()}
        total = store.total()
    assert got == expected and total["cost_nano"] == sum(expected.values())
    assert total["transaction_count"] == 6 * 7 and total["request_count"] == 6 and total["unpriced_count"] == 0


def test_a_malformed_message_is_invalid_argument_with_a_reason(db_path: Path) -> None:
    """Bytes that are not an ExportTraceServiceRequest: INVALID_ARGUMENT naming the problem; nothing stored."""
    with Receiver(StoreSink(db_path), port=0, grpc_port=0) as receiver:
        assert receiver.grpc_target is not None
        with pytest.raises(grpc.RpcError) as err:
            _export(receiver.grpc_target, b"\x0a\xff\xff\xff\xff\x0f")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid protobuf ExportTraceServiceRequest" in (err.value.details() or "")
        assert receiver.stats.malformed == 1 and receiver.stats.spans_accepted == 0
        good = ExportTraceServiceResponse.FromString(_export(receiver.grpc_target, _one_span("1" * 32)))
        assert good.partial_success.rejected_spans == 0
    with open_store(db_path) as store:
        assert store.total()["transaction_count"] == 1


def test_spans_without_ids_are_counted_in_the_partial_success(db_path: Path) -> None:
    """A span whose trace id is all zeros is rejected with its reason in the response; the other is stored."""
    body = ExportTraceServiceRequest.FromString(_one_span("2" * 32, "2" * 16))
    bad = ExportTraceServiceRequest.FromString(_one_span("0" * 32, "3" * 16))
    body.resource_spans[0].scope_spans[0].spans.extend(bad.resource_spans[0].scope_spans[0].spans)
    with Receiver(StoreSink(db_path), port=0, grpc_port=0) as receiver:
        assert receiver.grpc_target is not None
        response = ExportTraceServiceResponse.FromString(_export(receiver.grpc_target, body.SerializeToString()))
    assert response.partial_success.rejected_spans == 1 and "trace" in response.partial_success.error_message
    with open_store(db_path) as store:
        assert store.total()["transaction_count"] == 1


def _retry_seconds(err: grpc.RpcError) -> int:
    metadata = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    info = RetryInfo.FromString(metadata["google.rpc.retryinfo-bin"])
    return int(info.retry_delay.seconds)


def test_back_pressure_is_shared_with_http_and_answers_resource_exhausted(db_path: Path) -> None:
    """An HTTP export in flight at max_pending: a gRPC export gets RESOURCE_EXHAUSTED with a RetryInfo delay."""
    sink = GatedSink(db_path)
    now = str(time.time_ns())
    first = {"traceId": "5" * 32, "spanId": "5" * 16, "name": "first", "startTimeUnixNano": now, "endTimeUnixNano": now}
    with Receiver(sink, port=0, grpc_port=0, max_pending=1) as receiver:
        assert receiver.grpc_target is not None
        statuses: list[int] = []
        t = threading.Thread(target=lambda: statuses.append(post(receiver.url, json_export([first]),
                                                                 "application/json")[0]))  # fmt: skip
        t.start()
        assert sink.entered.wait(60), "the HTTP export never reached the sink"
        with pytest.raises(grpc.RpcError) as err:
            _export(receiver.grpc_target, _one_span("6" * 32))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _retry_seconds(err.value) > 0
        sink.go.set()
        t.join(60)
        assert statuses == [200]
        _export(receiver.grpc_target, _one_span("6" * 32))  # the exporter's retry
        assert receiver.stats.throttled == 1 and receiver.stats.spans_accepted == 2
    with open_store(db_path) as store:
        assert store.total()["transaction_count"] == 2


def test_a_broker_that_is_down_answers_unavailable(tmp_path: Path) -> None:
    """Spans that cannot be acknowledged: UNAVAILABLE with a RetryInfo delay, nothing counted as accepted."""
    dead = dead_broker()
    with Receiver(KafkaSink(dead, "t", timeout=1.0), port=0, grpc_port=0) as receiver:
        assert receiver.grpc_target is not None
        with pytest.raises(grpc.RpcError) as err:
            _export(receiver.grpc_target, _one_span("7" * 32))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and _retry_seconds(err.value) > 0
        assert receiver.stats.unavailable == 1 and receiver.stats.spans_accepted == 0


def test_a_grpc_port_in_use_is_an_error(db_path: Path) -> None:
    """Another listener on the gRPC port: starting the receiver raises OSError instead of sharing the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="gRPC"):
            Receiver(StoreSink(db_path), port=0, grpc_port=taken.getsockname()[1]).start()


def test_the_command_serves_grpc_too(tmp_path: Path) -> None:
    """`spendtrace otlp --grpc-port 0` says where both transports listen; a gRPC export lands in the store."""
    db = tmp_path / "otlp.db"
    cmd = [sys.executable, "-m", "spendtrace", "otlp", "--port", "0", "--grpc-port", "0", "--db", str(db)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            target = re.search(r"OTLP/gRPC on (\S+)", line)
            assert target and re.search(r"http://\S+/v1/traces", line), f"not both addresses in {line!r}"
            ExportTraceServiceResponse.FromString(_export(target.group(1), _one_span("8" * 32)))
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err
    with open_store(db) as store:
        assert store.total()["transaction_count"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_the_command_with_its_grpc_port_taken_says_so_and_fails(tmp_path: Path, workers: int) -> None:
    """A gRPC port another program holds: one line naming it, a failing exit, and never the "receiver on" line
    (with --workers 2 the processes that did start are stopped)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        where = ["--bootstrap", "127.0.0.1:1", "--workers", "2"] if workers == 2 else ["--db", str(tmp_path / "x.db")]
        cmd = [sys.executable, "-m", "spendtrace", "otlp", "--port", "0", "--grpc-port", str(port), *where]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == (2 if workers == 1 else 1) and r.stdout == ""
    assert f"cannot listen for OTLP/gRPC on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
    if workers == 2:
        assert "0 of 2 receiver processes started" in r.stderr
