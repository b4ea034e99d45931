"""Spend alerts without Kafka: the local SQLite exporter evaluates rules and POSTs webhooks to a loopback server."""

from __future__ import annotations

import json
import logging
import os
import select
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from consumers.alerting import AlertEvaluator, Touched
from spendtrace.export import LocalStoreExporter
from spendtrace.schema import Span, UsageItem
from spendtrace.server.alerts.rules import set_alert
from spendtrace.server.pricing import PriceBook, PriceEntry, set_base_book

NS = 1_000_000_000


class _Hook(BaseHTTPRequestHandler):
    """Records each POSTed JSON body and answers with the next status of ``server.script`` (then 200)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
        srv: Any = self.server
        with srv.lock:
            srv.bodies.append(body)
            status = srv.script.pop(0) if srv.script else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[Any]:
    """A real HTTP server on loopback; ``.bodies`` are the POSTs received, ``.script`` the statuses to answer."""
    srv: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    srv.bodies, srv.script, srv.lock = [], [], threading.Lock()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


def url(srv: Any, path: str = "/services/T000/B000/secret-token") -> str:
    """The server's address with a Slack-like path."""
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def wait_until(cond: Any, timeout: float, what: str) -> None:
    """Poll ``cond`` every 20 ms until true; fail saying ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Run a read query on a fresh connection."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


APP = """
import json, sys
from spendtrace import add_api_call, cost_track, flush, set_alert

set_alert(
    feature="ai_recommendations",
    threshold=10.00,          # USD
    window_hours=24,
    webhook=sys.argv[1],
)

@cost_track(feature="ai_recommendations")
def recommend():
    add_api_call("bedrock_claude_3_haiku", input_tokens=4_000_000, output_tokens=4_000_000)  # $6.00

for line in sys.stdin:
    for _ in range(int(line)):
        recommend()
    print(json.dumps({"flushed": flush(60).all_delivered}), flush=True)
"""


def ask(proc: subprocess.Popen[str], calls: int) -> dict[str, Any]:
    """Have the app make ``calls`` calls and flush; return its answer (waits up to 60 s)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{calls}\n")
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready, "the app did not answer"
    answer: dict[str, Any] = json.loads(proc.stdout.readline())
    return answer


def test_readme_alert_fires_once_per_cooldown_in_local_mode(tmp_path: Path, hook_server: Any) -> None:
    """An app with the default config and the README's set_alert: one POST for $12 > $10, none within the cooldown."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDTRACE_")}
    env["SPENDTRACE_ALLOW_PRIVATE_WEBHOOKS"] = "1"  # the README's call as written; the hook is on loopback
    proc = subprocess.Popen(
        [sys.executable, "-c", APP, url(hook_server)], cwd=tmp_path, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert ask(proc, 2) == {"flushed": True}  # $12 in the window
        wait_until(lambda: len(hook_server.bodies) >= 1, 60, "the webhook POST")
        assert ask(proc, 2) == {"flushed": True}  # $24, but within the 1-hour cooldown
        db = tmp_path / "cost_data.db"
        assert len(rows(db, "SELECT id FROM alert_events")) == 1  # evaluated (flush waits for it), nothing fired
        _, err = proc.communicate(timeout=60)  # closes stdin: the app ends, its exit drains the delivery
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert len(hook_server.bodies) == 1
    text = hook_server.bodies[0]["text"]
    assert "feature 'ai_recommendations' spent $12.00 in the last 24h (threshold $10.00)" in text
    assert rows(db, "SELECT rule_name, value_nano, delivery FROM alert_events") == [
        ("feature:ai_recommendations>10/24h", 12 * NS, "delivered")
    ]
    assert rows(db, "SELECT attempt, status, error FROM alert_deliveries") == [(1, 200, None)]
    assert "secret-token" not in err


#: One "unit_call" costs exactly $1, so spend in the in-process tests is a count of calls.
BOOK = PriceBook([PriceEntry(key="unit_call", service="dynamodb", per_request=Decimal("1"))], name="test")


@pytest.fixture
def unit_prices() -> Iterator[None]:
    """Price ``unit_call`` at $1 in this process's price book (the one the local exporter uses)."""
    set_base_book(BOOK)
    try:
        yield
    finally:
        set_base_book(None)


def dollars(n: int, feature: str = "search", at_ns: int | None = None) -> list[Span]:
    """One span costing ``n`` dollars, now (or at ``at_ns``)."""
    sid = uuid.uuid4().hex
    start = time.time_ns() if at_ns is None else at_ns
    return [Span(span_id=sid, parent_id=None, request_id=sid, feature=feature, start_ns=start,
                 usage=(UsageItem(key="unit_call", service="dynamodb", count=float(n)),), path=(feature,))]


def test_webhook_500_then_200_is_delivered_once_with_two_attempts(
    db_path: Path, hook_server: Any, unit_prices: None
) -> None:
    """A 500 then a 200: one event delivered, two attempts recorded, the same Slack body both times."""
    hook_server.script[:] = [500]
    set_alert(feature="search", threshold=1, webhook=url(hook_server),
              allow_private=True, name="flaky", db_path=db_path)
    exporter = LocalStoreExporter(db_path)
    try:
        exporter.export(dollars(3))
        assert exporter.alerts is not None
        assert exporter.alerts.drain(60)
    finally:
        exporter.shutdown()
    assert rows(db_path, "SELECT attempt, status FROM alert_deliveries ORDER BY id") == [(1, 500), (2, 200)]
    assert rows(db_path, "SELECT delivery FROM alert_events") == [("delivered",)]
    assert len(hook_server.bodies) == 2 and hook_server.bodies[0] == hook_server.bodies[1]
    assert exporter.alerts.delivered == 1 and exporter.alerts.errors == 0


def test_without_httpx_the_delivery_fails_with_the_reason(
    db_path: Path, hook_server: Any, unit_prices: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When httpx cannot be imported the event is recorded as failed, saying which extra to install; export goes on."""
    monkeypatch.setitem(sys.modules, "httpx", None)  # makes ``import httpx`` raise ImportError
    set_alert(feature="search", threshold=1, webhook=url(hook_server),
              allow_private=True, name="nohttpx", db_path=db_path)
    exporter = LocalStoreExporter(db_path)
    try:
        exporter.export(dollars(3))
        assert exporter.alerts is not None and exporter.alerts.drain(60)
    finally:
        exporter.shutdown()
    ((attempt, status, error),) = rows(db_path, "SELECT attempt, status, error FROM alert_deliveries")
    assert (attempt, status) == (1, None) and "httpx" in error and "spendtrace[alerts]" in error
    assert rows(db_path, "SELECT delivery FROM alert_events") == [("failed",)]
    assert hook_server.bodies == [] and exporter.alerts.failed == 1


def test_evaluation_errors_never_break_export(
    db_path: Path, unit_prices: None, caplog: pytest.LogCaptureFixture
) -> None:
    """With the alert state table gone, batches are still stored; the errors are counted and logged once."""
    set_alert(feature="search", threshold=1, name="broken", db_path=db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE alert_state")
    conn.close()
    exporter = LocalStoreExporter(db_path)
    caplog.set_level(logging.DEBUG, logger="spendtrace.alerts")
    try:
        exporter.export(dollars(3))
        exporter.export(dollars(4))
    finally:
        exporter.shutdown()
    assert rows(db_path, "SELECT count(*), sum(cost_nano) FROM spans") == [(2, 7 * NS)]
    assert exporter.alerts is not None and exporter.alerts.errors == 2
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def test_app_and_worker_share_the_cooldown(db_path: Path, unit_prices: None) -> None:
    """A worker fires on the crossing; the app evaluating later within the cooldown records nothing more."""
    set_alert(feature="search", threshold=1, name="shared", db_path=db_path)
    silent = LocalStoreExporter(db_path, alerts=False)  # stores without evaluating: the worker's turn
    app = LocalStoreExporter(db_path)
    worker = AlertEvaluator(str(db_path))
    try:
        silent.export(dollars(2))
        assert silent.alerts is None and rows(db_path, "SELECT count(*) FROM alert_events") == [(0,)]
        fired = await worker.evaluate(Touched(features=frozenset({"search"}), any=True))
        app.export(dollars(5))  # $7 now, but the worker fired a moment ago
    finally:
        await worker.aclose()
        silent.shutdown()
        app.shutdown()
    assert [e.value_nano for e in fired] == [2 * NS]
    assert app.alerts is not None and app.alerts.evaluations == 1 and app.alerts.fired == 0
    assert rows(db_path, "SELECT rule_name, value_nano FROM alert_events") == [("shared", 2 * NS)]


async def test_events_left_pending_are_sent_once_by_the_next_app(
    db_path: Path, hook_server: Any, unit_prices: None
) -> None:
    """An event fired 10 minutes ago by a process that never delivered it is claimed and POSTed by the next app."""
    set_alert(feature="search", threshold=1, webhook=url(hook_server),
              allow_private=True, name="orphan", db_path=db_path)
    past = time.time_ns() - 600 * NS
    earlier = LocalStoreExporter(db_path, alerts=False)
    earlier.export(dollars(2, at_ns=past))
    earlier.shutdown()
    crashed = AlertEvaluator(str(db_path), clock=lambda: past)  # fires, has no dispatcher: never delivers
    try:
        await crashed.evaluate(Touched.everything())
    finally:
        await crashed.aclose()
    assert rows(db_path, "SELECT delivery FROM alert_events") == [("pending",)]
    exporter = LocalStoreExporter(db_path)
    try:
        exporter.export(dollars(1, feature="other"))  # any batch: the rules exist, so orphans are looked for
        assert exporter.alerts is not None and exporter.alerts.drain(60)
    finally:
        exporter.shutdown()
    assert len(hook_server.bodies) == 1 and "orphan" in hook_server.bodies[0]["text"]
    assert rows(db_path, "SELECT delivery FROM alert_events") == [("delivered",)]


def _name_resolving_to_loopback() -> str:
    """A DNS name (not a literal, not ``localhost``) that resolves to a loopback address here, or skip."""
    import socket

    for name in (socket.gethostname(), "ip6-localhost", "localhost.localdomain"):
        if name.endswith("localhost") or not name:
            continue
        try:
            addrs = {info[4][0] for info in socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)}
        except OSError:
            continue
        if addrs and all(a in ("127.0.0.1", "::1") or a.startswith("127.") for a in addrs):
            return name
    pytest.skip("no DNS name resolves to loopback on this host")


def test_a_dns_name_resolving_to_loopback_is_refused_at_delivery(
    db_path: Path, hook_server: Any, unit_prices: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A name that passes validation but resolves to 127.0.0.1 is not POSTed to: one final, refused attempt."""
    name = _name_resolving_to_loopback()
    hook = f"http://{name}:{hook_server.server_address[1]}/services/T/B/secret-token"
    set_alert(feature="search", threshold=1, webhook=hook, name="rebind", db_path=db_path)
    exporter = LocalStoreExporter(db_path)
    try:
        exporter.export(dollars(3))
        assert exporter.alerts is not None and exporter.alerts.drain(60)
    finally:
        exporter.shutdown()
    assert hook_server.bodies == []
    ((attempt, error),) = rows(db_path, "SELECT attempt, error FROM alert_deliveries")
    assert attempt == 1 and "webhook target refused" in error and "loopback" in error
    assert rows(db_path, "SELECT delivery FROM alert_events") == [("failed",)]
    assert "refused, not sent" in caplog.text and "secret-token" not in caplog.text


def test_a_dns_name_resolving_to_loopback_is_delivered_when_allowed(
    db_path: Path, hook_server: Any, unit_prices: None
) -> None:
    """The same rule saved with allow_private=True is delivered (the allowance travels with the rule)."""
    name = _name_resolving_to_loopback()
    hook = f"http://{name}:{hook_server.server_address[1]}/hook"
    set_alert(feature="search", threshold=1, webhook=hook, allow_private=True, name="ok", db_path=db_path)
    exporter = LocalStoreExporter(db_path)
    try:
        exporter.export(dollars(3))
        assert exporter.alerts is not None and exporter.alerts.drain(60)
    finally:
        exporter.shutdown()
    assert len(hook_server.bodies) == 1
    assert rows(db_path, "SELECT delivery FROM alert_events") == [("delivered",)]
