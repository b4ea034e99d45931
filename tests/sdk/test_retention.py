"""Retention: raw spans and each rollup grain age out on their own schedule; dashboards keep their totals."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _query_fixtures import dash_mismatches, make_spans, store
from independent_pricing import cost_nano

from spendtrace import ConfigError, PriceBook, Span, SQLiteStorage, UsageItem
from spendtrace.server.store.sqlite._dash import GRAINS
from spendtrace.server.store.sqlite._db import connect, connect_async
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from spendtrace.server.store.sqlite._retention import (
    RAW_DELETES,
    RetentionPolicy,
    apply_retention,
    apply_retention_async,
    apply_retention_chunk,
    get_retention,
    grain_statements,
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
    lost = cost_nano(s for s in spans_at(fixed_now_ns) if s.span_id.endswith("6"))
    assert sum(daily_after.values()) == sum(daily_before.values()) - lost
    assert daily_after["api"] > 0 and daily_after["search"] > 0
    hourly_lost = cost_nano(s for s in spans_at(fixed_now_ns) if s.span_id[-1] in "56")
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


# ---------------------------------------------------------------------- chunked retention

#: Every table retention prunes, with the column its age is read from.
PRUNED = {
    "spans": "start_ns",
    "requests": "start_ns",
    "dead_letters": "received_ns",
    **{f"{kind}_{g}": "bucket" for kind in ("rollup", "loaded") for g in ("minute", "hour", "day")},
    **{f"dash_{g}": "bucket" for g in GRAINS},
}


def one_shot(conn: sqlite3.Connection, now_ns: int) -> None:
    """The reference: every aged row of every table deleted in one transaction, as retention did before chunks."""
    policy = get_retention(conn)
    raw = now_ns - policy.raw_data_days * DAY_NS
    days = {"minute": policy.minute_rollups_days, "hour": policy.hourly_rollups_days, "day": policy.daily_rollups_days}
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        for table, column in PRUNED.items():
            grain = table.split("_")[-1]
            cutoff = raw if column != "bucket" else (now_ns - days[grain] * DAY_NS) // 10**9
            conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (cutoff,))


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every pruned table, sorted."""
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in PRUNED}
    finally:
        conn.close()


def aged_spans(conn: sqlite3.Connection, now_ns: int) -> int:
    """Spans past the default 30 days."""
    return int(conn.execute("SELECT count(*) FROM spans WHERE start_ns < ?", (now_ns - 30 * DAY_NS,)).fetchone()[0])


@pytest.fixture
def backlog(tmp_path: Path, fixed_now_ns: int) -> Path:
    """A store with request trees spread over 2,100 days and dead letters of every age: each grain has aged rows."""
    path = tmp_path / "backlog.db"
    store(path, make_spans(fixed_now_ns, n_requests=400, seed=11, days=2100), PriceBook.default())
    conn = connect(path)
    try:
        dead = [("t", 0, i, None, b"x", "bad") for i in range(40)]
        write_batch_sync(conn, prepare_batch([], PriceBook.default()), dead_letters=dead)
        conn.execute('UPDATE dead_letters SET received_ns = ? - "offset" * ?', (fixed_now_ns, 2 * DAY_NS))
        assert aged_spans(conn, fixed_now_ns) > 0
    finally:
        conn.close()
    return path


@pytest.mark.parametrize("limit", [1, 7, 100, 10**6])
def test_chunks_leave_exactly_what_one_transaction_leaves(
    backlog: Path, tmp_path: Path, fixed_now_ns: int, limit: int
) -> None:
    """Chunk after chunk, any chunk size, the surviving rows of every table are those of the one-shot delete."""
    reference, chunked = tmp_path / "reference.db", tmp_path / "chunked.db"
    shutil.copy(backlog, reference)
    shutil.copy(backlog, chunked)
    with sqlite3.connect(reference) as conn:
        one_shot(conn, fixed_now_ns)
    conn = connect(chunked)
    try:
        total, done, calls = 0, False, 0
        while not done:
            deleted, done = apply_retention_chunk(conn, fixed_now_ns, limit=limit)
            total += deleted
            calls += 1
    finally:
        conn.close()
    before, after = snapshot(backlog), snapshot(chunked)
    assert after == snapshot(reference)
    assert total == sum(len(before[t]) - len(after[t]) for t in PRUNED) > 0
    assert all(after[t] for t in PRUNED if t != "dead_letters")  # something younger survives everywhere
    assert (calls > 1) == (limit < total)


async def test_apply_retention_sync_and_async_equal_the_one_shot(
    backlog: Path, tmp_path: Path, fixed_now_ns: int
) -> None:
    """``apply_retention`` (and its async variant) loop chunks to the same end state as one transaction."""
    reference, sync, via_async = tmp_path / "ref.db", tmp_path / "sync.db", tmp_path / "async.db"
    for p in (reference, sync, via_async):
        shutil.copy(backlog, p)
    with sqlite3.connect(reference) as conn:
        one_shot(conn, fixed_now_ns)
    with SQLiteStorage(sync) as storage:
        deleted = storage.apply_retention(now_ns=fixed_now_ns)
    expected = snapshot(reference)
    assert snapshot(sync) == expected
    assert deleted == sum(len(rows) for rows in snapshot(backlog).values()) - sum(len(r) for r in expected.values())
    aconn = await connect_async(via_async)
    try:
        assert await apply_retention_async(aconn, fixed_now_ns) == deleted
    finally:
        await aconn.close()
    assert snapshot(via_async) == expected


def test_a_chunk_deletes_at_most_limit_rows_and_chunks_converge(backlog: Path, fixed_now_ns: int) -> None:
    """With a small limit each call deletes at most that many raw rows (rollups: whole buckets), and calls end done."""
    limit = 25
    conn = connect(backlog)
    try:
        aged = aged_spans(conn, fixed_now_ns)
        assert aged > 3 * limit
        widest = max(
            conn.execute(f"SELECT max(n) FROM (SELECT count(*) AS n FROM rollup_{g} GROUP BY bucket)").fetchone()[0]
            for g in ("minute", "hour", "day")
        )

        def sizes() -> dict[str, int]:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in PRUNED}

        first = sizes()
        deleted, done = apply_retention_chunk(conn, fixed_now_ns, limit=limit)
        assert (deleted, done) == (limit, False)
        assert first["spans"] - sizes()["spans"] == limit
        assert aged_spans(conn, fixed_now_ns) == aged - limit
        calls = 1
        while not done:
            was = sizes()
            deleted, done = apply_retention_chunk(conn, fixed_now_ns, limit=limit)
            now = sizes()
            calls += 1
            gone = {t: was[t] - now[t] for t in PRUNED}
            assert deleted == sum(gone.values())
            assert gone["spans"] + gone["requests"] + gone["dead_letters"] <= limit
            assert all(gone[f"rollup_{g}"] <= max(limit, widest) for g in ("minute", "hour", "day"))
            assert calls < 10_000
        assert apply_retention_chunk(conn, fixed_now_ns, limit=limit) == (0, True)
        assert calls > aged // limit
    finally:
        conn.close()


def test_dashboards_keep_their_totals_at_every_chunk(backlog: Path, fixed_now_ns: int) -> None:
    """After every chunk dash_* equals its rollups and every dashboard over surviving data reads as before."""
    since = datetime.fromtimestamp((fixed_now_ns - 1000 * DAY_NS) / 1e9, tz=UTC)

    def totals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # first/last seen come from the finest grain still holding that bucket: an hour, then a day once
        # the hourly rows age out (the one-shot delete does the same); every total must stay
        return [{k: v for k, v in row.items() if k not in ("first_seen", "last_seen")} for row in rows]

    def dashboards(s: SQLiteStorage) -> tuple[Any, ...]:
        return (
            totals(s.aggregate_by_feature(start=since)),
            totals(s.aggregate_by_user(start=since)),
            totals(s.aggregate_by_endpoint(start=since)),
            totals(s.get_feature_cost_breakdown(start=since)),
            s.total(start=since),
        )

    conn = connect(backlog)
    try:
        with SQLiteStorage(backlog) as storage:
            before = dashboards(storage)
            assert before[0] and dash_mismatches(conn) == []
            done, chunks = False, 0
            while not done:
                _, done = apply_retention_chunk(conn, fixed_now_ns, limit=150)
                chunks += 1
                assert dash_mismatches(conn) == [], f"after chunk {chunks}"
                assert dashboards(storage) == before, f"after chunk {chunks}"
        assert chunks > 10
    finally:
        conn.close()


def test_each_chunk_statement_walks_an_index(backlog: Path) -> None:
    """On an analysed store, every chunk statement searches an index from its oldest end instead of scanning a table."""
    conn = connect(backlog)
    try:
        conn.execute("ANALYZE")
        statements = list(RAW_DELETES[:2])  # dead letters have no time index (few rows, ids in arrival order)
        for g in ("minute", "hour", "day"):
            statements += grain_statements(g).values()
        assert len(statements) == 2 + 4 + 2 * 7
        for sql in statements:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, (0,) * sql.count("?"))]
            assert plan and not [step for step in plan if step.startswith("SCAN")], (sql, plan)
    finally:
        conn.close()


def test_chunk_limit_must_be_positive(db_path: Path) -> None:
    """A chunk of no rows would never finish; it is refused."""
    conn = connect(db_path)
    with pytest.raises(ConfigError, match="limit"):
        apply_retention_chunk(conn, limit=0)
    assert apply_retention_chunk(conn) == (0, True)
