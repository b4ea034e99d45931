"""OTLP metrics and logs sent to the receiver (an SDK pointed at 4318 / 4317 exports every signal there) are
refused with OTLP's own answer and what to change, while traces keep flowing."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import grpc
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter, MetricExportResult
from support import json_export, post

from spendtrace.server.otlp._grpc import OTHER_SERVICES
from spendtrace.server.otlp.receiver import Receiver, StoreSink
from spendtrace.server.store.base import open_store


def _export_a_counter(exporter: MetricExporter) -> MetricExportResult:
    """Record one counter through a real MeterProvider and send what it collected through ``exporter`` once."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("app").create_counter("orders").add(3)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return exporter.export(data)


@pytest.mark.parametrize("signal", ["metrics", "logs"])
def test_http_metrics_and_logs_get_404_with_a_status_saying_what_to_change(db_path: Path, signal: str) -> None:
    """Protobuf and JSON requests get OTLP's error body (a google.rpc.Status, code UNIMPLEMENTED) naming the
    signal and the setting that stops it; a trace export beside them is stored as usual."""
    with Receiver(StoreSink(db_path), port=0) as receiver:
        url = receiver.url.replace("/v1/traces", f"/v1/{signal}")
        status, headers, body = post(url, b"", "application/x-protobuf")
        assert status == 404 and headers["content-type"] == "application/x-protobuf"
        message = Status.FromString(body)
        assert message.code == 12
        assert f"not {signal}" in message.message and f"OTEL_{signal.upper()}_EXPORTER=none" in message.message
        status, headers, body = post(url, b"{}", "application/json")
        assert status == 404 and "application/json" in headers["content-type"]
        assert f"OTEL_{signal.upper()}_EXPORTER=none" in json.loads(body)["message"]
        now = str(time.time_ns())
        span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "a",
                "startTimeUnixNano": now, "endTimeUnixNano": now}  # fmt: skip
        assert post(receiver.url, json_export([span]), "application/json")[0] == 200
        assert receiver.stats.spans_accepted == 1 and receiver.stats.malformed == 0
    with open_store(db_path) as store:
        assert store.total()["transaction_count"] == 1


def test_the_real_metric_exporters_get_a_failure_and_grpcs_logs_the_reason(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The OTel SDK's OTLP metric exporters, over HTTP and gRPC, report each export as failed (not as sent);
    over gRPC the exporter logs the receiver's reason, so the app's log says what to change."""
    with Receiver(StoreSink(db_path), port=0, grpc_port=0) as receiver:
        assert receiver.grpc_target is not None
        http_exporter = HttpMetricExporter(endpoint=receiver.url.replace("/v1/traces", "/v1/metrics"), timeout=30)
        grpc_exporter = GrpcMetricExporter(endpoint=f"http://{receiver.grpc_target}", insecure=True, timeout=30)
        with caplog.at_level(logging.ERROR):
            for exporter in (http_exporter, grpc_exporter):
                assert _export_a_counter(exporter) == MetricExportResult.FAILURE
        grpc_errors = [r.getMessage() for r in caplog.records if "grpc" in r.name]
        assert grpc_errors and all("OTEL_METRICS_EXPORTER=none" in m for m in grpc_errors), caplog.text


@pytest.mark.parametrize("signal", sorted(OTHER_SERVICES))
def test_grpc_metrics_and_logs_are_unimplemented_with_what_to_change(db_path: Path, signal: str) -> None:
    """A raw ``Export`` call to OTLP/gRPC's metrics or logs service answers UNIMPLEMENTED with the reason."""
    with Receiver(StoreSink(db_path), port=0, grpc_port=0) as receiver:
        assert receiver.grpc_target is not None
        with grpc.insecure_channel(receiver.grpc_target) as channel:
            call = channel.unary_unary(f"/{OTHER_SERVICES[signal]}/Export")
            with pytest.raises(grpc.RpcError) as failed:
                call(b"", timeout=30)
    error = failed.value
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert f"OTEL_{signal.upper()}_EXPORTER=none" in error.details()  # type: ignore[attr-defined]
