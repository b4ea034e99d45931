"""The checkpoint's steps one by one, against a scripted consumer and an in-memory ingest store (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from consumers.checkpoint import Checkpoint, Fetched
from consumers.config import WorkerConfig
from consumers.histogram import Histogram
from consumers.stats import WorkerStats
from consumers.testing import make_spans
from spendtrace.errors import StorageError, StoreBusyError
from spendtrace.schema import encode_span
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
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import AsyncIngestStore

TOPIC = "t"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class Record(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None


class FakeConsumer:
    """``getmany`` answers from a script; seeks, positions and commits are recorded."""

    def __init__(self, chunks: list[dict[TopicPartition, list[Record]]] | None = None) -> None:
        self.chunks = list(chunks or [])
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.to_beginning: list[TopicPartition] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.fail_commit = False
        self.log: list[str] | None = None
        #: partitions whose committed offset Kafka no longer has (a broker restarted empty)
        self.forgotten: set[TopicPartition] = set()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        return self.chunks.pop(0) if self.chunks else {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.to_beginning.extend(tps)
        return {tp: 5 for tp in tps}  # the log starts past 0 (retention deleted its head)

    async def position(self, tp: TopicPartition) -> int:
        return 0

    async def committed(self, tp: TopicPartition) -> int | None:
        return None if tp in self.forgotten else 1

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.log is not None:
            self.log.append("kafka commit")
        if self.fail_commit:
            raise KafkaConnectionError("broker gone")
        self.commits.append(dict(offsets))


class FakeProducer:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.sent: list[tuple[str, bytes | None]] = []

    async def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None) -> Any:
        self.log.append("dlq")
        self.sent.append((topic, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class MemoryIngestStore:
    """``AsyncIngestStore`` in memory: applies a staged batch once per span id; busy ``busy`` times first."""

    def __init__(
        self,
        log: list[str],
        stored: dict[int, int] | None = None,
        busy: int = 0,
        unconfirmed: dict[int, PartitionOffsets] | None = None,
    ) -> None:
        self.log = log
        self.offsets = dict(stored or {})
        self.unconfirmed = dict(unconfirmed or {})
        #: a store given unconfirmed ranges plays one without atomic batches (contract 4.)
        self.atomic_batches = not unconfirmed
        self.needs_deltas = True
        self.spans: set[str] = set()
        self.busy = busy
        self.staged = 0

    async def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        return dict(self.offsets)

    async def unconfirmed_ranges(self, group: str, topic: str) -> dict[int, PartitionOffsets]:
        return dict(self.unconfirmed)

    def stage_batch(
        self,
        batch: PreparedBatch,
        offsets: Sequence[PartitionOffsets] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> StagedBatch:
        self.staged += 1
        return StagedBatch(batch, tuple(offsets), tuple(dead_letters))

    async def apply_batch(self, staged: StagedBatch) -> WriteResult:
        if self.busy:
            self.busy -= 1
            raise StoreBusyError("database is locked")
        self.log.append("store")
        ids = [s.span_id for s in staged.batch.spans]
        new = [i for i in ids if i not in self.spans]
        self.spans.update(new)
        for o in staged.offsets:
            self.offsets[o.partition] = o.next_offset
        return WriteResult(len(new), len(ids) - len(new), staged.batch.cost_nano, 0, BatchSummary())

    async def retention_chunk(self, now_ns: int, limit: int) -> RetentionProgress:
        return RetentionProgress(0, True)

    async def retention_facts(self) -> RetentionFacts:
        return RetentionFacts(30 * 86_400 * 10**9, None)

    async def close(self) -> None:
        pass


def _checkpoint(
    consumer: FakeConsumer, store: MemoryIngestStore, log: list[str], batch_size: int = 1_000
) -> tuple[Checkpoint, FakeProducer, WorkerStats]:
    assert isinstance(store, AsyncIngestStore)
    producer = FakeProducer(log)
    stats = WorkerStats()
    cfg = WorkerConfig(bootstrap="-", db_path="-", group_id="g", topic=TOPIC, batch_size=batch_size)
    cp = Checkpoint(
        cfg,
        consumer=consumer,  # type: ignore[arg-type]
        producer=producer,  # type: ignore[arg-type]
        store=store,
        book=PriceBook.default(),
        stats=stats,
        commit_seconds=Histogram(),
    )
    return cp, producer, stats


def _records(first: int, values: list[bytes | None]) -> list[Record]:
    return [Record(first + i, b"k", v) for i, v in enumerate(values)]


async def test_seek_puts_each_partition_at_the_stored_offset_or_the_beginning() -> None:
    """Step 5: a partition the store has offsets for is sought there; one it has none for, to the beginning."""
    log: list[str] = []
    consumer = FakeConsumer()
    cp, _, stats = _checkpoint(consumer, MemoryIngestStore(log, stored={0: 40}), log)
    before = cp.generation
    await cp.seek([P0, P1])
    assert consumer.seeks == [(P0, 40), (P1, 5)]
    assert consumer.to_beginning == [P1]
    assert stats.rebalances == 1 and cp.generation > before


async def test_seek_rereads_a_partition_kafka_has_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    """Step 5: a stored offset Kafka holds no commit for (its log is gone) is not trusted: re-read, counted, logged."""
    log: list[str] = []
    consumer = FakeConsumer()
    consumer.forgotten = {P1}
    cp, _, stats = _checkpoint(consumer, MemoryIngestStore(log, stored={0: 40, 1: 70}), log)
    await cp.seek([P0, P1])
    assert consumer.seeks == [(P0, 40), (P1, 5)] and consumer.to_beginning == [P1]  # P1 from its beginning
    assert stats.offset_resets == 1
    assert "partition 1 of t: the store has read it up to offset 70" in caplog.text


async def test_records_below_the_stored_offset_after_the_first_batch_are_a_reset_not_duplicates() -> None:
    """Step 1: once a partition was verified, records going back (an out-of-range reset) are read, and counted."""
    values = [encode_span(s) for s in make_spans(30, seed=2)]
    consumer = FakeConsumer([{P0: _records(10, values[:10])}, {P0: _records(0, values[10:30])}])
    log: list[str] = []
    cp, _, stats = _checkpoint(consumer, MemoryIngestStore(log, stored={0: 10}), log, batch_size=10)
    await cp.seek([P0])
    assert [r.offset for r in (await cp.fetch()).records[P0]] == list(range(10, 20))
    assert [r.offset for r in (await cp.fetch()).records[P0]] == list(range(0, 20))
    assert stats.offset_resets == 1


async def test_seek_moves_no_partition_before_its_last_await() -> None:
    """Step 5 seeks only after everything it awaits: a fetch running during an await must not get records of a
    partition already moved while the checkpoint does not yet expect them (it would drop them for good)."""
    log: list[str] = []
    consumer = FakeConsumer()
    moved_while_awaiting: list[list[tuple[TopicPartition, int]]] = []
    beginning = consumer.beginning_offsets

    async def spy(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        moved_while_awaiting.append(list(consumer.seeks))
        return await beginning(tps)

    consumer.beginning_offsets = spy  # type: ignore[method-assign]
    cp, _, _ = _checkpoint(consumer, MemoryIngestStore(log, stored={0: 40}), log)
    await cp.seek([P0, P1])
    assert moved_while_awaiting == [[]]
    assert consumer.seeks == [(P0, 40), (P1, 5)]


async def test_fetch_takes_only_records_continuing_where_the_store_ends() -> None:
    """Step 1: records before the stored offset are dropped; a first chunk past it is fetched again from it."""
    values = [encode_span(s) for s in make_spans(30, seed=1)]
    consumer = FakeConsumer(
        [
            # P0: Kafka's committed offset was behind the store's (10): records 5-9 are stored already.
            # P1: a chunk from past the stored offset (20 > 12), fetched before the seek: fetched again.
            {P0: _records(5, values[:15]), P1: _records(20, values[15:20])},
            {P1: _records(12, values[20:30])},
        ]
    )
    log: list[str] = []
    cp, _, _ = _checkpoint(consumer, MemoryIngestStore(log, stored={0: 10, 1: 12}), log)
    await cp.seek([P0, P1])
    consumer.seeks.clear()
    fetched = await cp.fetch()
    assert [r.offset for r in fetched.records[P0]] == list(range(10, 20))
    assert [r.offset for r in fetched.records[P1]] == list(range(12, 22))
    assert consumer.seeks == [(P1, 12)]


async def test_an_unconfirmed_range_is_re_formed_exactly_and_each_partition_is_its_own_batch() -> None:
    """Contract 4.: the partition is sought to the range's start, its records held until the range is whole,
    cut at its end (sought back there), and a store without atomic batches gets one batch per partition."""
    values = [encode_span(s) for s in make_spans(40, seed=3)]
    consumer = FakeConsumer(
        [
            {P0: _records(10, values[0:6]), P1: _records(0, values[20:25])},  # P0's range [10, 18) not whole yet
            {P0: _records(16, values[6:14])},  # completes it, and goes past its end
        ]
    )
    log: list[str] = []
    store = MemoryIngestStore(log, stored={0: 10, 1: 0}, unconfirmed={0: PartitionOffsets("g", TOPIC, 0, 10, 18)})
    cp, _, _ = _checkpoint(consumer, store, log)
    await cp.seek([P0, P1])
    assert consumer.seeks == [(P0, 10), (P1, 0)]
    consumer.seeks.clear()
    fetched = await cp.fetch()
    assert [r.offset for r in fetched.records[P0]] == list(range(10, 18))
    assert consumer.seeks == [(P0, 18)]  # the records past the range come again, in the next batch
    batch = await cp.prepare(fetched)
    assert batch is not None and len(batch.parts) == 2 and store.staged == 2
    assert sorted(o for part in batch.parts for o in part.offsets) == [
        PartitionOffsets("g", TOPIC, 0, 10, 18),
        PartitionOffsets("g", TOPIC, 1, 0, 5),
    ]
    result = await cp.write(batch)
    assert (result.new_spans, batch.spans, batch.commit) == (13, 13, {P0: 18, P1: 5})
    assert store.offsets == {0: 18, 1: 5}


async def test_prepare_dead_letters_what_does_not_decode_and_stages_the_rest_with_offsets() -> None:
    """Step 2: garbage becomes dead letters with a reason; offsets name each partition's first and next record."""
    spans = make_spans(8, seed=2)
    good = [encode_span(s) for s in spans]
    data = {P0: _records(100, [*good[:4], b"\xc1garbage"]), P1: _records(7, [None, *good[4:]])}
    log: list[str] = []
    store = MemoryIngestStore(log)
    cp, _, _ = _checkpoint(FakeConsumer(), store, log)
    batch = await cp.prepare(Fetched(data, cp.generation))
    assert batch is not None and store.staged == 1
    assert (batch.spans, batch.messages) == (8, 10)
    assert {(d.partition, d.offset) for d in batch.dead} == {(0, 104), (1, 7)}
    assert all(d.reason for d in batch.dead)
    assert batch.staged.offsets == (PartitionOffsets("g", TOPIC, 0, 100, 105), PartitionOffsets("g", TOPIC, 1, 7, 12))
    assert batch.commit == {P0: 105, P1: 12}
    assert [s.span_id for s in batch.staged.batch.spans] == [s.span_id for s in spans]


async def test_a_batch_prepared_across_a_rebalance_is_dropped() -> None:
    """Step 2 returns nothing when partitions were revoked while it ran: the next owner seeks to the store."""
    log: list[str] = []
    cp, _, _ = _checkpoint(FakeConsumer(), MemoryIngestStore(log), log)
    fetched = Fetched({P0: _records(0, [encode_span(make_spans(1)[0])])}, cp.generation)
    cp.revoke()
    assert await cp.prepare(fetched) is None


async def test_write_publishes_dead_letters_first_retries_a_busy_store_then_kafka_commits_after() -> None:
    """Steps 3-4: DLQ before the store (at least once), StoreBusyError retried, Kafka commit only after the store."""
    log: list[str] = []
    consumer = FakeConsumer()
    consumer.log = log
    store = MemoryIngestStore(log, busy=2)
    cp, producer, stats = _checkpoint(consumer, store, log)
    data = {P0: _records(0, [b"\xc1", *[encode_span(s) for s in make_spans(5, seed=3)]])}
    batch = await cp.prepare(Fetched(data, cp.generation))
    assert batch is not None
    result = await cp.write(batch)
    await cp.commit(batch, result)
    assert log == ["dlq", "store", "kafka commit"]
    assert stats.db_retries == 2 and result.new_spans == 5
    assert store.offsets == {0: 6} and consumer.commits == [{P0: 6}]
    assert (stats.batches, stats.messages, stats.spans, stats.stored, stats.dead_letters) == (1, 6, 5, 5, 1)
    assert producer.sent == [(cp.config.dlq_topic, b"\xc1")]


async def test_a_failed_kafka_commit_is_counted_and_the_store_stays_the_truth() -> None:
    """Step 4: Kafka refusing the commit does not fail the batch; the next seek uses the store's offsets."""
    log: list[str] = []
    consumer = FakeConsumer()
    consumer.fail_commit = True
    store = MemoryIngestStore(log)
    cp, _, stats = _checkpoint(consumer, store, log)
    batch = await cp.prepare(Fetched({P0: _records(0, [encode_span(make_spans(1)[0])])}, cp.generation))
    assert batch is not None
    await cp.commit(batch, await cp.write(batch))
    assert stats.kafka_commit_failures == 1 and stats.batches == 1
    await cp.seek([P0])
    assert consumer.seeks[-1] == (P0, 1)


async def test_a_store_failure_other_than_busy_is_raised_at_once() -> None:
    """Step 3: a real storage error is not retried; the worker stops with nothing of the batch stored."""
    log: list[str] = []

    class Broken(MemoryIngestStore):
        async def apply_batch(self, staged: StagedBatch) -> WriteResult:
            self.log.append("store")
            raise StorageError("disk I/O error")

    cp, _, stats = _checkpoint(FakeConsumer(), Broken(log), log)
    batch = await cp.prepare(Fetched({P0: _records(0, [encode_span(make_spans(1)[0])])}, cp.generation))
    assert batch is not None
    with pytest.raises(StorageError, match="disk"):
        await cp.write(batch)
    assert log == ["store"] and stats.db_retries == 0


async def test_a_store_without_atomic_batches_fetches_batch_size_per_partition_and_gets_one_unit_each() -> None:
    """Step 1 takes up to ``batch_size`` records per assigned partition for such a store (each partition's
    records are one insert of their own), and step 2 hands them over one partition at a time; an atomic
    store's fetch stays bounded by ``batch_size`` in all."""
    values = [encode_span(s) for s in make_spans(40, seed=4)]
    chunks = [{P0: _records(0, values[0:10])}, {P1: _records(0, values[20:30])}]
    log: list[str] = []
    store = MemoryIngestStore(log, stored={0: 0, 1: 0}, unconfirmed={5: PartitionOffsets("g", TOPIC, 5, 0, 1)})
    cp, _, _ = _checkpoint(FakeConsumer([dict(c) for c in chunks]), store, log, batch_size=10)
    await cp.seek([P0, P1])
    fetched = await cp.fetch()
    assert {tp: len(r) for tp, r in fetched.records.items()} == {P0: 10, P1: 10}
    units = cp.units(fetched)
    assert [list(u.records) for u in units] == [[P0], [P1]]
    batches = [await cp.prepare(u) for u in units]
    assert [b.commit for b in batches if b is not None] == [{P0: 10}, {P1: 10}]

    atomic = MemoryIngestStore(log, stored={0: 0, 1: 0})
    cp, _, _ = _checkpoint(FakeConsumer([dict(c) for c in chunks]), atomic, log, batch_size=10)
    await cp.seek([P0, P1])
    fetched = await cp.fetch()
    assert {tp: len(r) for tp, r in fetched.records.items()} == {P0: 10}
    assert cp.units(fetched) == [fetched]


async def test_records_past_the_stored_offset_after_the_first_batch_are_a_gap_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Step 1: Kafka's log starting past the stored offset (retention deleted 20-49 unstored): ERROR, counted, read on.

    Before, the gap was accepted silently: 30 messages lost with no log line and no metric.
    """
    values = [encode_span(s) for s in make_spans(20, seed=3)]
    consumer = FakeConsumer([{P0: _records(10, values[:10])}, {P0: _records(50, values[10:20])}])
    log: list[str] = []
    cp, _, stats = _checkpoint(consumer, MemoryIngestStore(log, stored={0: 10}), log, batch_size=10)
    await cp.seek([P0])
    assert [r.offset for r in (await cp.fetch()).records[P0]] == list(range(10, 20))
    assert [r.offset for r in (await cp.fetch()).records[P0]] == list(range(50, 60))
    assert (stats.offset_gaps, stats.offsets_lost, stats.offset_resets) == (1, 30, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].startswith("partition 0 of t: offsets 20 to 49 (30 messages) are no longer in Kafka")
