"""OTLP/HTTP ``/v1/traces`` bodies → ``ExportTraceServiceRequest``: protobuf or JSON, optionally gzip.

OTLP/JSON differs from protobuf's canonical JSON mapping in one way that matters: trace and span
ids are hex strings, not base64. They are turned into base64 before ``json_format.ParseDict`` reads
the document, so both encodings decode through the maintained ``opentelemetry-proto`` classes.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from spendtrace.errors import SpendtraceError

__all__ = ["JSON", "PROTOBUF", "OtlpDecodeError", "decode_body", "decompress", "media_type", "not_traces"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

#: Largest body accepted after decompression (a guard against gzip bombs), bytes.
MAX_BODY = 64 * 1024 * 1024


class OtlpDecodeError(SpendtraceError):
    """A body that is not a valid OTLP trace export; the message is the reason sent back with the 400."""


def media_type(content_type: str | None) -> str | None:
    """``application/x-protobuf`` or ``application/json`` (parameters dropped), None for anything else."""
    if not content_type:
        return None
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind if kind in (PROTOBUF, JSON) else None


def decompress(body: bytes, encoding: str | None, *, limit: int = MAX_BODY) -> bytes:
    """Undo ``Content-Encoding`` (``gzip`` or none); raises ``OtlpDecodeError`` for others, bad gzip or too much."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        if len(body) > limit:
            raise OtlpDecodeError(f"body of {len(body)} bytes exceeds the {limit}-byte limit")
        return body
    if enc != "gzip":
        raise OtlpDecodeError(f"unsupported Content-Encoding {encoding!r} (gzip or none)")
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"invalid gzip body: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise OtlpDecodeError(f"body exceeds the {limit}-byte limit once decompressed")
    if not d.eof:
        raise OtlpDecodeError("invalid gzip body: truncated")
    return out


def _hex_to_b64(doc: dict[str, Any], field: str) -> None:
    value = doc.get(field)
    if isinstance(value, str) and value:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise OtlpDecodeError(f"{field} {value[:40]!r} is not hex") from None
        doc[field] = base64.b64encode(raw).decode()


def _json_ids_to_b64(doc: Any) -> None:
    """Rewrite the hex ids of an OTLP/JSON document in place into protobuf JSON's base64."""
    if not isinstance(doc, dict):
        raise OtlpDecodeError("JSON body is not an object")
    for rs in doc.get("resourceSpans") or doc.get("resource_spans") or ():
        for ss in (rs or {}).get("scopeSpans") or (rs or {}).get("scope_spans") or ():
            for span in (ss or {}).get("spans") or ():
                if not isinstance(span, dict):
                    continue
                for f in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                    _hex_to_b64(span, f)
                for link in span.get("links") or ():
                    if isinstance(link, dict):
                        for f in ("traceId", "spanId", "trace_id", "span_id"):
                            _hex_to_b64(link, f)


def decode_body(body: bytes, kind: str) -> Any:
    """Parse an (already decompressed) body of media type ``kind``; raises ``OtlpDecodeError`` with the reason."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpDecodeError(f"invalid protobuf ExportTraceServiceRequest: {exc}") from None
        return request
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise OtlpDecodeError(f"invalid JSON: {exc}") from None
    try:
        _json_ids_to_b64(doc)
        json_format.ParseDict(doc, request, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, AttributeError) as exc:
        raise OtlpDecodeError(f"invalid OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return request


def not_traces(signal: str) -> str:
    """The answer to an OTLP ``metrics`` or ``logs`` export (HTTP 404, gRPC UNIMPLEMENTED).

    An OTel SDK pointed at the receiver's port (4318 and 4317 are every signal's default) exports its
    metrics and logs there too; its exporter logs this reason, so the app's log says what to change.
    """
    return (f"spendtrace receives OTLP traces only, not {signal}: set OTEL_{signal.upper()}_EXPORTER=none, "
            f"or send {signal} elsewhere with OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")


def varint(n: int) -> bytes:
    """``n`` (non-negative) as a protobuf varint, for the few messages answered without generated classes."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
