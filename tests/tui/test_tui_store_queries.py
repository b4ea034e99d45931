"""The dashboard reads the TUI makes (``open_dashboard``), on a real SQLite file written by the real ingest path.

Each read is checked against the raw ``spans`` table of the same file, which the rollups it reads
are derived from; only the fixtures (writing, reading raw spans) touch SQLite directly.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _tui_data import BIG_REQUEST, MARKUP, request

from spendtrace.errors import ConfigError
from spendtrace.server.model.dashboard import DIMENSIONS, SPARK_BINS, WINDOWS, UnpricedLine
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import DashboardReads, open_dashboard
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

NANO = 1_000_000_000
HOUR_S = 3600


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def reads(tui_db: Path, fixed_now_ns: int) -> AsyncIterator[DashboardReads]:
    """Open dashboard reads on the fixed TUI data set, with the fixed clock."""
    r = await open_dashboard(tui_db, clock=lambda: fixed_now_ns, monotonic=Ticks()).open()
    yield r
    await r.close()


def raw(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` over the file, read with the stdlib driver (the independent side of a check)."""
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql, params))


def store_more(db: Path, now_ns: int, n: int) -> int:
    """Write ``n`` more requests through the real ingest path; returns the spans written."""
    rng = random.Random(n)
    t = now_ns - 90 * NANO
    spans = [s for i in range(n) for s in request(f"more-{i}", t, "tenant-acme", "/api/x", "search", rng)]
    conn = connect(db)
    try:
        write_batch_sync(conn, prepare_batch(spans, PriceBook.default()))
    finally:
        conn.close()
    return len(spans)


def test_open_dashboard_finds_the_backend_by_url_scheme(tui_db: Path) -> None:
    """A bare path and a ``sqlite:///`` URL open the SQLite backend's reads; an unknown scheme is refused."""
    assert isinstance(open_dashboard(tui_db), DashboardReads)
    assert isinstance(open_dashboard(f"sqlite:///{tui_db}"), DashboardReads)
    with pytest.raises(ConfigError, match="unknown store URL scheme"):
        open_dashboard("nosuchdb://x")


async def test_overview_matches_the_raw_spans(reads: DashboardReads, tui_db: Path, fixed_now_ns: int) -> None:
    """Totals, last hour, errors, unpriced items, dead letters and alert events are those of the stored rows."""
    ov = await reads.overview()
    ((cost, spans, errors, unpriced),) = raw(
        tui_db, "SELECT sum(cost_nano), count(*), sum(error), sum(unpriced) FROM spans"
    )
    since_min = fixed_now_ns // NANO - HOUR_S
    ((hour,),) = raw(tui_db, "SELECT sum(cost_nano) FROM spans WHERE start_ns / 60000000000 * 60 >= ?", since_min)
    assert (ov.total_nano, ov.spans, ov.errors, ov.unpriced_items) == (cost, spans, errors, unpriced)
    assert ov.last_hour_nano == hour and 0 < hour < cost
    assert (ov.dead_letters, ov.alert_events) == (1, 1)
    assert ov.ingest_per_s is None  # no previous call to measure from


async def test_ingest_rate_and_change_token_follow_new_commits(tui_db: Path, fixed_now_ns: int) -> None:
    """After another writer commits the token moves and the next overview counts the new spans per second."""
    ticks = Ticks()
    reads = await open_dashboard(tui_db, clock=lambda: fixed_now_ns, monotonic=ticks).open()
    try:
        before = await reads.overview()
        token = await reads.change_token()
        assert await reads.change_token() == token  # nothing committed: no refresh needed
        added = store_more(tui_db, fixed_now_ns, 4)
        assert await reads.change_token() != token
        ticks.now += 2.0
        after = await reads.overview()
        assert after.spans == before.spans + added
        assert after.ingest_per_s == pytest.approx(added / 2.0)
    finally:
        await reads.close()
        await reads.close()  # idempotent


async def test_dimension_rows_add_up_to_the_raw_spans(reads: DashboardReads, tui_db: Path, fixed_now_ns: int) -> None:
    """Per tenant cost and per-service columns equal the raw sums; the sparkline adds up to the last-hour rate."""
    snap = await reads.dimension("user", "all")
    want = dict(raw(tui_db, "SELECT user_id, sum(cost_nano) FROM spans GROUP BY user_id"))
    assert {r.key: r.cost_nano for r in snap.rows} == want
    assert snap.total_nano == sum(want.values())
    assert [r.cost_nano for r in snap.rows] == sorted((r.cost_nano for r in snap.rows), reverse=True)
    for row in snap.rows:
        assert sum(row.services.values()) == row.cost_nano
        assert len(row.spark) == SPARK_BINS and sum(row.spark) == row.rate_nano_h
        assert row.loaded_nano is None
    assert set(snap.services) == {s for r in snap.rows for s in r.services}
    features = {r.key: r for r in (await reads.dimension("feature", "all")).rows}
    assert features["api"].loaded_nano == snap.total_nano  # the root feature carries everything below it
    assert all(r.loaded_nano is not None and r.loaded_nano >= r.cost_nano for r in features.values())
    week = await reads.dimension("feature", "7d")
    assert 0 < week.total_nano < sum(r.cost_nano for r in features.values())


async def test_dimension_from_dash_rollups_equals_full_rollups(tui_db: Path, fixed_now_ns: int, tmp_path: Path) -> None:
    """Every dimension and window: the same rows, per-service costs and totals with or without ``dash_*`` tables."""
    plain = tmp_path / "no-dash.db"
    shutil.copyfile(tui_db, plain)
    with sqlite3.connect(plain) as conn:  # without the marker the store reads rollup_* as a file of an older writer
        conn.execute("DELETE FROM meta WHERE key = 'dash_rollups'")
    assert raw(tui_db, "SELECT count(*) FROM meta WHERE key = 'dash_rollups'") == [(1,)]
    dash = await open_dashboard(tui_db, clock=lambda: fixed_now_ns).open()
    full = await open_dashboard(plain, clock=lambda: fixed_now_ns).open()
    try:
        for dimension in DIMENSIONS:
            for window in WINDOWS:
                got = await dash.dimension(dimension, window)
                want = await full.dimension(dimension, window)
                assert got.rows and got.services, (dimension, window)
                assert got == want, (dimension, window)
        assert await dash.trends(14) == await full.trends(14)
        assert await dash.overview() == await full.overview()
    finally:
        await dash.close()
        await full.close()


async def test_requests_newest_or_costliest(reads: DashboardReads, tui_db: Path) -> None:
    """Requests come newest first or costliest first, limited, with the cost and span count of their spans."""
    recent = await reads.requests("recent", 10)
    assert len(recent) == 10
    assert [r.start_ns for r in recent] == sorted((r.start_ns for r in recent), reverse=True)
    costly = await reads.requests("cost", 200)
    assert costly[0].request_id == BIG_REQUEST
    assert [r.cost_nano for r in costly] == sorted((r.cost_nano for r in costly), reverse=True)
    per_request = {
        rid: (c, n) for rid, c, n in raw(tui_db, "SELECT request_id, sum(cost_nano), count(*) FROM spans GROUP BY 1")
    }
    assert {r.request_id: (r.cost_nano, r.spans) for r in costly} == per_request


async def test_request_tree_links_spans_and_adds_up_subtrees(reads: DashboardReads, tui_db: Path) -> None:
    """The big request is one tree under ``api`` whose subtree cost is the request's cost; unknown ids give []."""
    (root,) = await reads.request_tree(BIG_REQUEST)
    ((cost,),) = raw(tui_db, "SELECT sum(cost_nano) FROM spans WHERE request_id = ?", BIG_REQUEST)
    assert (root.feature, root.depth, root.subtree_nano) == ("api", 0, cost)
    (mid,) = [c for c in root.children if c.feature == "recommend"]
    (llm,) = [c for c in mid.children if c.feature == "summarise"]
    assert llm.depth == 2 and llm.subtree_nano == llm.direct_nano > 0
    (line,) = llm.usage
    assert line.key == "bedrock_claude_3_5_sonnet" and line.priced and line.units == "40,000 in 6,000 out"
    assert await reads.request_tree("no-such-request") == []


async def test_trends_are_daily_cost_per_feature(reads: DashboardReads, tui_db: Path, fixed_now_ns: int) -> None:
    """Fourteen UTC days ending today, features by total, and the days add up to the raw spans of those days."""
    trend = await reads.trends(14)
    today = fixed_now_ns // NANO // 86400 * 86400
    assert len(trend.days) == 14 and trend.days[-1] == today
    totals = [sum(trend.cost[f]) for f in trend.features]
    assert totals == sorted(totals, reverse=True) and trend.features[0] == "summarise"
    first_ns = trend.days[0] * NANO
    ((want,),) = raw(tui_db, "SELECT sum(cost_nano) FROM spans WHERE start_ns >= ?", first_ns)
    assert sum(totals) == want


async def test_alert_rules_and_events_with_webhooks_masked(reads: DashboardReads, tui_db: Path) -> None:
    """Rules by name with their webhook tokens hidden, and the fired event as stored."""
    from spendtrace.server.alerts.rules import set_alert

    secret = "https://hooks.slack.com/services/T0SECRET/B0SECRET/abcdefSECRET"
    set_alert(total=True, threshold=1.0, window_hours=1, name="a-total", webhook=secret, db_path=str(tui_db))
    rules = await reads.alert_rules()
    assert [r.name for r in rules] == ["a-total", "recs-hourly"]
    assert rules[0].webhook.startswith("https://hooks.slack.com/services/") and "SECRET" not in rules[0].webhook
    assert rules[1].webhook == "" and rules[1].scope_value == "recommend" and rules[1].enabled
    (event,) = await reads.alert_events()
    assert (event.rule_name, event.scope_value, event.value_nano, event.threshold_nano) == (
        "recs-hourly",
        "recommend",
        61_234_567,
        50_000_000,
    )


async def test_what_the_totals_leave_out(reads: DashboardReads) -> None:
    """Unpriced usage (the fixture's unknown key) and dead letters, as named lines."""
    assert await reads.unpriced() == [UnpricedLine("mystery_api_call", "mystery", MARKUP, 16)]
    (dead,) = await reads.dead_letters()
    assert dead.reason == "undecodable msgpack" and dead.received_ns > 0


async def test_a_missing_file_opens_as_an_empty_store(tmp_path: Path, fixed_now_ns: int) -> None:
    """No file yet: the reads create an empty store and every figure is zero or empty."""
    reads = await open_dashboard(tmp_path / "new" / "cost.db", clock=lambda: fixed_now_ns).open()
    try:
        ov = await reads.overview()
        assert (ov.total_nano, ov.spans, ov.dead_letters) == (0, 0, 0)
        assert (await reads.dimension("feature", "1h")).rows == ()
        assert await reads.requests() == [] and await reads.alert_rules() == []
        assert (await reads.trends(7)).features == ()
    finally:
        await reads.close()
