"""OpenTelemetry in: OTLP/HTTP trace exports → spendtrace spans (decode, attribute, read usage).

``decode_body`` parses a ``/v1/traces`` body (protobuf or JSON; ``decompress`` undoes gzip) with the
maintained ``opentelemetry-proto`` classes (the ``[otlp]`` extra); ``convert`` turns the request into
``spendtrace.schema.Span``s under attribution ``Rules`` (``load_rules`` reads a TOML rule file).
The receiver that serves this over HTTP is ``spendtrace.server.otlp.receiver``. Nothing here is
imported by the SDK.
"""

from __future__ import annotations

from spendtrace.server.otlp._convert import Converted, convert
from spendtrace.server.otlp._decode import JSON, PROTOBUF, OtlpDecodeError, decode_body, decompress, media_type
from spendtrace.server.otlp._rules import DEFAULT_RULES, Rule, Rules, load_rules

__all__ = [
    "DEFAULT_RULES",
    "JSON",
    "PROTOBUF",
    "Converted",
    "OtlpDecodeError",
    "Rule",
    "Rules",
    "convert",
    "decode_body",
    "decompress",
    "load_rules",
    "media_type",
]
