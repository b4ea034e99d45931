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


def _call_downstream(url: str, headers: dict[str, str]) -> dict[str, str]:
    """One real HTTP request to ``url`` with ``headers``; the downstream answers with the headers it got."""
    import json
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp:
        got: dict[str, str] = json.loads(resp.read())
    return got


def test_baggage_carries_the_scope_to_a_called_service(
    make_tracer: Callable[..., TracerProvider], db_path: Path
) -> None:
    """Over a real HTTP hop, the called service's GenAI span is stored under the caller's feature and tenant."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry import baggage, context
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = CompositePropagator([TraceContextTextMapPropagator(), spendtrace.otel_baggage_propagator()])
    downstream = make_tracer("billing").get_tracer("billing")  # BaggageSpanProcessor: baggage onto every span

    class Billing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP names are case-blind
            ctx = propagator.extract(headers)
            attrs = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                     "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100}  # fmt: skip
            with downstream.start_as_current_span("chat", context=ctx, attributes=attrs):
                pass
            body = json.dumps(headers).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Billing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/charge"
    caller = TracerProvider().get_tracer("shop")
    trace_ids: list[str] = []
    try:

        @spendtrace.cost_track(feature="checkout")
        def checkout() -> dict[str, str]:
            with caller.start_as_current_span("POST /charge") as span:
                trace_ids.append(format(span.get_span_context().trace_id, "032x"))
                headers: dict[str, str] = {}
                propagator.inject(headers)  # what an HTTP client instrumentation does
                return _call_downstream(url, headers)

        with spendtrace.track_request(endpoint="/cart", user_id="acme"):
            sent = checkout()
            token = context.attach(baggage.set_baggage("spendtrace.tenant", "app-says"))
            try:
                mine: dict[str, str] = {}
                propagator.inject(mine)
            finally:
                context.detach(token)
        outside: dict[str, str] = {}
        propagator.inject(outside)
    finally:
        server.shutdown()
        server.server_close()
    assert "spendtrace.feature=checkout" in sent["baggage"] and "spendtrace.tenant=acme" in sent["baggage"]
    assert "spendtrace.tenant=app-says" in mine["baggage"] and "acme" not in mine["baggage"]  # the app's entry wins
    assert "baggage" not in outside  # no scope, nothing added
    with open_store(db_path) as store:
        rows = store.aggregate_by_feature()
        users = {r["user_id"] for r in store.aggregate_by_user()}
        endpoints = {r["endpoint"] for r in store.aggregate_by_endpoint()}
        tree = store.get_request_subtree(trace_ids[0])  # one trace: the called service's span is in it
    assert [r["operation"] for r in tree] == ["chat"]
    assert [r["feature"] for r in rows] == ["checkout"] and users == {"acme"} and endpoints == {"/cart"}
    assert rows[0]["cost_nano"] > 0 and rows[0]["unpriced_count"] == 0
