"""One trace for both tools: OTel spans started inside a spendtrace scope carry its feature, tenant and endpoint.

``otel_span_processor()`` returns an OpenTelemetry SDK ``SpanProcessor``; add it to the app's
``TracerProvider``. When an OTel span starts, it copies the innermost open spendtrace scope's
feature (``spendtrace.feature``), tenant (``spendtrace.tenant``) and endpoint (``spendtrace.endpoint``)
onto it, unless the span already has that attribute, so traces sent to ``spendtrace otlp`` (or any
backend) are attributed like the SDK's own spans.

``otel_baggage_propagator()`` carries the same three values to the services this one calls: a W3C
baggage propagator that, when an instrumentation injects the context into an outgoing request,
adds them to the ``baggage`` header (entries already in the baggage win). The called service's
``BaggageSpanProcessor`` puts them on its spans, so its calls are attributed to the caller's
feature and tenant. Use it in place of ``W3CBaggagePropagator``.

The recording hot path is untouched: both read the scope's ``ContextVar`` only when OTel starts a
span or injects a context, and OpenTelemetry is imported only by these functions.
"""

from __future__ import annotations

from typing import Any

from spendtrace.sdk.context import _current

__all__ = ["otel_baggage_propagator", "otel_span_processor"]

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
            for key, value in _scope_values(st):
                if value is not None and key not in have:
                    span.set_attribute(key, value)

    return SpendtraceScopeProcessor()


def _scope_values(st: Any) -> tuple[tuple[str, str | None], ...]:
    """(attribute, value) of an open scope's state: the feature only when the scope names one."""
    return (FEATURE, st[8] if st[1] is not None else None), (TENANT, st[4]), (ENDPOINT, st[3])


def otel_baggage_propagator() -> Any:
    """A W3C baggage ``TextMapPropagator`` that also carries the current spendtrace scope to called services.

    ``set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), spendtrace.otel_baggage_propagator()]))``
    (or ``OTEL_PROPAGATORS`` is left alone and this is set in code). Extracting is plain W3C baggage.
    Needs ``opentelemetry-api``.
    """
    try:
        from opentelemetry import baggage
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.context import get_current
    except ImportError as exc:
        raise ImportError(
            f"otel_baggage_propagator needs opentelemetry-api (pip install opentelemetry-api): {exc}"
        ) from exc

    class SpendtraceBaggagePropagator(W3CBaggagePropagator):
        """W3C baggage, plus ``spendtrace.feature`` / ``.tenant`` / ``.endpoint`` of the scope open at inject."""

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            st = _current.get()
            if st is not None and st[0]:  # outside any scope, sampled out or suppressed: plain baggage
                ctx = context if context is not None else get_current()
                for key, value in _scope_values(st):
                    if value is not None and baggage.get_baggage(key, ctx) is None:
                        ctx = baggage.set_baggage(key, value, ctx)
                context = ctx
            if setter is None:
                super().inject(carrier, context)
            else:
                super().inject(carrier, context, setter)

    return SpendtraceBaggagePropagator()
