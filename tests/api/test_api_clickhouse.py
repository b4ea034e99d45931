"""The HTTP API on a ClickHouse store (chDB in this process) answers every read as it does on SQLite.

Both stores get the same spans through the ingest interface; the API is the real FastAPI app (over
its in-process ASGI transport), and each route's JSON is compared between the two backends.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from _api_fixtures import INJECTION, _spans
from fastapi.testclient import TestClient

from spendtrace.api.app import create_app
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import open_alert_store, open_ingest_store

SECRET_HOOK = "https://hooks.example.com/services/T0/B0/s3cr3t-token"

ROUTES = [
    "/total",
    "/aggregate/feature",
    "/aggregate/user",
    "/aggregate/endpoint",
    "/api/services",
    "/v2/feature-breakdown",
    "/v2/request?limit=100&order=cost",
    "/v2/request/req-1/tree",
    f"/total?user_id={INJECTION}",
    "/alerts",
]


def _answers(url: str) -> dict[str, Any]:
    store = open_ingest_store(url)
    try:
        store.apply_batch(prepare_batch(_spans(), PriceBook.default()))
    finally:
        store.close()
    alerts = open_alert_store(url)  # a rule with a secret webhook, fired once (on ClickHouse: its own tables)
    try:
        rule = alerts.save_rule(
            name="spend", kind="threshold", scope="feature", scope_value="search", threshold_nano=1, window_minutes=60,
            cooldown_minutes=60, params={}, webhook=SECRET_HOOK, webhook_format="slack", now_ns=1_000,
        )
        assert alerts.claim_firing(rule, state_key="", cooldown_ns=1, fired_ns=2_000, value_nano=5,
                                   message="search spent") is not None
    finally:
        alerts.close()
    with TestClient(create_app(store=url)) as client:
        out = {}
        for route in ROUTES:
            response = client.get(route)
            assert response.status_code == 200, (route, response.text)
            assert "s3cr3t-token" not in response.text  # webhook URLs are secrets: never answered in full
            out[route] = response.json()
        out["health"] = client.get("/health").json()
    return out


def test_every_read_route_answers_on_chdb_as_on_sqlite(tmp_path: Path) -> None:
    """Totals, aggregates, requests, a tree, a hostile tenant name and alerts: the same JSON on both backends."""
    on_chdb = _answers(f"chdb://{tmp_path.parent / 'chdb'}?database=api_{uuid.uuid4().hex[:12]}")
    on_sqlite = _answers(f"sqlite:///{tmp_path / 'api.db'}")
    health = on_chdb.pop("health")
    on_sqlite.pop("health")
    assert on_chdb == on_sqlite
    assert on_chdb["/total"]["cost_nano"] > 0 and on_chdb["/v2/request/req-1/tree"]
    assert on_chdb[f"/total?user_id={INJECTION}"]["transaction_count"] == 24
    assert "chdb" in str(health)
    assert [e["message"] for e in on_chdb["/alerts"]["events"]] == ["search spent"]
    assert [r["name"] for r in on_chdb["/alerts"]["rules"]] == ["spend"]
