"""And out: OTel spans started inside spendtrace scopes carry the scope's feature, tenant and endpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spendtrace
from spendtrace.server.store.base import open_store


def test_scopes_set_attributes_on_otel_spans() -> None:
    """Inside track_request + cost_track an OTel span gets the feature, tenant and endpoint; outside it gets none."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(spendtrace.otel_span_processor())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")

    @spendtrace.cost_track(feature="search")
    def search() -> None:
        with tracer.start_as_current_span("inner"):
            pass
        with tracer.start_as_current_span("explicit", attributes={"spendtrace.feature": "mine"}):
            pass

    with spendtrace.track_request(endpoint="/api/search", user_id="acme"):
        with tracer.start_as_current_span("request-only"):
            pass
        search()
    with tracer.start_as_current_span("outside"):
        pass
    provider.shutdown()
    spans = {s.name: dict(s.attributes or {}) for s in memory.get_finished_spans()}
    assert spans["inner"] == {"spendtrace.feature": "search", "spendtrace.tenant": "acme",
                              "spendtrace.endpoint": "/api/search"}  # fmt: skip
    assert spans["explicit"]["spendtrace.feature"] == "mine"  # an attribute the app set wins
    assert spans["request-only"] == {"spendtrace.tenant": "acme", "spendtrace.endpoint": "/api/search"}
    assert spans["outside"] == {}


def test_one_trace_serves_both_tools(make_tracer: Callable[..., TracerProvider], db_path: Path) -> None:
    """A GenAI span started in a spendtrace scope reaches the receiver attributed to that scope's feature and tenant."""
    provider = make_tracer("app")
    provider.add_span_processor(spendtrace.otel_span_processor())
    tracer = provider.get_tracer("app")

    @spendtrace.cost_track(feature="summaries")
    def summarise() -> None:
        attrs = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                 "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10}  # fmt: skip
        with tracer.start_as_current_span("chat", attributes=attrs):
            pass

    with spendtrace.track_request(endpoint="/summary", user_id="globex"):
        summarise()
    with open_store(db_path) as store:
        rows = store.aggregate_by_feature()
        users = {r["user_id"] for r in store.aggregate_by_user()}
    assert [r["feature"] for r in rows] == ["summaries"] and users == {"globex"}
    assert rows[0]["cost_nano"] > 0 and rows[0]["unpriced_count"] == 0
