"""The HTTP API against a real uvicorn server: each endpoint answers what the query layer answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _api_fixtures import INJECTION, NOW_NS, LiveAPI

from spendtrace.api import MAX_LIMIT
from spendtrace.server.store.sqlite import SQLiteStorage


def _json(value: Any) -> Any:
    """What a value looks like after a JSON round trip (tuples become lists ...)."""
    return json.loads(json.dumps(value))


@pytest.mark.parametrize(
    ("path", "method", "kwargs"),
    [
        ("/aggregate/feature", "aggregate_by_feature", {"limit": 100}),
        ("/aggregate/user", "aggregate_by_user", {"limit": 100}),
        ("/aggregate/endpoint", "aggregate_by_endpoint", {"limit": 100}),
        ("/v2/endpoint", "aggregate_by_endpoint", {"limit": 100}),
        ("/api/services", "aggregate_by_service", {"limit": 100}),
        ("/v2/feature-breakdown", "get_feature_cost_breakdown", {"limit": 100}),
        ("/total", "total", {}),
    ],
)
def test_aggregates_equal_query_layer(live_api: LiveAPI, path: str, method: str, kwargs: dict[str, Any]) -> None:
    """Every aggregate endpoint returns exactly the query layer's rows for the same database."""
    with SQLiteStorage(live_api.db_path) as storage, live_api.client() as http:
        expected = getattr(storage, method)(**kwargs)
        got = http.get(path)
    assert got.status_code == 200
    assert got.json() == _json(expected)


def test_filters_are_bound_not_interpolated(live_api: LiveAPI) -> None:
    """A tenant named like an SQL injection is data: it filters to its own rows and the table survives."""
    with SQLiteStorage(live_api.db_path) as storage, live_api.client() as http:
        got = http.get("/aggregate/feature", params={"user_id": INJECTION})
        expected = storage.aggregate_by_feature(user_id=INJECTION, limit=100)
        assert got.status_code == 200 and got.json() == _json(expected)
        assert expected and all(r["cost_nano"] > 0 for r in expected)
        assert http.get("/total").json()["transaction_count"] == storage.total()["transaction_count"] > 0


def test_requests_tree_trend_and_transactions(live_api: LiveAPI) -> None:
    """Request costs, one request's tree, the zero-filled trend and paged raw spans match the query layer."""
    with SQLiteStorage(live_api.db_path) as storage, live_api.client() as http:
        reqs = http.get("/v2/request", params={"order": "cost", "limit": 5}).json()
        assert reqs == _json(storage.get_request_cost(5, "cost"))
        rid = reqs[0]["request_id"]
        tree = http.get(f"/v2/request/{rid}/tree").json()
        assert tree == _json(storage.get_request_subtree(rid))
        assert [n["depth"] for n in tree] == [0, 1]
        now = NOW_NS // 1_000_000_000
        trend = http.get("/trend", params={"days": 7, "feature": "search"}).json()
        # the server's clock is the real one, the data sits at a fixed date: compare like with like
        assert trend == _json(storage.get_cost_trend("search", 7))
        assert len(trend) == 7 and now > 0
        page1 = http.get("/transactions", params={"limit": 10}).json()
        page2 = http.get("/transactions", params={"limit": 10, "offset": 10}).json()
        assert page1 == _json(storage.transactions(limit=10))
        assert {r["span_id"] for r in page1}.isdisjoint({r["span_id"] for r in page2})


def test_unknown_request_is_404(live_api: LiveAPI) -> None:
    """A request id with no spans answers 404 with a message."""
    with live_api.client() as http:
        r = http.get("/v2/request/no-such-request/tree")
    assert r.status_code == 404 and "no spans" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/aggregate/feature", {"start": "not-a-date"}),
        ("/aggregate/feature", {"limit": "-3"}),
        ("/aggregate/feature", {"limit": "many"}),
        ("/v2/request", {"order": "sideways"}),
        ("/trend", {"days": "0"}),
        ("/transactions", {"offset": "-1"}),
    ],
)
def test_bad_parameters_answer_422(live_api: LiveAPI, path: str, params: dict[str, str]) -> None:
    """Malformed parameters get a 422 with a message, never a 500."""
    with live_api.client() as http:
        r = http.get(path, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_limit_is_capped(live_api: LiveAPI) -> None:
    """A limit above the cap is served as the cap, not refused."""
    with live_api.client() as http:
        r = http.get("/transactions", params={"limit": MAX_LIMIT * 10})
    assert r.status_code == 200
    assert 0 < len(r.json()) <= MAX_LIMIT


def test_metrics_total_equals_database_total(live_api: LiveAPI) -> None:
    """``spendtrace_cost_usd_total`` on /metrics is the stored total; features and services are labelled."""
    with SQLiteStorage(live_api.db_path) as storage, live_api.client() as http:
        total = storage.total()
        text = http.get("/metrics").text
    samples = {line.split(" ")[0]: line.split(" ")[1] for line in text.splitlines() if not line.startswith("#")}
    assert float(samples["spendtrace_cost_usd_total"]) == pytest.approx(total["cost_nano"] / 1e9, abs=1e-12)
    assert 'spendtrace_feature_cost_usd_total{feature="search"}' in samples
    assert 'spendtrace_service_cost_usd_total{service="bedrock"}' in samples
    assert int(samples["spendtrace_unpriced_usage_total"]) == total["unpriced_count"] > 0
    assert not any("tenant" in key for key in samples)  # tenants never become labels


def test_openapi_document_lists_every_endpoint(live_api: LiveAPI) -> None:
    """The served OpenAPI document describes all the endpoints the README promises."""
    with live_api.client() as http:
        paths = set(http.get("/openapi.json").json()["paths"])
    assert {
        "/health",
        "/metrics",
        "/aggregate/feature",
        "/aggregate/user",
        "/aggregate/endpoint",
        "/api/services",
        "/v2/feature-breakdown",
        "/v2/request",
        "/v2/request/{request_id}/tree",
        "/v2/endpoint",
        "/total",
        "/transactions",
        "/trend",
        "/alerts",
        "/reconciliation/latest",
    } <= paths


def test_bearer_token_guards_everything_but_health(live_api_token: LiveAPI) -> None:
    """With a token set, requests without it get 401, /health stays open, and the right token is let in."""
    with live_api_token.client(token="wrong") as bad, live_api_token.client() as good:
        assert bad.get("/health").status_code == 200
        assert bad.get("/total").status_code == 401
        assert bad.get("/metrics").status_code == 401
        assert good.get("/total").status_code == 200


def test_alerts_and_reconciliation_endpoints(live_api: LiveAPI) -> None:
    """/alerts lists rules with masked webhooks; /reconciliation/latest is 404 until a report is saved."""
    from spendtrace.server.alerts.rules import set_alert

    set_alert(
        feature="search",
        threshold=1.0,
        window_hours=1,
        webhook="https://hooks.slack.com/services/T000/B000/SECRETSECRET",
        db_path=live_api.db_path,
    )
    with live_api.client() as http:
        body = http.get("/alerts").json()
        rec = http.get("/reconciliation/latest")
    assert [r["scope_value"] for r in body["rules"]] == ["search"]
    assert "SECRETSECRET" not in json.dumps(body)
    assert rec.status_code == 404


def test_extreme_dates_are_unbounded_not_server_errors(live_api: LiveAPI) -> None:
    """Dates past SQLite's 64-bit range (year 9999, year 1, 2**64 ns), or a bound that rounds past it, filter as
    open bounds on every route that takes them, with or without a tenant or endpoint filter: never a 500."""
    with live_api.client() as client:
        everything = client.get("/total").json()["cost_nano"]
        spec = client.get("/openapi.json").json()
        timed = {path: {p["name"] for p in op["get"].get("parameters", [])} for path, op in spec["paths"].items()
                 if "get" in op and "end" in {p["name"] for p in op["get"].get("parameters", [])}}  # fmt: skip
        assert len(timed) >= 9
        for path, names in timed.items():
            # a tenant or endpoint filter reads the raw spans (another query than the rollups')
            for extra in ({}, *({name: "a"} for name in ("user_id", "endpoint") if name in names)):
                for params in ({"start": "0001-01-01"}, {"end": "9999-12-31"}, {"start": "9999-12-31T23:59:59"},
                               {"end": str(2**63 - 10**9)}):  # fmt: skip
                    response = client.get(path, params=params | extra)
                    assert response.status_code in (200, 404), (path, params | extra, response.text[:200])
        for path in ("/transactions", "/v2/request", "/total", "/aggregate/feature"):
            for params in ({"start": str(2**64)}, {"end": str(-(2**70))}):  # epoch ns where a route takes them
                response = client.get(path, params=params)
                assert response.status_code in (200, 422), (path, params, response.text[:200])
        assert (
            client.get("/total", params={"start": "0001-01-01", "end": "9999-12-31"}).json()["cost_nano"] == everything
        )
        assert client.get("/total", params={"start": "9999-12-31"}).json()["cost_nano"] == 0
