"""Bearer-token auth checked on every route the app has, not on a hand-picked few.

The README promises that ``SPENDTRACE_API_TOKEN`` guards everything but ``/health``; the test walks
``app.routes`` so a route added later (or one whose guard is dropped) is checked without anyone
remembering to list it here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Route

from spendtrace.api import create_app

TOKEN = "walk-every-route-token"
OPEN = {"/health"}
#: Routes the walk must meet, so an empty or shrunken route table cannot pass it.
EXPECTED = {
    "/health",
    "/metrics",
    "/total",
    "/transactions",
    "/alerts",
    "/v2/request/{request_id}/tree",
    "/openapi.json",
    "/docs",
    "/redoc",
}


def _concrete(path: str) -> str:
    """A route path with each ``{param}`` (or ``{param:converter}``) filled with a plausible value."""
    return re.sub(r"\{[^}]+\}", "req-1", path)


def _walk(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route; a route kind with no methods (a mount, a websocket) fails loudly."""
    out = []
    for route in app.routes:
        if not isinstance(route, Route) or not route.methods:
            raise AssertionError(f"{route!r}: a kind of route this test does not know how to call; extend the test")
        out.extend((method, route.path) for method in sorted(route.methods))
    return out


@pytest.fixture
def guarded(api_db: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The app built the way ``spendtrace api`` builds it, with the token taken from the environment."""
    monkeypatch.setenv("SPENDTRACE_API_TOKEN", TOKEN)
    return create_app(api_db)


def test_every_route_but_health_refuses_requests_without_the_token(guarded: FastAPI, api_db: Path) -> None:
    """Each route of app.routes answers 401/403 with no or a wrong token, and something else with the right one."""
    routes = _walk(guarded)
    assert {path for _, path in routes} >= EXPECTED
    refused_anyway: list[str] = []
    let_through: list[str] = []
    with TestClient(guarded) as client:
        for method, path in routes:
            url = _concrete(path)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                status = client.request(method, url, headers=headers).status_code
                if path in OPEN:
                    assert status == 200, (method, path, headers, status)
                elif status not in (401, 403):
                    let_through.append(f"{method} {path} {headers or 'no header'}: {status}")
            status = client.request(method, url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code
            if status in (401, 403):
                refused_anyway.append(f"{method} {path}: {status}")
    assert let_through == [], "answered without the token"
    assert refused_anyway == [], "refused with the right token"


def test_health_does_not_name_the_database_when_a_token_is_set(guarded: FastAPI, api_db: Path) -> None:
    """/health is the one open route, so with a token set it says the store answers and nothing about the host."""
    with TestClient(guarded) as client:
        r = client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert "db" not in r.json()
    assert api_db.name not in r.text and str(api_db.parent) not in r.text


def test_without_a_token_the_openapi_pages_and_the_database_path_are_served(
    api_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token: /openapi.json, /docs and /redoc (our routes, not FastAPI's) answer, and /health names the file."""
    monkeypatch.delenv("SPENDTRACE_API_TOKEN", raising=False)
    with TestClient(create_app(api_db, token=None)) as client:
        document = client.get("/openapi.json")
        docs = client.get("/docs")
        redoc = client.get("/redoc")
        health = client.get("/health").json()
    assert document.status_code == 200 and "/transactions" in document.json()["paths"]
    assert "/openapi.json" not in document.json()["paths"]  # the document does not list itself or its pages
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text
    assert redoc.status_code == 200 and "redoc" in redoc.text.lower() and "/openapi.json" in redoc.text
    assert health["db"] == str(api_db)
