"""OTLP/gRPC: ``TraceService/Export`` served beside the HTTP receiver, from the same intake.

Answers follow the OTLP/gRPC specification: ``OK`` with ``partial_success`` for spans that could not be
placed; ``INVALID_ARGUMENT`` with the reason for a message that is not an ``ExportTraceServiceRequest``;
``RESOURCE_EXHAUSTED`` (back-pressure) and ``UNAVAILABLE`` (the broker or the store failed), both with a
``google.rpc.RetryInfo`` delay in the trailing metadata, so the exporter retries and nothing of that
export was accepted. The metrics and logs services' ``Export`` answer ``UNIMPLEMENTED`` with what to
change (an SDK pointed at 4317 exports every signal there; its exporter logs the reason). The request
bytes are decoded here rather than by gRPC, so a malformed message gets a reason instead of gRPC's bare
deserialization error. Compression (``grpc-encoding: gzip``) and the message size limit are gRPC's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spendtrace.server.otlp._decode import PROTOBUF, OtlpDecodeError, decode_body, not_traces, varint

if TYPE_CHECKING:
    from spendtrace.server.otlp.receiver import Intake

__all__ = ["OTHER_SERVICES", "SERVICE", "GrpcBindError", "retry_info", "start_grpc"]

#: the fully qualified service name of OTLP's trace export
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
#: OTLP's other signals, answered UNIMPLEMENTED with what to change (``not_traces``)
OTHER_SERVICES = {"metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
                  "logs": "opentelemetry.proto.collector.logs.v1.LogsService"}  # fmt: skip
#: where OTLP exporters look for the server's retry delay (a binary trailing metadata entry)
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


class GrpcBindError(OSError):
    """The gRPC port could not be bound (in use, or an address this host does not have)."""


def retry_info(seconds: int) -> bytes:
    """A serialized ``google.rpc.RetryInfo`` asking for ``seconds`` of delay (field 1: a Duration; its field 1)."""
    duration = b"\x08" + varint(seconds)
    return b"\x0a" + varint(len(duration)) + duration


async def start_grpc(
    intake: Intake, host: str, port: int, *, max_body: int, retry_after: int, shared: bool = False
) -> tuple[Any, int]:
    """Start a ``grpc.aio`` server for ``TraceService/Export`` on ``host:port`` (0 picks one) in the running loop.

    Returns the server (``await server.stop(grace)`` ends it) and the port it listens on. ``shared``: other
    processes of this receiver listen on the same port (``SO_REUSEPORT``); otherwise a port in use is an error.
    """
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    stats = intake.stats
    delay = ((RETRY_INFO_KEY, retry_info(retry_after)),)

    async def export(request: bytes, context: Any) -> bytes:
        stats.requests += 1
        try:
            message = decode_body(request, PROTOBUF)
        except OtlpDecodeError as exc:
            stats.malformed += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        taken = await intake.take(message, request)
        if taken.status == "throttled":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, taken.message, trailing_metadata=delay)
        if taken.status == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, taken.message, trailing_metadata=delay)
        response = ExportTraceServiceResponse()
        if taken.rejected:
            response.partial_success.rejected_spans = taken.rejected
            response.partial_success.error_message = taken.message
        out: bytes = response.SerializeToString()
        return out

    def refuse(signal: str) -> Any:
        async def other(request: bytes, context: Any) -> bytes:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, not_traces(signal))
            raise AssertionError("abort raises")

        return grpc.unary_unary_rpc_method_handler(other)

    # no (de)serializers: the method takes and returns bytes, so decoding and its errors stay ours
    handlers = [grpc.method_handlers_generic_handler(SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)})]
    handlers += [grpc.method_handlers_generic_handler(name, {"Export": refuse(signal)})
                 for signal, name in OTHER_SERVICES.items()]  # fmt: skip
    server = grpc.aio.server(
        handlers=handlers,
        options=(("grpc.max_receive_message_length", max_body), ("grpc.so_reuseport", int(shared))),
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises when it cannot bind
        raise GrpcBindError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from None
    if not bound:
        raise GrpcBindError(f"cannot listen for OTLP/gRPC on {address}")
    await server.start()
    return server, bound
