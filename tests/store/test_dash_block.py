"""SQLite's week and 28-day blocks (``dash_block``, schema 4): equal to the day rows they sum after every change,
and the windows ranked from them give the same figures as the day rows alone.

The blocks are checked against ``dash_day`` summed in Python (block starts computed here, not by the SQL
under test) after ingest, a restatement, a reprice, their undos and retention cutting a block in two; the
reads are compared, for 28 clock days (every position of a window's edges against the blocks), with the
reads that take no ``limit`` and so sum the day rows directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sqlite3
from pathlib import Path

import pytest
from test_contract import NANO, NOW
from test_reprice import BOOK, BOOK2

from spendtrace.schema import Span, UsageItem
from spendtrace.server.model.dashboard import DimSnapshot, TrendSnapshot
from spendtrace.server.store.base import open_dashboard, open_store
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

DAY_S = 86_400
#: Monday 1970-01-05: weeks and 28-day blocks start on Mondays counted from it
MONDAY = 345_600
FEATURES = [f"feat-{i}" for i in range(8)]
TENANTS = [f"tenant-{i}" for i in range(12)]


def spans() -> list[Span]:
    """130 days up to NOW: each day some features, tenants and endpoints spend, each its own rhythm, so a
    90-, 30-, 14- or 7-day window ranks them differently; some usage is of a model only ``BOOK2`` prices."""
    rng = random.Random(16)
    out = []
    for d in range(130):
        day_ns = NOW - d * DAY_S * NANO
        for i, feat in enumerate(FEATURES):
            if (d + i) % (i + 2) and rng.random() < 0.8:
                continue
            usage = [UsageItem("t_read", count=float(rng.randrange(1, 10_000) * (1 + (d < 20 * (i % 3)))))]
            if rng.random() < 0.2:
                usage.append(UsageItem("openai_gpt_9_turbo", "openai", count=1.0, input_tokens=rng.randrange(1, 999),
                                       output_tokens=7, provider="openai", model="gpt-9-turbo"))  # fmt: skip
            n = len(out)
            out.append(Span(f"s{n}", None, f"r{n}", feat, endpoint=f"/e{(d + i) % 5}", user_id=rng.choice(TENANTS),
                            start_ns=day_ns - rng.randrange(DAY_S // 2) * NANO, usage=tuple(usage),
                            path=(feat,)))  # fmt: skip
    return out


def expected_blocks(conn: sqlite3.Connection) -> set[tuple[str, int, int, str, int]]:
    """``dash_block`` as it must be: the ``service = ''`` day rows summed per value over each week and 28-day block."""
    sums: dict[tuple[str, int, int, str], int] = {}
    rows = conn.execute("SELECT dim, value, bucket, cost_nano FROM dash_day WHERE service = ''")
    for dim, value, bucket, cost in rows:
        for days in (7, 28):
            key = (dim, days, bucket - (bucket - MONDAY) % (days * DAY_S), value)
            sums[key] = sums.get(key, 0) + cost
    return {(*k, c) for k, c in sums.items()}


def assert_blocks(db: Path) -> set[tuple[str, int, int, str, int]]:
    """The file's blocks equal the day rows they sum (and there are some); returns them."""
    conn = sqlite3.connect(db)
    try:
        got = set(conn.execute("SELECT dim, days, bucket, value, cost_nano FROM dash_block"))
        assert got == expected_blocks(conn)
        assert {d for _, d, *_ in got} == {7, 28}
        return got
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "blocks.db"
    conn = connect(path)
    try:
        data = spans()
        for part in (data[: len(data) // 2], data[len(data) // 2 :]):  # two batches: the second adds to blocks
            write_batch_sync(conn, prepare_batch(part, BOOK))
    finally:
        conn.close()
    return path


def test_the_origin_is_a_monday() -> None:
    """Blocks start on Mondays (UTC), so a week block is a calendar week."""
    assert dt.datetime.fromtimestamp(MONDAY, dt.UTC).weekday() == 0


def test_blocks_follow_restatement_reprice_undo_and_retention(db: Path) -> None:
    """After each admin operation on a range that cuts blocks in two, every block equals its day rows again."""
    first = assert_blocks(db)
    store = open_store(f"sqlite:///{db}")
    try:
        today = dt.datetime.fromtimestamp(NOW // NANO, dt.UTC).date()
        rid = store.restate_historical_costs(factor=1.5, start_date=today - dt.timedelta(days=40),
                                             end_date=today - dt.timedelta(days=17))  # fmt: skip
        restated = assert_blocks(db)
        assert restated != first
        rp = store.reprice(start_date=today - dt.timedelta(days=60), end_date=today - dt.timedelta(days=3), book=BOOK2)
        assert rp.delta_nano != 0  # gpt-9 priced now; the restated reads priced from usage again
        repriced = assert_blocks(db)
        assert repriced != restated
        store.undo_restatement(rp.id)
        assert assert_blocks(db) == restated
        store.undo_restatement(rid)
        assert assert_blocks(db) == first
        store.set_retention(daily_rollups_days=45)  # the cut falls inside a week and a 28-day block
        store.apply_retention(now_ns=NOW)
    finally:
        store.close()
    kept = assert_blocks(db)
    oldest = min(b for _, _, b, _, _ in kept)
    assert len(kept) < len(first) and oldest >= NOW // NANO // DAY_S * DAY_S - 45 * DAY_S - 27 * DAY_S
    assert kept - first  # blocks cut in two: what is left of them


def read(db: Path, now_ns: int) -> list[tuple[object, object]]:
    """(with limit, without) pairs of trends and dimension windows at clock ``now_ns``."""

    async def go() -> list[tuple[object, object]]:
        reads = await open_dashboard(f"sqlite:///{db}", clock=lambda: now_ns, monotonic=lambda: 1.0).open()
        try:
            out: list[tuple[object, object]] = []
            for days in (7, 14, 30, 90):
                out.append((await reads.trends(days, limit=3), await reads.trends(days)))
            for dim, window in (("feature", "30d"), ("user", "30d"), ("endpoint", "7d"), ("feature", "7d")):
                out.append((await reads.dimension(dim, window, limit=3), await reads.dimension(dim, window)))
            out.append((await reads.dimension("feature", "30d", limit=2, offset=2, search="feat"),
                        await reads.dimension("feature", "30d", search="feat")))  # fmt: skip
            return out
        finally:
            await reads.close()

    return asyncio.run(go())


def test_windows_rank_the_same_as_their_day_rows_whatever_the_weekday(db: Path) -> None:
    """Trends and dimension pages ranked from blocks and edge days equal the full day-row reads, for 28 clock days."""
    for shift in range(28):
        for paged, full in read(db, NOW + shift * DAY_S * NANO):
            if isinstance(paged, TrendSnapshot):
                assert isinstance(full, TrendSnapshot)
                assert paged.features == full.features[:3]
                assert {f: paged.cost[f] for f in paged.features} == {f: full.cost[f] for f in paged.features}
                assert paged.others_features == len(full.features) - len(paged.features)
                whole = [sum(full.cost[f][i] for f in full.features) for i in range(len(full.days))]
                if paged.others:
                    top = [sum(paged.cost[f][i] for f in paged.features) for i in range(len(paged.days))]
                    assert [o + t for o, t in zip(paged.others, top, strict=True)] == whole
            else:
                assert isinstance(paged, DimSnapshot) and isinstance(full, DimSnapshot)
                cut = full.rows[paged.offset : paged.offset + len(paged.rows)]
                assert [(r.key, r.cost_nano) for r in paged.rows] == [(r.key, r.cost_nano) for r in cut]
                assert (paged.total_nano, paged.values, paged.matched) == (full.total_nano, full.values, full.matched)
    late = read(db, NOW + 80 * DAY_S * NANO)  # most of the data outside the 30-day window, some in the 90-day
    assert late[3][1].features and not late[2][1].features  # type: ignore[union-attr]


def test_a_schema_3_file_gets_its_blocks_on_upgrade(db: Path) -> None:
    """Migration 4 creates the blocks and their triggers and fills them from the day rows the file holds."""
    conn = sqlite3.connect(db)
    for trigger in ("dash_block_ins", "dash_block_upd", "dash_block_del"):  # back to what schema 3 holds
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE dash_block")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    conn = connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
        write_batch_sync(conn, prepare_batch([Span("late", None, "late", "feat-0", endpoint="/e0", user_id="t",
                                                   start_ns=NOW, usage=(UsageItem("t_read", count=3.0),),
                                                   path=("feat-0",))], BOOK))  # fmt: skip
    finally:
        conn.close()
    assert_blocks(db)  # filled, and kept by the triggers the migration made
