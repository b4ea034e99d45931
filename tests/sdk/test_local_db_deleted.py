"""The database directory deleted under a running app in local mode (issue #15, item 3).

Before, SQLite kept writing into the deleted file: the spans were reported exported and stored nowhere.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from independent_pricing import cost_nano

from consumers.testing import make_spans
from spendtrace.sdk.export._processor import BatchProcessor
from spendtrace.server.local_export import LocalStoreExporter


def _stored(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        n, cost = conn.execute("SELECT count(*), coalesce(sum(cost_nano), 0) FROM spans").fetchone()
    return int(n), int(cost)


def test_spans_after_the_directory_is_deleted_go_to_a_new_database_and_it_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The next batch finds the file gone: an ERROR line, the database is created again, every later span is in it."""
    db = tmp_path / "data" / "cost.db"
    spans = make_spans(300, seed=60)
    exporter = LocalStoreExporter(db, alerts=False)
    processor = BatchProcessor(exporter, spill_dir=tmp_path / "spill", batch_size=50, fsync=False)
    try:
        processor.extend(spans[:100])
        assert processor.flush(30) == 0
        assert _stored(db)[0] == 100
        shutil.rmtree(db.parent)
        processor.extend(spans[100:])
        assert processor.flush(30) == 0
    finally:
        processor.shutdown()
    assert _stored(db) == (200, cost_nano(spans[100:]))
    assert exporter.reopened == 1
    assert "was deleted (or its directory) before writing a batch; creating it again" in caplog.text


def test_a_batch_written_while_the_file_is_deleted_is_spilled_and_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted between the transaction and its check: the batch is not counted as exported; the replay stores it."""
    caplog.set_level(logging.WARNING)
    db = tmp_path / "data" / "cost.db"
    spans = make_spans(120, seed=61)
    exporter = LocalStoreExporter(db, alerts=False)
    store = exporter._open()
    apply = store.apply_batch
    deleted: list[bool] = []

    def apply_then_delete(*args: Any, **kwargs: Any) -> Any:
        result = apply(*args, **kwargs)
        if not deleted:  # the operator's rm -rf lands right after the first commit
            deleted.append(True)
            shutil.rmtree(db.parent)
        return result

    store.apply_batch = apply_then_delete  # type: ignore[method-assign]
    processor = BatchProcessor(exporter, spill_dir=tmp_path / "spill", batch_size=40, max_delay=0.05, fsync=False)
    try:
        processor.extend(spans)
        assert processor.flush(30) == 0
        deadline = time.monotonic() + 60
        while processor.counters().exported < len(spans):  # the spilled batch is replayed into the new file
            assert time.monotonic() < deadline, f"the spilled batch was not replayed: {processor.counters()}"
            time.sleep(0.02)
    finally:
        processor.shutdown()
    assert _stored(db) == (120, cost_nano(spans))
    assert exporter.reopened == 1 and "while a batch was written" in caplog.text
    assert processor.counters().export_errors == 1
