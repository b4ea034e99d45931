"""Local mode applies retention (issue #15, item 5): without workers, the app's exporter runs the rounds."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from consumers.testing import make_spans
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.local_export import LocalStoreExporter
from spendtrace.server.pricing import current_book

DAY_NS = 86_400 * 10**9


def test_the_local_exporter_ages_out_raw_spans_and_keeps_the_daily_totals(tmp_path: Path) -> None:
    """Spans older than the raw retention (30 days) are deleted between batches; the day rollups keep their cost."""
    db = tmp_path / "cost.db"
    old = make_spans(200, seed=70, start_ns=time.time_ns() - 40 * DAY_NS)
    new = make_spans(100, seed=71)
    exporter = LocalStoreExporter(db, alerts=False, retention_chunk_rows=50)
    try:
        exporter.export(old)
        for i in range(0, len(new), 10):  # a chunk of at most 50 rows per batch: the round spans several batches
            exporter.export(new[i : i + 10])
    finally:
        exporter.shutdown()
    book = current_book()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == len(new)
        day_cost = conn.execute("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''").fetchone()[0]
    assert day_cost == prepare_batch(old + new, book).cost_nano
    assert exporter.retention_runs == 1
