"""Retention: raw spans and each rollup grain age out on their own schedule; dashboards keep their totals."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendtrace import ConfigError, PriceBook, Span, SQLiteStorage, UsageItem
from spendtrace.storage._db import connect, connect_async
from spendtrace.storage._ingest import prepare_batch, write_batch_sync
from spendtrace.storage._retention import (
    RetentionPolicy,
    apply_retention,
    apply_retention_async,
    get_retention,
    set_retention,
)

DAY_NS = 86_400 * 10**9
AGES_DAYS = (0.04, 1.5, 3, 10, 40, 400, 2000)


def spans_at(now_ns: int) -> list[Span]:
    """One priced request of two spans at each age in AGES_DAYS."""
    out = []
    for i, age in enumerate(AGES_DAYS):
        t = now_ns - int(age * DAY_NS)
        usage = (UsageItem("dynamodb_read", count=float(i + 1)),)
        out.append(Span(f"r{i}", None, f"q{i}", "api", start_ns=t, duration_ns=10, path=("api",), usage=usage))
        out.append(Span(f"c{i}", f"r{i}", f"q{i}", "search", start_ns=t + 1, path=("api", "search"), usage=usage))
    return out


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts of the tables retention prunes."""
    tables = ("spans", "requests", "rollup_minute", "rollup_hour", "rollup_day", "loaded_minute", "loaded_day")
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def feature_totals(conn: sqlite3.Connection, table: str) -> dict[str, int]:
    """Per-feature span-level cost from a rollup table (what a dashboard shows)."""
    return dict(conn.execute(f"SELECT feature, sum(cost_nano) FROM {table} WHERE service = '' GROUP BY feature"))


def test_policy_is_stored_validated_and_defaulted(db_path: Path) -> None:
    """``set_retention`` persists in meta; unset values default; nonsense is a ConfigError."""
    conn = connect(db_path)
    assert get_retention(conn) == RetentionPolicy(30, 2, 365, 1825)
    set_retention(conn, raw_data_days=7, hourly_rollups_days=90, daily_rollups_days=730)
    assert get_retention(connect(db_path)) == RetentionPolicy(7, 2, 90, 730)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="raw_data_days"):
            set_retention(conn, raw_data_days=bad)  # type: ignore[arg-type]
    assert get_retention(conn).raw_data_days == 7


def test_each_kind_of_row_ages_out_on_its_own_schedule(db_path: Path, fixed_now_ns: int) -> None:
    """Raw spans go after 30 days, minute rollups 2, hourly 365, daily 1825; dashboards keep their totals."""
    conn = connect(db_path)
    write_batch_sync(conn, prepare_batch(spans_at(fixed_now_ns), PriceBook.default()))
    write_batch_sync(conn, prepare_batch([], PriceBook.default()), dead_letters=[("t", 0, 1, None, b"x", "bad")])
    conn.execute("UPDATE dead_letters SET received_ns = ?", (fixed_now_ns - 31 * DAY_NS,))
    write_batch_sync(conn, prepare_batch([], PriceBook.default()), dead_letters=[("t", 0, 2, None, b"y", "bad")])
    since = datetime.fromtimestamp((fixed_now_ns - 1000 * DAY_NS) / 1e9, tz=UTC)
    with SQLiteStorage(db_path) as storage:
        dashboard_before = storage.aggregate_by_feature(start=since)
        breakdown_before = storage.get_feature_cost_breakdown(start=since)
    daily_before = feature_totals(conn, "rollup_day")
    hourly_before = feature_totals(conn, "rollup_hour")
    deleted = apply_retention(conn, fixed_now_ns)
    assert deleted > 0
    kept_spans = {r[0] for r in conn.execute("SELECT span_id FROM spans")}
    assert kept_spans == {f"{k}{i}" for i, age in enumerate(AGES_DAYS) if age < 30 for k in "rc"}
    assert conn.execute('SELECT "offset" FROM dead_letters').fetchall() == [(2,)]  # raw bytes age out too
    assert {r[0] for r in conn.execute("SELECT request_id FROM requests")} == {
        f"q{i}" for i, age in enumerate(AGES_DAYS) if age < 30
    }
    now_s = fixed_now_ns // 10**9
    for table, days in (("rollup_minute", 2), ("loaded_minute", 2), ("rollup_hour", 365), ("rollup_day", 1825)):
        oldest = conn.execute(f"SELECT min(bucket) FROM {table}").fetchone()[0]
        assert oldest >= now_s - days * 86_400, table
    # the 2000-day-old request is past even the daily limit; everything younger is still on the dashboard
    daily_after = feature_totals(conn, "rollup_day")
    lost = prepare_batch([s for s in spans_at(fixed_now_ns) if s.span_id.endswith("6")], PriceBook.default()).cost_nano
    assert sum(daily_after.values()) == sum(daily_before.values()) - lost
    assert daily_after["api"] > 0 and daily_after["search"] > 0
    hourly_lost = prepare_batch(
        [s for s in spans_at(fixed_now_ns) if s.span_id[-1] in "56"], PriceBook.default()
    ).cost_nano
    assert sum(feature_totals(conn, "rollup_hour").values()) == sum(hourly_before.values()) - hourly_lost
    assert apply_retention(conn, fixed_now_ns) == 0  # idempotent
    with SQLiteStorage(db_path) as storage:
        assert storage.aggregate_by_feature(start=since) == dashboard_before
        assert storage.get_feature_cost_breakdown(start=since) == breakdown_before
    assert {r["feature"] for r in dashboard_before} == {"api", "search"}


async def test_async_retention_applies_the_stored_policy(tmp_path: Path, fixed_now_ns: int) -> None:
    """The workers' async variant deletes by the policy stored in the file."""
    path = tmp_path / "r.db"
    conn = connect(path)
    write_batch_sync(conn, prepare_batch(spans_at(fixed_now_ns), PriceBook.default()))
    set_retention(conn, raw_data_days=2)
    aconn = await connect_async(path)
    try:
        deleted = await apply_retention_async(aconn, fixed_now_ns)
    finally:
        await aconn.close()
    assert deleted > 0
    assert {r[0] for r in conn.execute("SELECT span_id FROM spans")} == {"r0", "c0", "r1", "c1"}
    assert counts(conn)["rollup_day"] > 0
