"""The worker's writer process on real SQLite files: writes, replays answered without writing, failures named."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from consumers.testing import make_spans
from consumers.worker import load_price_book
from consumers.writer import WriterError, WriterProcess, encode_write
from spendtrace.errors import StorageError
from spendtrace.server.store.sqlite._ingest import ReplayedSpans, prepare_batch


def _count(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*), coalesce(sum(cost_nano), 0) FROM spans").fetchone()  # type: ignore[no-any-return]


def test_writes_a_batch_and_answers_a_replay_with_the_new_spans_only(tmp_path: Path) -> None:
    """A batch is stored with its offsets; a batch overlapping it writes nothing and names its new spans."""
    db = tmp_path / "w.db"
    book = load_price_book(None)
    spans = make_spans(300, seed=3)
    first = prepare_batch(spans[:200], book)
    writer = WriterProcess(str(db))
    writer.start()
    try:
        result = writer.write(encode_write(first, [("g", "t", 0, 200)], []))
        assert (result.new_spans, result.duplicate_spans, result.cost_nano) == (200, 0, first.cost_nano)
        assert _count(db) == (200, first.cost_nano)

        overlapping = prepare_batch(spans[100:], book)
        with pytest.raises(ReplayedSpans) as replay:
            writer.write(encode_write(overlapping, [("g", "t", 0, 300)], []))
        assert replay.value.new_span_ids == {s.span_id for s in spans[200:]}
        assert _count(db) == (200, first.cost_nano)  # rolled back: nothing of the overlapping batch stored
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT next_offset FROM consumer_offsets").fetchall() == [(200,)]

        rest = prepare_batch([s for s in spans[100:] if s.span_id in replay.value.new_span_ids], book)
        assert writer.write(encode_write(rest, [("g", "t", 0, 300)], [])).new_spans == 100
        assert _count(db) == (300, prepare_batch(spans, book).cost_nano)
    finally:
        writer.close()
    assert writer.pid is None


def test_a_database_that_cannot_be_opened_fails_start_with_the_reason(tmp_path: Path) -> None:
    """Starting on a path that is a directory raises the storage error the worker would have raised itself."""
    writer = WriterProcess(str(tmp_path))
    with pytest.raises(StorageError, match="unable to open database file"):
        writer.start()
    assert writer.pid is None  # the child exited after saying why, and was reaped


def test_a_dead_writer_is_reported_not_waited_for(tmp_path: Path) -> None:
    """If the child is killed, the next write raises WriterError instead of hanging."""
    writer = WriterProcess(str(tmp_path / "w.db"))
    writer.start()
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    batch = prepare_batch(make_spans(10, seed=4), load_price_book(None))
    with pytest.raises(WriterError, match=r"died|gone"):
        writer.write(encode_write(batch, [], []))
    writer.close()


def test_the_child_exits_when_the_worker_is_gone(tmp_path: Path) -> None:
    """Closing the worker's end of the socket without a word (as SIGKILL would) makes the child exit."""
    writer = WriterProcess(str(tmp_path / "w.db"))
    writer.start()
    proc = writer._proc
    assert isinstance(proc, subprocess.Popen)
    assert writer._conn is not None
    writer._conn.close()  # no "stop": what the child sees when the worker dies
    assert proc.wait(30) == 0
    writer._conn = None
    writer.close()
