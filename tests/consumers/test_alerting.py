"""Alert evaluation and webhook delivery against real SQLite files and a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from consumers.alerting import AlertEvaluator, Touched, period_start, rate_values
from consumers.webhooks import WebhookDispatcher, pagerduty_body
from spendtrace.schema import Span, UsageItem
from spendtrace.server.alerts.rules import list_alerts, set_alert, set_budget, set_rate_alert
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import open_alert_store
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import WriteResult, prepare_batch, write_batch_sync

NS = 1_000_000_000
#: One usage unit of "unit_call" costs exactly $1, so spend in the tests is a count of calls.
BOOK = PriceBook([PriceEntry(key="unit_call", service="dynamodb", per_request=Decimal("1"))], name="test")


class Clock:
    """A settable wall clock shared by the evaluators of one test."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def spend(
    db: Path, at_ns: int, dollars: float, *, feature: str = "search", user_id: str | None = None,
    endpoint: str | None = None,
) -> WriteResult:
    """Commit one span costing ``dollars`` at ``at_ns`` through the real write path."""
    sid = uuid.uuid4().hex
    span = Span(
        span_id=sid, parent_id=None, request_id=sid, feature=feature, user_id=user_id, endpoint=endpoint,
        start_ns=at_ns, usage=(UsageItem(key="unit_call", service="dynamodb", count=float(dollars)),),
        path=(feature,),
    )
    conn = connect(db)
    try:
        return write_batch_sync(conn, prepare_batch([span], BOOK))
    finally:
        conn.close()


def events(db: Path) -> list[dict[str, Any]]:
    """Every stored alert event, oldest first."""
    conn = connect(db)
    try:
        cur = conn.execute("SELECT id, rule_name, value_nano, message, delivery FROM alert_events ORDER BY id")
        return [dict(zip(("id", "rule", "value_nano", "message", "delivery"), r, strict=True)) for r in cur]
    finally:
        conn.close()


@pytest.fixture
async def evaluator(db_path: Path, fixed_now_ns: int) -> Any:
    """An evaluator with a settable clock starting at the fixed test instant."""
    ev = AlertEvaluator(str(db_path), clock=Clock(fixed_now_ns))
    try:
        yield ev
    finally:
        await ev.aclose()


async def test_threshold_fires_once_per_cooldown(db_path: Path, fixed_now_ns: int, evaluator: AlertEvaluator) -> None:
    """Crossing $10 in the window fires once; more spend inside the cooldown fires nothing; after it, again."""
    clock = evaluator.clock
    assert isinstance(clock, Clock)
    set_alert(feature="search", threshold=10, window_hours=1, cooldown_minutes=60, name="s", db_path=db_path)
    assert await evaluator(spend(db_path, fixed_now_ns - 30 * 60 * NS, 6)) is None
    assert events(db_path) == []
    await evaluator(spend(db_path, fixed_now_ns, 5))  # 11 > 10
    assert [(e["rule"], e["value_nano"]) for e in events(db_path)] == [("s", 11 * NS)]
    assert "$11.00" in events(db_path)[0]["message"] and "$10.00" in events(db_path)[0]["message"]
    clock.now_ns += 59 * 60 * NS
    await evaluator(spend(db_path, clock.now_ns, 20))
    assert len(events(db_path)) == 1
    clock.now_ns += 60 * NS  # 60 min after the firing: the cooldown is over
    await evaluator(spend(db_path, clock.now_ns, 1))
    assert [e["value_nano"] for e in events(db_path)] == [11 * NS, 21 * NS]  # the window dropped the first 6+5


def test_long_windows_mix_hour_and_minute_rollups(db_path: Path, fixed_now_ns: int) -> None:
    """A 24 h window counts its partial first hour by minute, whole hours by hour, and excludes older spend."""
    from consumers.alerting import window_spend

    now = fixed_now_ns + 30 * 60 * NS  # 12:30, so the window starts at 12:31 yesterday, mid-hour
    spend(db_path, now - 24 * 3600 * NS, 100)  # 12:30 yesterday: just outside
    spend(db_path, now - (23 * 60 + 59) * 60 * NS, 1)  # 12:31 yesterday: first minute of the window
    spend(db_path, now - 10 * 3600 * NS, 10)  # a whole hour inside
    spend(db_path, now, 1000)  # this minute
    rule = set_alert(feature="search", threshold=1, window_hours=24, db_path=db_path)
    store = open_alert_store(db_path)
    try:
        assert window_spend(store, rule, now) == 1011 * NS
        assert window_spend(store, rule, now + 60 * NS) == 1010 * NS  # the window moved past 12:31
        assert window_spend(store, rule, now, memo={}) == 1011 * NS  # the per-round memo reads the same
    finally:
        store.close()


async def test_only_touched_scopes_are_evaluated(db_path: Path, fixed_now_ns: int, evaluator: AlertEvaluator) -> None:
    """A batch touching feature 'a' does not evaluate a rule on 'b', even when 'b' is over its threshold."""
    spend(db_path, fixed_now_ns, 50, feature="b")
    set_alert(feature="b", threshold=10, name="b", db_path=db_path)
    await evaluator(spend(db_path, fixed_now_ns, 1, feature="a"))
    assert events(db_path) == []
    await evaluator(spend(db_path, fixed_now_ns, 1, feature="b"))
    assert [e["rule"] for e in events(db_path)] == ["b"]


async def test_tenant_endpoint_and_total_scopes(db_path: Path, fixed_now_ns: int, evaluator: AlertEvaluator) -> None:
    """Rules on a tenant, an endpoint and total spend each sum their own rollup rows."""
    set_alert(user_id="acme", threshold=5, name="acme", db_path=db_path)
    set_alert(endpoint="/api/x", threshold=8, name="ep", db_path=db_path)
    set_alert(total=True, threshold=12, name="total", db_path=db_path)
    await evaluator(spend(db_path, fixed_now_ns, 6, feature="f1", user_id="acme", endpoint="/api/y"))
    assert [e["rule"] for e in events(db_path)] == ["acme"]
    await evaluator(spend(db_path, fixed_now_ns, 7, feature="f2", user_id="globex", endpoint="/api/x"))
    assert [e["rule"] for e in events(db_path)] == ["acme", "total"]  # /api/x has 7 <= 8; total 13 > 12
    await evaluator(spend(db_path, fixed_now_ns, 2, feature="f2", user_id="globex", endpoint="/api/x"))
    assert [e["rule"] for e in events(db_path)] == ["acme", "total", "ep"]
    messages = [e["message"] for e in events(db_path)]
    assert messages[0] == "[spendtrace] acme: tenant 'acme' spent $6.00 in the last 24h (threshold $5.00)"
    assert "total spend spent $13.00" in messages[1] and "endpoint '/api/x' spent $9.00" in messages[2]


async def test_messages_about_sub_cent_amounts_keep_their_digits(db_path: Path, fixed_now_ns: int,
                                                                 evaluator: AlertEvaluator) -> None:
    """$0.0042 spent against a $0.003 threshold reads as those amounts (usd_text), not $0.00 or $0.01;
    a 45-minute window reads "45 min"."""
    set_alert(feature="embed", threshold=0.003, window_hours=0.75, name="tiny", db_path=db_path)
    await evaluator(spend(db_path, fixed_now_ns, 0.0042, feature="embed"))
    [event] = events(db_path)
    assert event["value_nano"] == 4_200_000
    assert event["message"] == "[spendtrace] tiny: feature 'embed' spent $0.0042 in the last 45 min (threshold $0.003)"


async def test_two_workers_racing_fire_once(db_path: Path, fixed_now_ns: int) -> None:
    """Two evaluators with their own connections evaluating the same crossing at once record one event."""
    set_alert(feature="search", threshold=1, name="race", db_path=db_path)
    result = spend(db_path, fixed_now_ns, 2)
    evs = [AlertEvaluator(str(db_path), clock=Clock(fixed_now_ns)) for _ in range(4)]
    try:
        fired = await asyncio.gather(*(e.evaluate(Touched.from_result(result)) for e in evs))
    finally:
        for e in evs:
            await e.aclose()
    assert sum(len(f) for f in fired) == 1
    assert len(events(db_path)) == 1


async def test_new_and_removed_rules_are_picked_up(db_path: Path, fixed_now_ns: int, evaluator: AlertEvaluator) -> None:
    """A rule added (or removed) by another process applies from the evaluator's next batch."""
    await evaluator(spend(db_path, fixed_now_ns, 3))
    set_alert(feature="search", threshold=2, name="late", db_path=db_path)
    await evaluator(spend(db_path, fixed_now_ns, 1))
    assert [e["rule"] for e in events(db_path)] == ["late"]
    set_alert(feature="search", threshold=1, cooldown_minutes=0, name="zero-cooldown", db_path=db_path)
    from spendtrace.server.alerts.rules import remove_alert

    remove_alert("late", db_path=db_path)
    await evaluator(spend(db_path, fixed_now_ns, 1))
    assert [e["rule"] for e in events(db_path)] == ["late", "zero-cooldown"]


async def test_replayed_batch_fires_nothing(db_path: Path, fixed_now_ns: int, evaluator: AlertEvaluator) -> None:
    """Writing the same span again stores nothing new, so evaluation sees no touched scope and no new spend."""
    set_alert(feature="search", threshold=1, cooldown_minutes=0, name="r", db_path=db_path)
    span = Span(span_id="same", parent_id=None, request_id="same", feature="search", start_ns=fixed_now_ns,
                usage=(UsageItem(key="unit_call", service="dynamodb", count=2.0),), path=("search",))
    conn = connect(db_path)
    try:
        first = write_batch_sync(conn, prepare_batch([span], BOOK))
        await evaluator(first)
        again = write_batch_sync(conn, prepare_batch([span], BOOK))
    finally:
        conn.close()
    await evaluator(again)
    assert again.new_spans == 0 and len(events(db_path)) == 1


async def test_budget_warns_once_per_percentage_and_resets(db_path: Path, evaluator: AlertEvaluator) -> None:
    """50 % fires once; a jump over 80 and 100 fires one 100 % warning; a new month starts clean."""
    clock = evaluator.clock
    assert isinstance(clock, Clock)
    clock.now_ns = 1_772_323_200 * NS + 3 * 86400 * NS  # 2026-03-04 00:00 UTC
    assert period_start("month", clock.now_ns) == 1_772_323_200  # 2026-03-01
    assert period_start("week", clock.now_ns) == 1_772_409_600  # Monday 2026-03-02
    set_budget(100, "month", feature="search", name="b", db_path=db_path)
    spend(db_path, clock.now_ns - 2 * 86400 * NS, 30)  # earlier this month: read from the day rollup
    await evaluator(spend(db_path, clock.now_ns, 25))  # 55 %
    await evaluator(spend(db_path, clock.now_ns + NS, 1))  # 56 %, nothing new
    assert [e["message"].split("(")[-1] for e in events(db_path)] == ["$55.00 of $100.00, warning at 50%)"]
    await evaluator(spend(db_path, clock.now_ns + 2 * NS, 50))  # 106 %: crosses 80 and 100 at once
    assert len(events(db_path)) == 2 and "warning at 100%" in events(db_path)[1]["message"]
    conn = connect(db_path)
    keys = sorted(r[0] for r in conn.execute("SELECT state_key FROM alert_state"))
    conn.close()
    assert keys == ["2026-03-01:100", "2026-03-01:50", "2026-03-01:80"]
    clock.now_ns = 1_775_001_600 * NS  # 2026-04-01 00:00 UTC: a new period
    await evaluator(spend(db_path, clock.now_ns, 60))
    assert len(events(db_path)) == 3 and "warning at 50%" in events(db_path)[2]["message"]


async def test_rate_rule_against_the_same_hour_last_week(db_path: Path, fixed_now_ns: int,
                                                         evaluator: AlertEvaluator) -> None:
    """Baseline = mean of the same clock hour over 7 days; 4x fires, 3x does not; other hours don't count."""
    hour0 = fixed_now_ns // (3600 * NS) * 3600 * NS
    for d in range(1, 8):  # $2 in this clock hour on each of the last 7 days ...
        spend(db_path, hour0 - d * 86400 * NS + 10 * 60 * NS, 2)
        spend(db_path, hour0 - d * 86400 * NS - 2 * 3600 * NS, 100)  # ... and a busy hour that must not count
    spend(db_path, hour0 - 8 * 86400 * NS, 1000)  # older than the lookback
    rule = set_rate_alert(4, feature="search", min_spend=1, name="spike", db_path=db_path)
    await evaluator(spend(db_path, fixed_now_ns - 20 * 60 * NS, 6))  # 6 = 3x the $2 baseline
    store = open_alert_store(db_path)
    try:
        recent, baseline = rate_values(store, list_alerts(db_path)[0], fixed_now_ns)
    finally:
        store.close()
    assert (recent, baseline) == (6 * NS, 2 * NS)
    assert events(db_path) == []
    await evaluator(spend(db_path, fixed_now_ns, 2))  # 8 = 4x
    assert [e["rule"] for e in events(db_path)] == [rule.name]
    assert "4.0x" in events(db_path)[0]["message"]


# --- delivery --------------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with srv.lock:  # type: ignore[attr-defined]
            srv.bodies.append(json.loads(body))  # type: ignore[attr-defined]
            status = srv.script.pop(0) if srv.script else 200  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[ThreadingHTTPServer]:
    """A real HTTP server on loopback answering POSTs with the statuses in ``server.script`` (then 200)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    srv.bodies = []  # type: ignore[attr-defined]
    srv.script = []  # type: ignore[attr-defined]
    srv.lock = threading.Lock()  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


def _url(srv: ThreadingHTTPServer, path: str = "/services/T000/B000/secret-token-xyz") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def deliveries(db: Path) -> list[tuple[int, int | None, str | None]]:
    """(attempt, status, error) of every recorded delivery attempt."""
    conn = connect(db)
    try:
        return [tuple(r) for r in conn.execute("SELECT attempt, status, error FROM alert_deliveries ORDER BY id")]
    finally:
        conn.close()


async def test_webhook_500_twice_then_200_is_delivered_once(
    db_path: Path, fixed_now_ns: int, hook_server: ThreadingHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Two 500s then a 200: three attempts recorded, one delivery, Slack-style body, no secret in the logs."""
    caplog.set_level(logging.INFO)
    hook_server.script[:] = [500, 500]  # type: ignore[attr-defined]
    set_alert(feature="search", threshold=1, webhook=_url(hook_server),
              allow_private=True, name="hook", db_path=db_path)
    dispatcher = WebhookDispatcher(str(db_path), backoff=0.01, max_attempts=4)
    ev = AlertEvaluator(str(db_path), dispatcher=dispatcher, clock=Clock(fixed_now_ns))
    try:
        await ev(spend(db_path, fixed_now_ns, 3))
        await dispatcher.drain()
    finally:
        await ev.aclose()
        await dispatcher.aclose()
    assert [(a, s) for a, s, _ in deliveries(db_path)] == [(1, 500), (2, 500), (3, 200)]
    assert [e["delivery"] for e in events(db_path)] == ["delivered"]
    bodies = hook_server.bodies  # type: ignore[attr-defined]
    assert len(bodies) == 3 and bodies[0]["text"] == events(db_path)[0]["message"]
    assert dispatcher.delivered == 1
    assert "secret-token-xyz" not in caplog.text and "127.0.0.1" in caplog.text


async def test_webhook_that_never_answers_fails_without_blocking(db_path: Path, fixed_now_ns: int) -> None:
    """A listener that never answers: each attempt times out, the event ends 'failed', evaluation goes on."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)  # accepts TCP connections into the backlog, never reads or answers
    url = f"http://127.0.0.1:{sink.getsockname()[1]}/hook"
    set_alert(feature="search", threshold=1, cooldown_minutes=0, webhook=url,
              allow_private=True, name="dead", db_path=db_path)
    dispatcher = WebhookDispatcher(str(db_path), timeout=0.3, backoff=0.01, max_attempts=2)
    ev = AlertEvaluator(str(db_path), dispatcher=dispatcher, clock=Clock(fixed_now_ns))
    try:
        await ev(spend(db_path, fixed_now_ns, 3))
        await ev(spend(db_path, fixed_now_ns, 1))  # evaluated while the first delivery hangs
        assert len(events(db_path)) == 2
        await dispatcher.drain()
    finally:
        await ev.aclose()
        await dispatcher.aclose()
        sink.close()
    assert [e["delivery"] for e in events(db_path)] == ["failed", "failed"]
    recorded = deliveries(db_path)
    assert len(recorded) == 4 and all(s is None and e and "Timeout" in e for _, s, e in recorded)


async def test_pagerduty_body(db_path: Path, fixed_now_ns: int, hook_server: ThreadingHTTPServer) -> None:
    """A PagerDuty rule posts an Events v2 trigger with routing key, summary, severity, source, dedup key."""
    hook_server.script[:] = [202]  # type: ignore[attr-defined]
    set_alert(feature="search", threshold=1, webhook=_url(hook_server, "/v2/enqueue"),
              allow_private=True, webhook_format="pagerduty",
              routing_key="ROUTE123", name="pd", db_path=db_path)
    dispatcher = WebhookDispatcher(str(db_path), backoff=0.01)
    ev = AlertEvaluator(str(db_path), dispatcher=dispatcher, clock=Clock(fixed_now_ns))
    try:
        fired = await ev.evaluate(Touched.from_result(spend(db_path, fixed_now_ns, 2)))
        await dispatcher.drain()
    finally:
        await ev.aclose()
        await dispatcher.aclose()
    (body,) = hook_server.bodies  # type: ignore[attr-defined]
    assert body == pagerduty_body(fired[0], "ROUTE123")
    assert (body["routing_key"], body["event_action"], body["payload"]["source"]) == ("ROUTE123", "trigger",
                                                                                      "spendtrace")
    assert body["payload"]["severity"] == "warning" and body["payload"]["summary"] == fired[0].message
    assert body["dedup_key"].startswith(f"spendtrace-{fired[0].rule_id}-")
    assert [e["delivery"] for e in events(db_path)] == ["delivered"]


async def test_no_webhook_records_none(db_path: Path, fixed_now_ns: int) -> None:
    """A rule without a webhook still records its event, with delivery 'none' and no attempts."""
    set_alert(feature="search", threshold=1, name="quiet", db_path=db_path)
    dispatcher = WebhookDispatcher(str(db_path))
    ev = AlertEvaluator(str(db_path), dispatcher=dispatcher, clock=Clock(fixed_now_ns))
    try:
        await ev(spend(db_path, fixed_now_ns, 2))
        await dispatcher.drain()
    finally:
        await ev.aclose()
        await dispatcher.aclose()
    assert [e["delivery"] for e in events(db_path)] == ["none"] and deliveries(db_path) == []


async def test_cli_tail_follows_new_events(db_path: Path, fixed_now_ns: int, evaluator: AlertEvaluator) -> None:
    """``spendtrace alerts tail`` polls the database, prints the fired event (masked), exits at --count."""
    import subprocess
    import sys

    from consumers.testing import wait_for

    set_alert(feature="search", threshold=1, webhook="https://hooks.example.com/services/AAA/BBB/topsecret",
              name="tailed", db_path=db_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendtrace", "--db", str(db_path), "alerts", "tail", "--since-id", "0", "--count", "1",
         "--interval", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        await evaluator(spend(db_path, fixed_now_ns, 3))
        await wait_for(lambda: proc.poll() is not None, 60, "tail to print the event and exit")
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "tailed: feature 'search' spent $3.00" in out and "2026-11-02 12:00:00Z" in out
    assert "topsecret" not in out


async def test_pending_events_of_a_crashed_worker_are_delivered_once(
    db_path: Path, fixed_now_ns: int, hook_server: ThreadingHTTPServer
) -> None:
    """An event fired by a worker that died before delivering is claimed and sent once by the next dispatchers."""
    set_alert(feature="search", threshold=1, webhook=_url(hook_server),
              allow_private=True, name="orphan", db_path=db_path)
    crashed = AlertEvaluator(str(db_path), clock=Clock(fixed_now_ns))  # fires, has no dispatcher: never delivers
    try:
        await crashed(spend(db_path, fixed_now_ns, 2))
    finally:
        await crashed.aclose()
    assert [e["delivery"] for e in events(db_path)] == ["pending"]
    dispatchers = [WebhookDispatcher(str(db_path), backoff=0.01) for _ in range(2)]
    try:
        found = [await d.recover() for d in dispatchers]
        # both may see it pending (the second can also come after the first one's task claimed it) ...
        assert found[0] == 1 and found[1] in (0, 1)
        for d in dispatchers:
            await d.drain()
    finally:
        for d in dispatchers:
            await d.aclose()
    assert len(hook_server.bodies) == 1  # type: ignore[attr-defined]  # ... one claims and sends it
    assert [e["delivery"] for e in events(db_path)] == ["delivered"]


async def test_after_dropped_results_every_rule_is_evaluated(db_path: Path, fixed_now_ns: int) -> None:
    """When the hook runner dropped results under load, the next one evaluates rules on untouched scopes too."""
    dropped = [0]
    ev = AlertEvaluator(str(db_path), clock=Clock(fixed_now_ns), dropped=lambda: dropped[0])
    try:
        set_alert(feature="b", threshold=1, name="b", db_path=db_path)
        spend(db_path, fixed_now_ns, 5, feature="b")  # its result never reaches the evaluator ...
        await ev(spend(db_path, fixed_now_ns, 1, feature="a"))
        assert events(db_path) == []  # ... and 'a' alone does not cover the rule on 'b'
        dropped[0] = 1
        await ev(spend(db_path, fixed_now_ns, 1, feature="a"))
        assert [e["rule"] for e in events(db_path)] == ["b"]
    finally:
        await ev.aclose()


async def test_worker_refuses_a_webhook_whose_name_resolves_to_loopback(
    db_path: Path, fixed_now_ns: int, hook_server: ThreadingHTTPServer
) -> None:
    """The workers' dispatcher resolves the webhook's name before each POST and refuses a loopback answer."""
    name = socket.gethostname()
    try:
        addrs = {i[4][0] for i in socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)}
    except OSError:
        pytest.skip("the host name does not resolve")
    if not addrs or not all(a.startswith("127.") or a == "::1" for a in addrs):
        pytest.skip("the host name does not resolve to loopback here")
    set_alert(feature="search", threshold=1, webhook=f"http://{name}:{hook_server.server_address[1]}/h",
              name="rebind", db_path=db_path)
    dispatcher = WebhookDispatcher(str(db_path), backoff=0.01, max_attempts=4)
    ev = AlertEvaluator(str(db_path), dispatcher=dispatcher, clock=Clock(fixed_now_ns))
    try:
        await ev(spend(db_path, fixed_now_ns, 3))
        await dispatcher.drain()
    finally:
        await ev.aclose()
        await dispatcher.aclose()
    assert hook_server.bodies == []  # type: ignore[attr-defined]
    ((attempt, status, error),) = deliveries(db_path)
    assert (attempt, status) == (1, None) and error is not None and "webhook target refused" in error
    assert [e["delivery"] for e in events(db_path)] == ["failed"]
