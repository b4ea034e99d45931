"""The SQLite ingest stores: ``IngestStore`` on one connection, ``AsyncIngestStore`` on a writer process.

How SQLite keeps the effectively-once contract (``spendtrace.server.store.base``): a batch's spans
(``INSERT OR IGNORE`` on ``span_id``), the deltas of the spans that were new, its dead letters and
the offsets it reaches are written in one ``BEGIN IMMEDIATE`` transaction (``_ingest``), so a batch
is applied entirely or not at all and a replay adds nothing. ``stored_offsets`` reads what the last
committed batch stored.

The asyncio store hands each batch to the worker's writer process (``_writer``), on another core.
The batch crosses without its spans; if some were stored already the child writes nothing and
answers ``Replayed`` with the new ones, and this store (which has the spans) prepares those again
and sends them: the same result ``_ingest`` computes in one process, and no caller ever sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Sequence

from spendtrace.errors import StorageError, StoreBusyError
from spendtrace.server.ingest.horizon import aged_dead_letters
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.model.ingest import (
    DeadLetter,
    PartitionOffsets,
    PreparedBatch,
    RetentionFacts,
    RetentionProgress,
    StagedBatch,
    WriteResult,
)
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import read_offsets, write_batch_sync
from spendtrace.server.store.sqlite._retention import apply_retention_chunk, read_retention_facts
from spendtrace.server.store.sqlite._writer import WriterProcess
from spendtrace.server.store.sqlite._writer_protocol import (
    Aged,
    Replayed,
    Retention,
    RetentionDone,
    WriterProtocolError,
    Written,
    encode_write,
)

__all__ = ["AsyncSQLiteIngestStore", "SQLiteIngestStore", "storage_error"]

#: Sends of one batch whose spans another writer keeps storing meanwhile, before giving up.
_REPLAY_ATTEMPTS = 12


def storage_error(exc: sqlite3.Error) -> StorageError:
    """The storage interface's error for a driver error: ``StoreBusyError`` when another writer held the lock."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return StoreBusyError(text)
    return StorageError(text)


def _offset_rows(offsets: Sequence[PartitionOffsets]) -> list[tuple[str, str, int, int]]:
    return [(o.group, o.topic, o.partition, o.next_offset) for o in offsets]


class SQLiteIngestStore:
    """``IngestStore`` on one ``sqlite3`` connection (thread-safe: calls are serialised).

    ``readonly=True`` opens an existing file at the current schema without writing to it
    (``stored_offsets`` only); anything else raises ``StorageError``.
    """

    #: one transaction per batch: never half applied, so no range to re-form (contract 4.)
    atomic_batches = True
    #: the rollups, fully-loaded and request tables are written from ``prepare_batch``'s deltas
    needs_deltas = True

    def __init__(self, db_path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.db_path = os.fspath(db_path)
        self._conn = connect(self.db_path, readonly=readonly, check_same_thread=False)
        self._lock = threading.Lock()

    def unconfirmed_ranges(self, group: str, topic: str) -> dict[int, PartitionOffsets]:
        """Always empty: a batch commits whole or not at all."""
        return {}

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's connection, for the local alert evaluation (``spendtrace.server.alerts.local``), which
        still takes one; use it under the same serialisation as the store's calls."""
        return self._conn

    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        """partition -> next offset, as stored with the last committed batch of ``group``."""
        with self._lock:
            try:
                return read_offsets(self._conn, group, topic)
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    def apply_batch(
        self,
        batch: PreparedBatch,
        offsets: Sequence[PartitionOffsets] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> WriteResult:
        """Spans, new deltas, dead letters and offsets in one transaction (``_ingest.write_batch_sync``)."""
        with self._lock:
            try:
                return write_batch_sync(self._conn, batch, offsets=_offset_rows(offsets), dead_letters=dead_letters)
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    def retention_chunk(self, now_ns: int, limit: int) -> RetentionProgress:
        """One short retention transaction (``_retention.apply_retention_chunk``)."""
        with self._lock:
            try:
                return RetentionProgress(*apply_retention_chunk(self._conn, now_ns, limit=limit))
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    def retention_facts(self) -> RetentionFacts:
        """The raw-span retention and the newest stored span start (``_retention.read_retention_facts``)."""
        with self._lock:
            try:
                return RetentionFacts(*read_retention_facts(self._conn))
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __enter__(self) -> SQLiteIngestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSQLiteIngestStore:
    """``AsyncIngestStore``: batches and retention chunks run in a writer process, offsets read here.

    ``start()`` (``open_store``'s async opener calls it) starts the writer, which creates or migrates
    the file, then opens a connection of this process for ``stored_offsets``, read outside the
    writer's transactions.
    """

    #: one transaction per batch in the writer process (contract 4. does not apply)
    atomic_batches = True
    #: the rollups, fully-loaded and request tables are written from ``prepare_batch``'s deltas
    needs_deltas = True

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.db_path = os.fspath(db_path)
        self._writer = WriterProcess(self.db_path)
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id while it runs."""
        return self._writer.pid

    async def start(self) -> None:
        """Start the writer process (the database is open when it answers) and the offsets connection."""
        await asyncio.to_thread(self._writer.start)
        try:
            self._reader = await asyncio.to_thread(connect, self.db_path, check_same_thread=False)
        except BaseException:
            await asyncio.to_thread(self._writer.close)
            raise

    async def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        """partition -> next offset, as stored with the last committed batch of ``group``."""
        return await asyncio.to_thread(self._read_offsets, group, topic)

    async def unconfirmed_ranges(self, group: str, topic: str) -> dict[int, PartitionOffsets]:
        """Always empty: a batch commits whole or not at all."""
        return {}

    def _read_offsets(self, group: str, topic: str) -> dict[int, int]:
        with self._read_lock:
            if self._reader is None:
                raise StorageError("the ingest store is closed")
            try:
                return read_offsets(self._reader, group, topic)
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    def stage_batch(
        self,
        batch: PreparedBatch,
        offsets: Sequence[PartitionOffsets] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> StagedBatch:
        """The writer's ``Write`` message for ``batch``, encoded here (in the caller's thread)."""
        if not batch.deltas:
            raise ValueError("SQLite stores write prepare_batch's deltas: prepare the batch with deltas=True")
        offsets, dead_letters = tuple(offsets), tuple(dead_letters)
        return StagedBatch(batch, offsets, dead_letters, encode_write(batch, offsets, dead_letters))

    async def apply_batch(self, staged: StagedBatch) -> WriteResult:
        """One transaction in the writer process; a replay is answered by sending the new spans alone.

        ``StoreBusyError``: another writer held the database past the busy timeout and nothing was
        written; the caller retries the same staged batch.
        """
        payload = staged.payload
        if not isinstance(payload, bytes):  # staged by another store: stage it for this one
            payload = self.stage_batch(staged.batch, staged.offsets, staged.dead_letters).payload
        for _ in range(_REPLAY_ATTEMPTS):
            reply = await asyncio.to_thread(self._writer.exchange, payload)
            match reply:
                case Written(result=result):
                    return result
                case Replayed(new_span_ids=new_ids):
                    payload = await asyncio.to_thread(_replay_payload, staged, new_ids)
                case Aged(span_ids=aged_ids, cutoff_ns=cutoff):
                    staged = await asyncio.to_thread(_without_aged, staged, aged_ids, cutoff)
                    payload = staged.payload
                case _:
                    raise WriterProtocolError(f"the writer answered a write with {type(reply).__name__}")
        raise StorageError(
            f"another writer kept storing this batch's spans while it was sent; gave up after {_REPLAY_ATTEMPTS}"
        )

    async def retention_chunk(self, now_ns: int, limit: int) -> RetentionProgress:
        """One retention chunk in the writer process, between batches."""
        reply = await asyncio.to_thread(self._writer.request, Retention(now_ns, limit))
        match reply:
            case RetentionDone(deleted=deleted, done=done):
                return RetentionProgress(deleted, done)
            case _:
                raise WriterProtocolError(f"the writer answered a retention chunk with {type(reply).__name__}")

    async def retention_facts(self) -> RetentionFacts:
        """The raw-span retention and the newest stored span start, read on this process's connection."""
        return await asyncio.to_thread(self._read_facts)

    def _read_facts(self) -> RetentionFacts:
        with self._read_lock:
            if self._reader is None:
                raise StorageError("the ingest store is closed")
            try:
                return RetentionFacts(*read_retention_facts(self._reader))
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    async def close(self) -> None:
        """Stop the writer process (after a request in flight) and close the offsets connection."""
        await asyncio.to_thread(self._writer.close)
        with self._read_lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.close()


def _without_aged(staged: StagedBatch, aged_ids: frozenset[str], cutoff_ns: int) -> StagedBatch:
    """``staged`` prepared again without the spans the writer found older than the applied cutoff; those
    become dead letters of the same write (``horizon.aged_dead_letters``)."""
    original = staged.batch
    if original.detached:
        raise StorageError("a batch with aged spans was staged without its spans; it cannot be prepared again")
    kept = [s for s in original.spans if s.span_id not in aged_ids]
    again = prepare_batch(kept, original.book)
    again.duplicates_in_batch = original.duplicates_in_batch
    aged = [s for s in original.spans if s.span_id in aged_ids]
    dead = (*staged.dead_letters, *aged_dead_letters(aged, cutoff_ns, time.time_ns()))
    return StagedBatch(again, staged.offsets, dead, encode_write(again, staged.offsets, dead))


def _replay_payload(staged: StagedBatch, new_ids: frozenset[str]) -> bytes:
    """The ``Write`` message for the spans of ``staged`` the store did not have, priced again."""
    original = staged.batch
    if original.detached:
        raise StorageError("a replayed batch was staged without its spans; it cannot be prepared again")
    new = [s for s in original.spans if s.span_id in new_ids]
    again = prepare_batch(new, original.book)
    again.duplicates_in_batch = original.duplicates_in_batch + len(original.spans) - len(new)
    return encode_write(again, staged.offsets, staged.dead_letters)
