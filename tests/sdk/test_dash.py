"""Dashboard rollups stay equal to the wide rollups they summarise, and queries agree with or without them."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import msgspec
import pytest
from _query_fixtures import DAY_NS, Expect, dash_mismatches, make_spans, store

from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite import SQLiteStorage
from spendtrace.server.store.sqlite._dash import MARKER

NOW = 1_793_620_800_000_000_000  # the fixed_now_ns instant
MINUTE_NS = 60_000_000_000


def _mismatches(path: Path) -> list[tuple[object, ...]]:
    """``dash_mismatches`` of the file at ``path``."""
    conn = sqlite3.connect(path)
    try:
        return dash_mismatches(conn)
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, Expect]:
    """A fresh database with recorded request trees."""
    path = tmp_path / "cost_data.db"
    spans = make_spans(NOW, n_requests=80, seed=5)
    book = PriceBook.default()
    store(path, spans, book)
    return path, Expect(spans)


def test_ingest_keeps_dash_equal_to_rollups(db: tuple[Path, Expect]) -> None:
    """After ingest (several batches, replays included) every dashboard row is the sum of its rollup rows."""
    path, expect = db
    store(path, expect.spans[:150], PriceBook.default(), batch=40)  # a replay: nothing counted twice
    assert _mismatches(path) == []
    with SQLiteStorage(path) as s:
        assert s.total()["cost_nano"] == sum(p.cost for p in expect.priced)


def test_restatement_and_undo_keep_dash_in_step(db: tuple[Path, Expect]) -> None:
    """Restating a date range moves dashboard totals with the rollups; undoing it restores them exactly."""
    path, _ = db
    with SQLiteStorage(path) as s:
        before = (s.aggregate_by_user(), s.total(), s.get_feature_cost_breakdown())
        in_range = s.total("2026-10-29", "2026-11-01")["cost_nano"]
        assert in_range > 0
        rid = s.restate_historical_costs(
            factor=2.0, start_date="2026-10-29", end_date="2026-11-01", who="test", why="calibration"
        )
        assert _mismatches(path) == []
        changed = s.total("2026-10-29", "2026-11-01")["cost_nano"]
        assert abs(changed - 2 * in_range) <= 1000  # doubled, up to per-row rounding
        assert s.total()["cost_nano"] - before[1]["cost_nano"] == changed - in_range  # nothing outside moved
        wide = SQLiteStorage(path)
        wide._dash_now = lambda: False  # type: ignore[method-assign]  # the same numbers from the wide rollups
        try:
            assert s.aggregate_by_user() == wide.aggregate_by_user()
            assert s.total("2026-10-30", "2026-10-31") == wide.total("2026-10-30", "2026-10-31")
        finally:
            wide.close()
        s.undo_restatement(rid)
        assert _mismatches(path) == []
        assert (s.aggregate_by_user(), s.total(), s.get_feature_cost_breakdown()) == before


def test_retention_drops_dash_rows_with_their_rollups(db: tuple[Path, Expect]) -> None:
    """Applying retention deletes old dashboard buckets exactly as it deletes old rollup buckets."""
    path, _ = db
    with SQLiteStorage(path) as s:
        s.set_retention(raw_data_days=2, hourly_rollups_days=3, daily_rollups_days=4)
        s.apply_retention(now_ns=NOW)
        assert _mismatches(path) == []
        conn = sqlite3.connect(path)
        try:
            oldest = conn.execute("SELECT MIN(bucket) FROM dash_day").fetchone()[0]
        finally:
            conn.close()
        assert oldest >= (NOW - 4 * DAY_NS) // 1_000_000_000 - 86_400


def _make_old(path: Path, old: Path) -> None:
    """A copy of ``path`` as a writer from before the dashboard rollups would have left it."""
    shutil.copy(path, old)
    conn = sqlite3.connect(old)
    conn.execute("DROP TABLE dash_hour")
    conn.execute("DROP TABLE dash_day")
    conn.execute("DELETE FROM meta WHERE key = ?", (MARKER,))
    conn.commit()
    conn.close()


def test_queries_agree_without_dash_tables(db: tuple[Path, Expect], tmp_path: Path) -> None:
    """A file without maintained dashboard tables is read from the wide rollups, with the same results."""
    path, _ = db
    old = tmp_path / "old.db"
    _make_old(path, old)
    a, b = NOW - 3 * DAY_NS - 77 * MINUTE_NS, NOW - DAY_NS + 13 * MINUTE_NS
    with SQLiteStorage(path) as new_s, SQLiteStorage(old) as old_s:
        assert new_s._dash and not old_s._dash
        for call in (
            lambda s: s.aggregate_by_feature(),
            lambda s: s.aggregate_by_user(a, b),
            lambda s: s.aggregate_by_endpoint(service="dynamodb"),
            lambda s: s.aggregate_by_service(a),
            lambda s: s.total(a, b, user_id="tenant-acme"),
            lambda s: s.total(feature="search", user_id="tenant-acme"),  # two names: wide rollups either way
            lambda s: s.get_feature_cost_breakdown(a, b),
            lambda s: s.get_cost_trend("search", 10, now=NOW),
            lambda s: s.cost_trend_by_feature(10, now=NOW),
            lambda s: s.ingest_stats(NOW),
        ):
            assert call(new_s) == call(old_s)


def test_first_write_to_an_old_file_builds_the_dash_tables(db: tuple[Path, Expect], tmp_path: Path) -> None:
    """The first batch written to a file without dashboard tables creates and fills them from its rollups."""
    path, expect = db
    old = tmp_path / "old.db"
    _make_old(path, old)
    later = [
        msgspec.structs.replace(s, span_id=f"late-{s.span_id}", request_id=f"late-{s.request_id}", parent_id=None)
        for s in make_spans(NOW, n_requests=10, seed=99)
    ]
    store(old, later, PriceBook.default())
    assert _mismatches(old) == []
    with SQLiteStorage(old) as s:
        assert s._dash
        assert s.total()["cost_nano"] == sum(p.cost for p in expect.priced) + sum(p.cost for p in Expect(later).priced)


def test_old_bounds_round_to_the_hour_once_minutes_age_out(db: tuple[Path, Expect]) -> None:
    """After minute rollups age out, an old mid-hour bound counts its whole hour, and ranges still add up."""
    path, expect = db
    hour_ns = 3600 * 1_000_000_000
    # a mid-hour bound older than the 2 days of minute rollups kept by default, with spend earlier in its hour
    early = next(
        p.span.start_ns
        for p in expect.priced
        if p.cost and p.span.start_ns < NOW - 3 * DAY_NS and p.span.start_ns % hour_ns < 50 * MINUTE_NS
    )
    a = early // hour_ns * hour_ns + 55 * MINUTE_NS
    b = NOW - 4 * 3600 * 1_000_000_000 - 29 * MINUTE_NS  # recent: minute resolution
    c = NOW + MINUTE_NS
    with SQLiteStorage(path) as s:
        s.set_retention(raw_data_days=30, hourly_rollups_days=365, daily_rollups_days=1825)
        s.apply_retention(now_ns=NOW)
        got = s.total(a, b)["cost_nano"]
        assert got == sum(p.cost for p in expect.select(a // hour_ns * hour_ns, b))
        assert got + s.total(b, c)["cost_nano"] == s.total(a, c)["cost_nano"]
        rows = {r["user_id"]: r["cost_nano"] for r in s.aggregate_by_user(a, b)}
        want = expect.by("user_id", expect.select(a // hour_ns * hour_ns, b))
        assert rows == {k: v["cost"] for k, v in want.items()}


def test_storage_opened_before_the_first_write_switches_to_dash(tmp_path: Path) -> None:
    """A storage opened on a new, empty file reads the wide rollups, then the dashboard ones once a writer made them."""
    path = tmp_path / "new.db"
    spans = make_spans(NOW, n_requests=20, seed=3)
    expect = Expect(spans)
    with SQLiteStorage(path) as s:
        assert s.total()["cost_nano"] == 0 and not s._dash
        store(path, spans, PriceBook.default())
        assert s.total()["cost_nano"] == sum(p.cost for p in expect.priced)
        assert s._dash
