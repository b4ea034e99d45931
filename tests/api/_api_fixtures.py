"""Shared pieces of the HTTP API tests: a populated database and a real uvicorn server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from spendtrace.api import create_app
from spendtrace.schema import Span, UsageItem
from spendtrace.server.broker import free_port
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

NANO = 1_000_000_000
#: 2026-11-02 12:00 UTC, the suite's fixed "now"
NOW_NS = 1_793_620_800_000_000_000
INJECTION = "x'; DROP TABLE spans; --"


def _spans() -> list[Span]:
    """Three days of small request trees over three tenants, with one hostile name and one unpriced key."""
    out: list[Span] = []
    n = 0
    for day in range(3):
        for i in range(12):
            n += 1
            t = NOW_NS - day * 86_400 * NANO - i * 600 * NANO
            rid = f"req-{n}"
            user = ["tenant-acme", "tenant-globex", INJECTION][i % 3]
            endpoint = ["/api/search", "/api/recommend"][i % 2]
            out.append(
                Span(
                    rid,
                    None,
                    rid,
                    "api",
                    None,
                    endpoint,
                    user,
                    t,
                    5_000_000,
                    1_000_000,
                    False,
                    None,
                    (UsageItem("dynamodb_read", "dynamodb", 2.0),),
                    1.0,
                    ("api",),
                )
            )
            out.append(
                Span(
                    f"{rid}-c",
                    rid,
                    rid,
                    "search" if i % 2 else "[red]x",
                    None,
                    endpoint,
                    user,
                    t + 1000,
                    3_000_000,
                    500_000,
                    i % 5 == 0,
                    "TimeoutError" if i % 5 == 0 else None,
                    (
                        UsageItem("bedrock_claude_3_haiku", "bedrock", 1.0, input_tokens=400 + i, output_tokens=90),
                        UsageItem("s3_get", "s3", 1.0, bytes=2048),
                        UsageItem("mystery_key", "", 1.0),
                    ),
                    1.0,
                    ("api", "search" if i % 2 else "[red]x"),
                )
            )
    return out


@dataclass
class LiveAPI:
    """A running API server and the database behind it."""

    url: str
    db_path: Path
    token: str | None

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"} if (token or self.token) else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


def serve_app(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL, stops it after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _serve(db_path: Path, token: str | None) -> Iterator[LiveAPI]:
    for url in serve_app(create_app(db_path, token=token)):
        yield LiveAPI(url, db_path, token)


@pytest.fixture(scope="module")
def api_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding ``_spans()`` written by the real ingest path."""
    path = tmp_path_factory.mktemp("api") / "cost_data.db"
    conn = connect(path)
    try:
        write_batch_sync(conn, prepare_batch(_spans(), PriceBook.default()))
    finally:
        conn.close()
    return path


@pytest.fixture(scope="module")
def live_api(api_db: Path) -> Iterator[LiveAPI]:
    """The API served by uvicorn on a free loopback port, without auth."""
    yield from _serve(api_db, None)


@pytest.fixture(scope="module")
def live_api_token(api_db: Path) -> Iterator[LiveAPI]:
    """The API with bearer-token auth on."""
    yield from _serve(api_db, "s3cret-token")
