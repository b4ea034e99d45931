"""One trace for both tools: OTel spans started inside a spendtrace scope carry its feature, tenant and endpoint.

``otel_span_processor()`` returns an OpenTelemetry SDK ``SpanProcessor``; add it to the app's
``TracerProvider``. When an OTel span starts, it copies the innermost open spendtrace scope's
feature (``spendtrace.feature``), tenant (``spendtrace.tenant``) and endpoint (``spendtrace.endpoint``)
onto it, unless the span already has that attribute, so traces sent to ``spendtrace otlp`` (or any
backend) are attributed like the SDK's own spans. The recording hot path is untouched: the
processor reads the scope's ``ContextVar`` when OTel starts a span, and OpenTelemetry is imported
only by this function.
"""

from __future__ import annotations

from typing import Any

from spendtrace.sdk.context import _current

__all__ = ["otel_span_processor"]

#: OTel attribute names the processor sets, the ones ``spendtrace otlp`` reads by default.
FEATURE, TENANT, ENDPOINT = "spendtrace.feature", "spendtrace.tenant", "spendtrace.endpoint"


def otel_span_processor() -> Any:
    """An ``opentelemetry.sdk.trace.SpanProcessor`` copying the current spendtrace scope onto each OTel span.

    ``provider.add_span_processor(spendtrace.otel_span_processor())``. Needs ``opentelemetry-sdk``.
    """
    try:
        from opentelemetry.sdk.trace import SpanProcessor
    except ImportError as exc:
        raise ImportError(
            f"otel_span_processor needs opentelemetry-sdk (pip install opentelemetry-sdk): {exc}"
        ) from exc

    class SpendtraceScopeProcessor(SpanProcessor):
        """Sets ``spendtrace.feature`` / ``.tenant`` / ``.endpoint`` from the scope open when a span starts."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            st = _current.get()
            if st is None or not st[0]:  # outside any scope, sampled out or suppressed
                return
            have = span.attributes or {}
            for key, value in ((FEATURE, st[8] if st[1] is not None else None), (TENANT, st[4]), (ENDPOINT, st[3])):
                if value is not None and key not in have:
                    span.set_attribute(key, value)

    return SpendtraceScopeProcessor()
