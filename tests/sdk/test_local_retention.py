"""Local mode applies retention (issue #15, item 5): without workers, the app's exporter runs the rounds."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from independent_pricing import cost_nano

from consumers.testing import make_spans
from spendtrace import SQLiteStorage
from spendtrace.server.local_export import LocalStoreExporter

DAY_NS = 86_400 * 10**9


def test_the_local_exporter_ages_out_raw_spans_and_keeps_the_daily_totals(tmp_path: Path) -> None:
    """Spans older than the raw retention (30 days) are deleted between batches; the day rollups keep their cost."""
    db = tmp_path / "cost.db"
    old = make_spans(200, seed=70, start_ns=time.time_ns() - 40 * DAY_NS)
    new = make_spans(100, seed=71)
    with SQLiteStorage(db) as st:  # kept 60 days when they arrive (at 30, they would be refused as aged)
        st.set_retention(raw_data_days=60)
    first = LocalStoreExporter(db, alerts=False)
    try:
        first.export(old)
    finally:
        first.shutdown()
    with SQLiteStorage(db) as st:
        st.set_retention(raw_data_days=30)
    exporter = LocalStoreExporter(db, alerts=False, retention_chunk_rows=50)
    try:
        for i in range(0, len(new), 10):  # a chunk of at most 50 rows per batch: the round spans several batches
            exporter.export(new[i : i + 10])
    finally:
        exporter.shutdown()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == len(new)
        day_cost = conn.execute("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''").fetchone()[0]
    assert day_cost == cost_nano(old + new)
    assert exporter.retention_runs == 1


def test_local_spans_older_than_the_raw_horizon_sent_again_are_dead_letters_not_counted_twice(tmp_path: Path) -> None:
    """Stored, aged out by a shorter policy, sent again (a spill replayed late): refused with the reason, totals kept.

    Before, the local exporter stored them again and the day rollups counted them twice.
    """
    db = tmp_path / "cost.db"
    old = make_spans(100, seed=72, start_ns=time.time_ns() - 10 * DAY_NS)
    exporter = LocalStoreExporter(db, alerts=False, retention_interval_s=0.0)
    try:
        exporter.export(old)
        with SQLiteStorage(db) as st:
            st.set_retention(raw_data_days=5)
        exporter.export(make_spans(10, seed=73))  # its retention round deletes the old raw spans
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 10
            before = conn.execute("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''").fetchone()[0]
        exporter.export(old)
    finally:
        exporter.shutdown()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 10
        assert conn.execute("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''").fetchone()[0] == before
        reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letters")]
    assert len(reasons) == 100 and all(r.startswith("older than the raw-span retention horizon") for r in reasons)
    assert exporter.dead_lettered == 100


def test_local_spans_dated_over_an_hour_ahead_of_this_host_are_dead_letters(tmp_path: Path) -> None:
    """Spans dated 2099, or 2 h ahead of the host's clock, are kept in dead_letters ('(local)'), the rest stored.

    Before, local mode stored them: spend dated where no dashboard looks, that retention never ages out.
    The worker already refused spans more than an hour ahead of its clock; local mode now does the same.
    """
    db = tmp_path / "cost.db"
    now = time.time_ns()
    good = make_spans(10, seed=74)
    soon = make_spans(2, seed=75, start_ns=now + 30 * 60 * 10**9)  # 30 min ahead: within the hour accepted
    later = make_spans(3, seed=76, start_ns=now + 2 * 3_600 * 10**9)
    year_2099 = make_spans(5, seed=77, start_ns=4_070_908_800 * 10**9)  # 2099-01-01T00:00:00Z
    exporter = LocalStoreExporter(db, alerts=False)
    try:
        exporter.export(good + later + soon + year_2099)
    finally:
        exporter.shutdown()
    with sqlite3.connect(db) as conn:
        stored = {r for (r,) in conn.execute("SELECT span_id FROM spans")}
        dead = conn.execute("SELECT topic, reason FROM dead_letters").fetchall()
    assert stored == {s.span_id for s in good + soon}
    assert len(dead) == 8 and {topic for topic, _ in dead} == {"(local)"}
    assert all(r.startswith("implausible start time") and "ahead of this host's clock" in r for _, r in dead)
    assert sum("h ahead" in r and " 2.0 h ahead" in r for _, r in dead) == 3
    assert exporter.dead_lettered == 8
