"""``/metrics`` reads on a connection of its own: a scrape in progress never holds the other requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _api_fixtures import serve_app
from fastapi import FastAPI

from spendtrace.api import create_app


@pytest.fixture
def served(api_db: Path) -> Iterator[tuple[FastAPI, str]]:
    """The API app (to reach its stores) served by uvicorn on a free loopback port."""
    app = create_app(api_db)
    for url in serve_app(app):
        yield app, url


class _Gate:
    """A stand-in for a store's lock that holds whoever takes it until ``open`` is set, and says it has someone."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.open = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()
        self.inside.set()
        self.open.wait(30)

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def _total_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("spendtrace_cost_usd_total"))


def test_a_scrape_in_progress_does_not_hold_the_other_requests(served: tuple[FastAPI, str]) -> None:
    """While a scrape is held inside its store, ``/total`` and an aggregate answer; then the scrape does too."""
    app, url = served
    with httpx.Client(base_url=url, timeout=30) as http:
        first = http.get("/metrics")
        assert first.status_code == 200
        scrape_store = app.state.scrape_storage
        assert scrape_store is not app.state.storage
        gate = _Gate()
        scrape_store._lock = gate  # the next scrape stops inside its first query
        answer: list[httpx.Response] = []
        scraper = threading.Thread(target=lambda: answer.append(httpx.get(f"{url}/metrics", timeout=30)))
        scraper.start()
        try:
            assert gate.inside.wait(30), "the scrape never reached its store"
            # with one store for every route these would wait behind the held scrape until the client gave up
            total = http.get("/total", timeout=10)
            features = http.get("/aggregate/feature", params={"limit": 5}, timeout=10)
            assert total.status_code == 200 and total.json()["transaction_count"] > 0
            assert features.status_code == 200 and features.json()
            assert not answer  # the scrape was held the whole time
        finally:
            gate.open.set()
            scraper.join(30)
    assert answer and answer[0].status_code == 200
    assert _total_line(answer[0].text) == _total_line(first.text)
