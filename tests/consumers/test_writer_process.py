"""The SQLite backend's writer process on real files: typed messages, replays answered without writing."""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import subprocess
from pathlib import Path

import msgspec
import pytest
from independent_pricing import cost_nano

from consumers.testing import make_spans
from consumers.worker import load_price_book
from spendtrace.errors import SchemaVersionError, StorageError, StoreBusyError
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.model.ingest import BatchSummary, DeadLetter, PartitionOffsets, WriteResult
from spendtrace.server.store.base import AsyncIngestStore, IngestStore, open_ingest_store, open_ingest_store_async
from spendtrace.server.store.sqlite._writer import WriterProcess
from spendtrace.server.store.sqlite._writer_protocol import (
    Failed,
    Ready,
    Replayed,
    Retention,
    RetentionDone,
    Stop,
    Write,
    WriterError,
    WriterProtocolError,
    Written,
    decode_reply,
    decode_request,
    encode,
    encode_write,
    error_for,
    failure,
)


def _count(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*), coalesce(sum(cost_nano), 0) FROM spans").fetchone()  # type: ignore[no-any-return]


def _offsets(end: int, first: int = 0) -> list[PartitionOffsets]:
    return [PartitionOffsets("g", "t", 0, first, end)]


def test_writes_a_batch_and_answers_a_replay_with_the_new_spans_only(tmp_path: Path) -> None:
    """A batch is stored with its offsets; a batch overlapping it writes nothing and names its new spans."""
    db = tmp_path / "w.db"
    book = load_price_book(None)
    spans = make_spans(300, seed=3)
    first = prepare_batch(spans[:200], book)
    writer = WriterProcess(str(db))
    writer.start()
    try:
        reply = writer.exchange(encode_write(first, _offsets(200), []))
        assert isinstance(reply, Written)
        result = reply.result
        assert (result.new_spans, result.duplicate_spans, result.cost_nano) == (200, 0, cost_nano(spans[:200]))
        assert _count(db) == (200, cost_nano(spans[:200]))

        overlapping = prepare_batch(spans[100:], book)
        replay = writer.exchange(encode_write(overlapping, _offsets(300, 200), []))
        assert replay == Replayed(frozenset(s.span_id for s in spans[200:]))
        assert _count(db) == (200, cost_nano(spans[:200]))  # rolled back: nothing of the overlapping batch stored
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT next_offset FROM consumer_offsets").fetchall() == [(200,)]

        rest = prepare_batch([s for s in spans[100:] if s.span_id in replay.new_span_ids], book)
        again = writer.exchange(encode_write(rest, _offsets(300, 200), []))
        assert isinstance(again, Written) and again.result.new_spans == 100
        assert _count(db) == (300, cost_nano(spans))
    finally:
        writer.close()
    assert writer.pid is None


def test_a_retention_chunk_is_a_typed_request(tmp_path: Path) -> None:
    """``Retention`` deletes a chunk in the child and answers ``RetentionDone``."""
    writer = WriterProcess(str(tmp_path / "w.db"))
    writer.start()
    try:
        assert writer.request(Retention(now_ns=0, limit=100)) == RetentionDone(deleted=0, done=True)
    finally:
        writer.close()


def test_a_malformed_message_gets_a_typed_error_and_the_child_goes_on(tmp_path: Path) -> None:
    """Garbage bytes, an unknown ``op``, a reply sent as a request and a batch that is not one each raise
    ``WriterProtocolError`` in the parent; the child answers every one and then still writes batches."""
    db = tmp_path / "w.db"
    writer = WriterProcess(str(db))
    writer.start()
    try:
        not_a_batch = encode(Write(b"\x80\x05not a pickle", _offsets(1), []))
        for bad in (b"\xc1garbage", msgspec.msgpack.encode({"op": "drop_tables"}), encode(Ready()), not_a_batch):
            with pytest.raises(WriterProtocolError):
                writer.exchange(bad)
        wrong_type = encode(Write(pickle.dumps({"a": 1}), _offsets(1), []))
        with pytest.raises(WriterProtocolError, match="dict, not a PreparedBatch"):
            writer.exchange(wrong_type)
        batch = prepare_batch(make_spans(10, seed=5), load_price_book(None))
        reply = writer.exchange(encode_write(batch, _offsets(10), []))
        assert isinstance(reply, Written) and reply.result.new_spans == 10
        assert writer.pid is not None
    finally:
        writer.close()
    assert _count(db)[0] == 10


def test_messages_round_trip_and_failures_map_to_typed_errors() -> None:
    """Every message decodes to what was encoded; each failure kind is raised as its own exception class."""
    summary = BatchSummary(frozenset({"search"}), frozenset({"api", "search"}), frozenset({"t"}), frozenset(), 1, 2)
    dead = DeadLetter("t", 1, 7, None, b"\xc1", "bad")
    for message in (Write(b"x", _offsets(5), [dead]), Retention(1, 2), Stop()):
        assert decode_request(encode(message)) == message
    replies = (
        Ready(),
        Written(WriteResult(3, 1, 99, 0, summary)),
        Replayed(frozenset({"a", "b"})),
        RetentionDone(5, False),
        Failed("busy", "database is locked"),
    )
    for reply in replies:
        assert decode_reply(encode(reply)) == reply
    with pytest.raises(WriterProtocolError):
        decode_reply(b"\x93\x01\x02")
    with pytest.raises(WriterProtocolError):
        decode_reply(msgspec.msgpack.encode({"op": "failed", "kind": "meltdown", "message": "?"}))
    with pytest.raises(WriterProtocolError):
        decode_request(encode(Written(WriteResult(0, 0, 0, 0, summary))))  # a reply is no request

    raised = {
        "busy": sqlite3.OperationalError("database is locked"),
        "storage": sqlite3.OperationalError("disk I/O error"),
        "schema_version": SchemaVersionError("newer"),
        "bad_request": WriterProtocolError("garbage"),
        "internal": KeyError("x"),
    }
    expected = {
        "busy": StoreBusyError,
        "storage": StorageError,
        "schema_version": SchemaVersionError,
        "bad_request": WriterProtocolError,
        "internal": WriterError,
    }
    for kind, exc in raised.items():
        f = failure(exc)
        assert f.kind == kind
        assert type(error_for(f)) is expected[kind]
        assert isinstance(error_for(f), StorageError)  # one family for the worker to reason about


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
        writer.exchange(encode_write(batch, [], []))
    writer.close()


def test_the_child_exits_when_the_worker_is_gone(tmp_path: Path) -> None:
    """Closing the worker's end of the socket without a word (as SIGKILL would) makes the child exit."""
    writer = WriterProcess(str(tmp_path / "w.db"))
    writer.start()
    proc = writer._proc
    assert isinstance(proc, subprocess.Popen)
    assert writer._conn is not None
    writer._conn.close()  # no Stop: what the child sees when the worker dies
    assert proc.wait(30) == 0
    writer._conn = None
    writer.close()


async def test_the_async_ingest_store_applies_a_replay_once_without_the_caller_seeing_it(tmp_path: Path) -> None:
    """Through ``open_ingest_store_async``, an overlapping batch stores only its new spans; offsets move with it."""
    db = tmp_path / "w.db"
    book = load_price_book(None)
    spans = make_spans(300, seed=6)
    store = await open_ingest_store_async(db)
    assert isinstance(store, AsyncIngestStore)
    try:
        first = await store.apply_batch(store.stage_batch(prepare_batch(spans[:200], book), _offsets(200)))
        assert (first.new_spans, first.duplicate_spans) == (200, 0)
        dead = DeadLetter("t", 0, 300, b"k", b"\xc1", "undecodable")
        again = await store.apply_batch(store.stage_batch(prepare_batch(spans[100:], book), _offsets(301, 200), [dead]))
        assert (again.new_spans, again.duplicate_spans) == (100, 100)
        assert await store.stored_offsets("g", "t") == {0: 301}
        assert await store.retention_chunk(0, 100) == (0, True)
    finally:
        await store.close()
    assert _count(db) == (300, cost_nano(spans))
    with open_ingest_store(db, readonly=True) as reader:
        assert isinstance(reader, IngestStore)
        assert reader.stored_offsets("g", "t") == {0: 301}
        with pytest.raises(StorageError, match="readonly"):
            reader.apply_batch(prepare_batch(spans[:1], book))
    with sqlite3.connect(db) as conn:
        assert conn.execute('SELECT "offset", reason FROM dead_letters').fetchall() == [(300, "undecodable")]
