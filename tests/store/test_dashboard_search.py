"""Searching many names: the paths a search takes at scale give the same page, counts and "others" as a sum in Python.

On SQLite a needle of 3+ characters that few names contain is read through the trigram index of
names (``dash_names_fts``, schema 3), one most names contain scans the cost index, and a window
ranks in one pass; ClickHouse runs the same contract. Expected values come from the spans written
here: tenant i spends (i + 1) reads.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from store_backends import Backend
from test_contract import BOOK, HOUR, NANO, NOW, READ

from spendtrace.schema import Span, UsageItem
from spendtrace.server.model.dashboard import DimSnapshot
from spendtrace.server.store.base import open_dashboard

#: more names containing "acct" than the trigram path reads (2,000), so "acct" takes the scan
N = 2100
#: non-ASCII names: the search folds ASCII letters only, though the trigram index folds more
ODD = ["Émile-Ünïcode", "émile-lower", 'quote"acct', "nul\x00acct", "NEAR(acct) AND *"]


def names() -> list[str]:
    return [f"acct-{i:04d}" for i in range(N)] + ODD


def cost(i: int) -> int:
    return (i + 1) * READ


def spans() -> list[Span]:
    """One span per tenant: tenant i spends (i + 1) reads, half in the last day, half 10 days ago."""
    out = []
    for i, t in enumerate(names()):
        start = NOW - HOUR - i * NANO if i % 2 else NOW - 10 * 24 * HOUR
        out.append(Span(f"n{i}", None, f"m{i}", "feat", endpoint="/e", user_id=t, start_ns=start,
                        usage=(UsageItem("t_read", count=float(i + 1)),), path=("feat",)))  # fmt: skip
    return out


def expect(needle: str, window_days: int | None = None) -> list[tuple[str, int]]:
    """(name, cost) of the tenants whose ASCII-folded name contains ``needle``'s, costliest first."""
    fold = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    hits = []
    for i, (t, s) in enumerate(zip(names(), spans(), strict=True)):
        if window_days is not None and s.start_ns < NOW - window_days * 24 * HOUR:
            continue
        if needle.translate(fold) in t.translate(fold):
            hits.append((t, cost(i)))
    return sorted(hits, key=lambda h: (-h[1], h[0]))


@pytest.fixture
def url(backend: Backend) -> str:
    backend.ingest(spans(), BOOK)
    return backend.url


def read(url: str, *calls: tuple[str, dict[str, Any]]) -> list[DimSnapshot]:
    async def go() -> list[DimSnapshot]:
        reads = await open_dashboard(url, clock=lambda: NOW, monotonic=lambda: 1.0).open()
        try:
            return [await reads.dimension("user", w, **kw) for w, kw in calls]
        finally:
            await reads.close()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "needle", ["cct-012", "CCT-2", "t-00", "acct", "-0", "Émile", "émile", 'e"a', "l\x00ac", "near(", ") and *"]
)
def test_a_search_of_many_names_is_exact(url: str, needle: str) -> None:
    """Few matches (trigram path), most names (scan), short needles and non-ASCII: the page, matched and others."""
    (page, second) = read(url, ("all", {"limit": 25, "search": needle}), ("all", {"limit": 25, "offset": 25,
                                                                                   "search": needle}))  # fmt: skip
    hits = expect(needle)
    assert [(r.key, r.cost_nano) for r in page.rows] == hits[:25]
    assert [(r.key, r.cost_nano) for r in second.rows] == hits[25:50]
    assert page.matched == second.matched == len(hits)
    assert page.values == len(names()) and page.total_nano == sum(cost(i) for i in range(len(names())))


def test_non_ascii_letters_are_not_folded() -> None:
    """The expectation itself: 'Émile' and 'émile' are different needles (ASCII folding only)."""
    assert [n for n, _ in expect("Émile")] == ["Émile-Ünïcode"]
    assert [n for n, _ in expect("émile")] == ["émile-lower"]


@pytest.mark.parametrize("needle", ["acct-00", "acct", "zzz"])
def test_a_window_search_pages_and_counts_exactly(url: str, needle: str) -> None:
    """7d and 30d windows: one pass ranks, counts and matches; a page past the matches still counts them."""
    for window, days in (("7d", 7), ("30d", 30)):
        page, past = read(url, (window, {"limit": 10, "search": needle}), (window, {"limit": 10, "offset": 5000,
                                                                                     "search": needle}))  # fmt: skip
        hits = expect(needle, days)
        inside = expect("", days)
        assert [(r.key, r.cost_nano) for r in page.rows] == hits[:10]
        assert page.matched == past.matched == len(hits) and past.rows == ()
        assert page.values == past.values == len(inside)
        assert page.total_nano == past.total_nano == sum(c for _, c in inside)


def test_a_schema_2_file_gets_its_names_on_upgrade(tmp_path: Path) -> None:
    """Migration 3 fills ``dash_names`` (and its trigram index) from the ``dash_all`` rows a file already holds,
    and puts the cost into the fully-loaded day index."""
    from spendtrace.server.store.sqlite._db import connect
    from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

    db = tmp_path / "old.db"
    conn = connect(db)
    write_batch_sync(conn, prepare_batch(spans(), BOOK))
    # back to schema 2: what a file written before version 3 holds
    for trigger in ("dash_names_add", "dash_names_drop", "dash_names_fts_ins", "dash_names_fts_del"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE dash_names_fts")
    conn.execute("DROP TABLE dash_names")
    conn.execute("DROP INDEX loaded_day_feature_cost")
    conn.execute("CREATE INDEX loaded_day_feature ON loaded_day (feature, bucket)")  # version 2's
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    conn = connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)
        got = set(conn.execute("SELECT dim, value FROM dash_names").fetchall())
        assert {v for d, v in got if d == "user_id"} == set(names())
        assert {v for d, v in got if d == "feature"} == {"feat"} and {v for d, v in got if d == "endpoint"} == {"/e"}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'loaded_day'")}
        assert "loaded_day_feature_cost" in indexes and "loaded_day_feature" not in indexes  # cost in the index
        hits = conn.execute("SELECT count(*) FROM dash_names_fts WHERE dash_names_fts MATCH '\"cct-012\"'").fetchone()
        assert hits == (10,)  # acct-0120 .. acct-0129
    finally:
        conn.close()
    (page,) = read(f"sqlite:///{db}", ("all", {"limit": 3, "search": "cct-012"}))
    assert [(r.key, r.cost_nano) for r in page.rows] == expect("cct-012")[:3] and page.matched == 10


def test_names_leave_with_their_last_row(tmp_path: Path) -> None:
    """Retention that removes every day of a value removes its name: a search no longer finds it."""
    from spendtrace.server.store.sqlite._db import connect
    from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
    from spendtrace.server.store.sqlite._retention import apply_retention

    db = tmp_path / "r.db"
    conn = connect(db)
    try:
        write_batch_sync(conn, prepare_batch(spans(), BOOK))
        n_names = conn.execute("SELECT count(*) FROM dash_names WHERE dim = 'user_id'").fetchone()[0]
        assert n_names == len(names())
        apply_retention(conn, now_ns=NOW + 1900 * 24 * HOUR)  # past the daily rollups' 1825 days
        assert conn.execute("SELECT count(*) FROM dash_all").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM dash_names").fetchone() == (0,)
        fts = conn.execute("SELECT count(*) FROM dash_names_fts WHERE dash_names_fts MATCH '\"acct\"'").fetchone()
        assert fts == (0,)
    finally:
        conn.close()
