"""The ClickHouse ingest stores: ``IngestStore`` on one client, ``AsyncIngestStore`` on the same in a thread.

How ClickHouse keeps the storage interface's effectively-once contract (``store.base``, points 3 and 4;
the write itself is ``_ingest.write_batch``): a batch's identity is its Kafka ranges, and its token
``kafka_token(group, ranges)``. ``apply_batch``

1. records the batch's ranges in ``batch_ranges`` (begun), before anything else;
2. inserts its spans with the token (every view's target deduplicates on it), then its dead letters;
3. stores the offsets reached in ``consumer_offsets`` (done).

A crash after 1. leaves a range that ``unconfirmed_ranges`` reports; the worker re-forms exactly that
batch (one partition per batch, ``atomic_batches = False``), whose replay 2. drops in each table that
has it and completes the others. A batch with no offsets (the local exporter, tools) is identified
by its span ids (``spans_token``) and records no range.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from spendtrace.server.model.ingest import (
    BatchSummary,
    DeadLetter,
    PartitionOffsets,
    PreparedBatch,
    RetentionFacts,
    RetentionProgress,
    StagedBatch,
    WriteResult,
)
from spendtrace.server.store.clickhouse._client import Conn, connect
from spendtrace.server.store.clickhouse._horizon import read_retention_facts
from spendtrace.server.store.clickhouse._ingest import (
    kafka_token,
    read_offsets,
    read_unconfirmed,
    record_ranges,
    write_batch,
)
from spendtrace.server.store.clickhouse._retention import retention_chunk

__all__ = ["AsyncClickHouseIngestStore", "ClickHouseIngestStore"]


def batch_token(offsets: Sequence[PartitionOffsets]) -> str | None:
    """The token of a batch formed from these Kafka ranges (None when it came from no records)."""
    if not offsets:
        return None
    groups = {o.group for o in offsets}
    if len(groups) != 1:
        raise ValueError(f"a batch's offsets belong to one consumer group, got {sorted(groups)}")
    return kafka_token(groups.pop(), [(o.topic, o.partition, o.first_offset, o.next_offset - 1) for o in offsets])


class ClickHouseIngestStore:
    """``IngestStore`` on ClickHouse or chDB (one ``clickhouse_connect`` client; calls serialised)."""

    #: a batch spans several tables with no transaction: a half-applied one is completed by its replay
    atomic_batches = False
    #: the materialized views derive every rollup from the span rows: batches need no Python deltas
    needs_deltas = False

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self._conn: Conn = connect(url, readonly=readonly)

    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        """partition -> next offset, as stored after the last batch of ``group`` was applied whole."""
        return read_offsets(self._conn, group, topic)

    def unconfirmed_ranges(self, group: str, topic: str) -> dict[int, PartitionOffsets]:
        """partition -> the range of the batch begun last and not done (its offsets not stored after it)."""
        return {
            p: PartitionOffsets(group, topic, p, first, nxt)
            for p, (first, nxt) in read_unconfirmed(self._conn, group, topic).items()
        }

    def apply_batch(
        self,
        batch: PreparedBatch,
        offsets: Sequence[PartitionOffsets] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> WriteResult:
        """Record the ranges, insert the rows under the batch's token, then store the offsets (module docstring)."""
        token = batch_token(offsets)
        if token is not None:
            ranges = [(o.group, o.topic, o.partition, o.first_offset, o.next_offset) for o in offsets]
            record_ranges(self._conn, token, ranges)
        written = write_batch(
            self._conn,
            batch,
            token=token,
            offsets=[(o.group, o.topic, o.partition, o.next_offset) for o in offsets],
            dead_letters=list(dead_letters),
        )
        return WriteResult(
            new_spans=written.new_spans,
            # a replay's spans were counted by its first attempt: here they are duplicates
            duplicate_spans=written.duplicate_spans + written.replayed_spans,
            cost_nano=written.cost_nano,
            unpriced_items=written.unpriced_items,
            touched=batch.summary if written.new_spans else BatchSummary(),
        )

    def retention_chunk(self, now_ns: int, limit: int) -> RetentionProgress:
        """One bounded retention step (``_retention.retention_chunk``)."""
        return RetentionProgress(*retention_chunk(self._conn, now_ns, limit))

    def retention_facts(self) -> RetentionFacts:
        """The raw-span retention and the newest stored span start (``_horizon.read_retention_facts``)."""
        return read_retention_facts(self._conn)

    def close(self) -> None:
        """Close the client."""
        self._conn.close()

    def __enter__(self) -> ClickHouseIngestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClickHouseIngestStore:
    """``AsyncIngestStore`` for the workers: the synchronous store's calls in a thread, one at a time.

    (``clickhouse-connect``'s async client does not drive chDB; a thread keeps one code path, and the
    server does the work, so the worker's event loop only waits.)
    """

    atomic_batches = False
    #: the materialized views derive every rollup from the span rows: batches need no Python deltas
    needs_deltas = False

    def __init__(self, store: ClickHouseIngestStore) -> None:
        self._store = store
        self.url = store.url

    @classmethod
    async def open(cls, url: str) -> AsyncClickHouseIngestStore:
        """Connect (creating or migrating the database) off the event loop."""
        return cls(await asyncio.to_thread(ClickHouseIngestStore, url))

    async def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        """``ClickHouseIngestStore.stored_offsets``."""
        return await asyncio.to_thread(self._store.stored_offsets, group, topic)

    async def unconfirmed_ranges(self, group: str, topic: str) -> dict[int, PartitionOffsets]:
        """``ClickHouseIngestStore.unconfirmed_ranges``."""
        return await asyncio.to_thread(self._store.unconfirmed_ranges, group, topic)

    def stage_batch(
        self,
        batch: PreparedBatch,
        offsets: Sequence[PartitionOffsets] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> StagedBatch:
        """Nothing to encode ahead: the client serialises the columns when it inserts."""
        return StagedBatch(batch, tuple(offsets), tuple(dead_letters))

    async def apply_batch(self, staged: StagedBatch) -> WriteResult:
        """``ClickHouseIngestStore.apply_batch`` in a thread."""
        return await asyncio.to_thread(self._store.apply_batch, staged.batch, staged.offsets, staged.dead_letters)

    async def retention_chunk(self, now_ns: int, limit: int) -> RetentionProgress:
        """``ClickHouseIngestStore.retention_chunk`` in a thread."""
        return await asyncio.to_thread(self._store.retention_chunk, now_ns, limit)

    async def retention_facts(self) -> RetentionFacts:
        """``ClickHouseIngestStore.retention_facts`` in a thread."""
        return await asyncio.to_thread(self._store.retention_facts)

    async def close(self) -> None:
        """Close the client."""
        await asyncio.to_thread(self._store.close)
