"""The effectively-once protocol of one consumer-group member, in one place (quixstreams' "checkpoint").

Every batch goes through the same named steps; the worker (``consumers.worker``) only decides when
to call them (it prepares batch N+1 while batch N is written):

1. ``fetch``   up to ``batch_size`` records (per partition for a store without atomic batches),
               each partition's continuing exactly where the store's data for it ends (records
               fetched before a seek are dropped or fetched again);
2. ``prepare`` decode (an undecodable message becomes a dead letter), price and compute every delta
               with ``spendtrace.server.ingest.prepare`` (pure), and stage the result for the store,
               all in a thread; a batch fetched before a rebalance is dropped here;
3. ``write``   publish the dead letters to the DLQ topic (at least once), then apply the batch with
               the offsets it reaches to the store (``AsyncIngestStore.apply_batch``: at most once,
               replays recognised); a busy store is retried with backoff;
4. ``commit``  the same offsets to Kafka, only after the store has them; a failed commit is counted
               and skipped, since the store holds the truth;
5. ``seek``    on every assignment, once the batches in flight are written, each partition to the
               offset the store holds (``stored_offsets``), the beginning if it holds none, or if
               Kafka no longer knows the log those offsets counted (see ``Checkpoint.seek``).

For a store whose batches are not atomic (``atomic_batches`` False: ClickHouse; contract 4. of the
storage interface) two rules keep a replay identical to the batch it repeats: step 2 stages each
partition's records as a batch of its own (``Batch.rest``), and step 5 asks the store for the ranges
it began and did not confirm (``unconfirmed_ranges``), seeks each to its first offset and step 1 then
holds that partition's records until exactly that range is fetched (``_exact``), cutting off the rest.

A crash between any two steps loses nothing and counts nothing twice: before step 3 nothing is
stored and the records are fetched again after the restart's seek; from step 3 on the store has
them, and a replay of them adds nothing; Kafka's offsets can only lag the store's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumers.config import WorkerConfig
from consumers.dlq import DeadLetter, publish_dead_letters
from consumers.histogram import Histogram
from consumers.stats import WorkerStats
from spendtrace.errors import StoreBusyError
from spendtrace.schema import EARLIEST_START_NS, Span, decode_span
from spendtrace.server.ingest.horizon import MAX_CLOCK_AHEAD_NS, aged_reason, ahead_reason, ingest_horizon_ns
from spendtrace.server.ingest.prepare import prepare_batch, prepare_isolating
from spendtrace.server.model.ingest import (
    BatchSummary,
    PartitionOffsets,
    PreparedBatch,
    RetentionFacts,
    StagedBatch,
    WriteResult,
)
from spendtrace.server.store.base import AsyncIngestStore

__all__ = [
    "CRASH_ENV",
    "EARLIEST_START_NS",
    "MAX_CLOCK_AHEAD_NS",
    "MAX_FETCH_PARTITIONS",
    "Batch",
    "Checkpoint",
    "CrashPoints",
    "Fetched",
]

log = logging.getLogger(__name__)

#: Test hook: ``SPENDTRACE_CRASH_AT=point:n`` SIGKILLs the worker the n-th time it reaches ``point``
#: (``after_decode``: end of step 2, ``after_db_commit``: of step 3, ``after_kafka_commit``: of step 4),
#: so fault tests can kill it exactly between two steps.
CRASH_ENV = "SPENDTRACE_CRASH_AT"

#: Records parsed per ``getmany`` call while a batch is assembled (see ``Checkpoint.fetch``).
FETCH_CHUNK = 5_000

#: Partitions' shares of ``batch_size`` one fetch may take for a store without atomic batches
#: (``Checkpoint._fetch_limit``): 120,000 records at the default size, a few hundred MB decoded.
MAX_FETCH_PARTITIONS = 6

#: Seconds a Kafka offset commit may take before the worker moves on without it.
KAFKA_TIMEOUT = 10.0

#: Applications of one batch while the store is busy (another worker holds it), before giving up.
_BUSY_ATTEMPTS = 12


class CrashPoints:
    """SIGKILL this process the n-th time a named point is reached (``CRASH_ENV``); no-op when unset."""

    def __init__(self, spec: str | None) -> None:
        self.point, self.remaining = "", 0
        if spec:
            point, _, n = spec.partition(":")
            self.point, self.remaining = point, int(n or 1)

    def reached(self, point: str) -> None:
        """Count one arrival at ``point``; the last one allowed kills the process."""
        if point == self.point:
            self.remaining -= 1
            if self.remaining <= 0:
                log.warning("crash point %s reached: SIGKILL", point)
                os.kill(os.getpid(), signal.SIGKILL)


@dataclass(slots=True)
class Fetched:
    """Step 1's records, per partition, and the rebalance generation they were fetched in."""

    records: dict[TopicPartition, list[Any]]
    generation: int


@dataclass(slots=True)
class Batch:
    """Step 2's result: one batch decoded, priced and staged for the store, with what to commit to Kafka."""

    #: the prepared batch with its offsets and dead letters, made ready for the store in the pricing thread
    staged: StagedBatch
    spans: int
    messages: int
    commit: dict[TopicPartition, int]
    #: further partitions' batches, applied after ``staged`` (a store without atomic batches: one per partition)
    rest: tuple[StagedBatch, ...] = ()

    @property
    def parts(self) -> tuple[StagedBatch, ...]:
        """Every staged batch to apply, in order."""
        return (self.staged, *self.rest)

    @property
    def dead(self) -> tuple[DeadLetter, ...]:
        """The batch's messages that became dead letters."""
        return tuple(d for part in self.parts for d in part.dead_letters)


class Checkpoint:
    """The steps of the protocol for one group member (see the module docstring), over its clients and store.

    ``rebalance_listener(settle)`` is what the consumer subscribes with; ``settle`` waits until the
    batches taken so far are written and committed.
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        store: AsyncIngestStore,
        book: Any,
        stats: WorkerStats,
        commit_seconds: Histogram,
        crash: CrashPoints | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        #: this worker's wall clock (epoch ns), the authority for dating spans; tests inject one
        self.clock = clock
        #: the store's retention facts as last read (``refresh_facts``); None: no horizon known yet
        self.facts: RetentionFacts | None = None
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.book = book
        self.stats = stats
        self.commit_seconds = commit_seconds
        self.crash = crash or CrashPoints(None)
        #: bumped when partitions are revoked or assigned: work fetched before is dropped
        self.generation = 0
        #: partition -> offset the next batch must start at (from the store on assignment)
        self._next: dict[TopicPartition, int] = {}
        #: partitions whose first batch since assignment has not been checked against the seek yet
        self._unverified: set[TopicPartition] = set()
        #: partition -> end of the unconfirmed range its next batch must be re-formed from (contract 4.)
        self._replay: dict[TopicPartition, int] = {}
        #: records of a partition in ``_replay``, held until its whole range is fetched
        self._held: dict[TopicPartition, list[Any]] = {}

    # -- 1. fetch ----------------------------------------------------------------------------------

    async def fetch(self) -> Fetched:
        """Up to ``batch_size`` records (what arrives within ``poll_timeout_ms``, then what is already fetched).

        Taken ``FETCH_CHUNK`` records at a time, yielding to the event loop between chunks: parsing
        records is CPU work, and the write task must not wait for all of it to hand the previous
        batch to the store. Chunks taken before a rebalance are dropped: the assignment sought every
        partition back to its stored offset.
        """
        consumer, cfg = self.consumer, self.config
        out: dict[TopicPartition, list[Any]] = {}
        taken = 0
        timeout = cfg.poll_timeout_ms
        generation = self.generation
        limit = self._fetch_limit()
        while taken < limit:
            if timeout == 0:
                await asyncio.sleep(0)  # between chunks: the write task may hand over the previous batch
            chunk = await consumer.getmany(timeout_ms=timeout, max_records=min(FETCH_CHUNK, limit - taken))
            if generation != self.generation:  # a rebalance ran during the awaits above
                out, taken, generation = {}, 0, self.generation
            if not chunk:
                break
            for tp, records in self._contiguous(chunk).items():
                out.setdefault(tp, []).extend(records)
                taken += len(records)
            timeout = 0
        return Fetched(out, generation)

    def _fetch_limit(self) -> int:
        """Records one fetch may take: ``batch_size``, or per assigned partition for a store without atomic batches.

        Such a store gets each partition's records as a batch (an insert) of its own (step 2), and an
        insert's cost is mostly per insert (ClickHouse writes a part in ``spans`` and in every view's
        target: about 55 ms for 10 tables on chDB here, whatever the rows), so ``batch_size`` bounds
        each partition's share rather than the sum: with 6 partitions and 20,000 records the inserts
        were 3,333 rows and the worker 0.26x a bare insert of 20,000-row blocks. At most
        ``MAX_FETCH_PARTITIONS`` shares, to bound the memory of a worker owning many partitions.
        """
        if self.store.atomic_batches:
            return self.config.batch_size
        return self.config.batch_size * min(max(1, len(self._next)), MAX_FETCH_PARTITIONS)

    def _contiguous(self, data: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Keep only records that continue exactly where this member's stored data ends, per partition.

        Records fetched before an assignment's seek (from Kafka's committed offset or the reset policy)
        may start elsewhere; a batch must never start past the stored offset (it would skip messages)
        and records before it are already stored. Later gaps (compaction) are accepted after one re-seek.
        """
        out: dict[TopicPartition, list[Any]] = {}
        for tp, records in data.items():
            expected = self._next.get(tp)
            if not records or expected is None:
                continue  # not (or no longer) ours
            first = records[0].offset
            if first < expected and tp not in self._unverified:
                # Past the first batch, only an out-of-range fetch moves a partition back (the consumer's
                # reset policy, earliest): the log no longer holds the stored offset. Re-read what it has.
                self._log_reset(tp, expected, first, "a fetch from it was out of range and Kafka reset it")
                expected = first
            if first < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
                first = records[0].offset
            if first > expected and tp in self._unverified:
                self._unverified.discard(tp)
                self.consumer.seek(tp, expected)  # stale records from before the seek: fetch from the stored offset
                continue
            if first > expected:
                self._log_gap(tp, expected, first)
            self._unverified.discard(tp)
            self._next[tp] = records[-1].offset + 1
            if tp in self._replay:
                exact = self._exact(tp, records)
                if exact is None:
                    continue
                records = exact
            out[tp] = records
        return out

    def _exact(self, tp: TopicPartition, records: list[Any]) -> list[Any] | None:
        """Hold a re-formed partition's records until its unconfirmed range is complete; then exactly that range.

        Records past the range's end are dropped and the partition sought back there, so the next
        batch starts where the replayed one ends (the ClickHouse sink's "overlapping" case).
        """
        held = self._held.setdefault(tp, [])
        held.extend(records)
        end = self._replay[tp]
        if held[-1].offset + 1 < end:
            return None  # the range is not fetched whole yet
        del self._replay[tp]
        exact = [r for r in self._held.pop(tp) if r.offset < end]
        if len(exact) < len(held):
            self.consumer.seek(tp, end)
            self._unverified.add(tp)  # records fetched before this seek, past ``end``, are fetched again
        self._next[tp] = end
        return exact

    # -- 2. prepare --------------------------------------------------------------------------------

    def units(self, fetched: Fetched) -> list[Fetched]:
        """``fetched`` as step 2 takes it: whole, or one partition at a time for a store without atomic batches.

        Such a store applies each partition's records as a batch of its own anyway; handing them over
        one by one lets the first be written while the next are prepared, instead of the store waiting
        for the pricing of the whole fetch (``batch_size`` per partition, ``_fetch_limit``).
        """
        if self.store.atomic_batches or len(fetched.records) < 2:
            return [fetched]
        return [Fetched({tp: records}, fetched.generation) for tp, records in fetched.records.items()]

    async def prepare(self, fetched: Fetched) -> Batch | None:
        """Decode, price and stage ``fetched`` in a thread (the loop keeps heartbeating); None if stale.

        A rebalance that began meanwhile sought whatever this member owns now to the stored offsets,
        so dropping the batch before it is written loses nothing.
        """
        if not fetched.records:
            return None
        batch = await asyncio.to_thread(self.prepare_now, fetched.records)
        if fetched.generation != self.generation:
            return None
        self.crash.reached("after_decode")
        return batch

    def prepare_now(self, data: dict[TopicPartition, list[Any]]) -> Batch:
        """Step 2 itself, in the calling thread: pure work plus the store's staging (no I/O)."""
        if not self.store.atomic_batches and len(data) > 1:
            return _joined([self.prepare_now({tp: records}) for tp, records in data.items()])
        group = self.config.group_id
        spans: list[Span] = []
        dead: list[DeadLetter] = []
        offsets: list[PartitionOffsets] = []
        commit: dict[TopicPartition, int] = {}
        decode = decode_span
        messages = 0
        for tp, records in data.items():
            messages += len(records)
            try:
                spans.extend([decode(r.value) for r in records])
            except Exception:
                spans.extend(_decode_each(tp, records, dead))
            nxt = records[-1].offset + 1
            offsets.append(PartitionOffsets(group, tp.topic, tp.partition, records[0].offset, nxt))
            commit[tp] = nxt
        clock = self.clock()
        hi = clock + MAX_CLOCK_AHEAD_NS
        horizon = EARLIEST_START_NS if self.facts is None else ingest_horizon_ns(clock, self.facts)
        starts = [s.start_ns for s in spans]  # min / max in C: about 1 ms per 20,000 spans
        if starts and (min(starts) < max(EARLIEST_START_NS, horizon) or max(starts) > hi):
            log.warning("batch has spans with implausible or aged start times; dead-lettering them one by one")
            prepared, spans = self._isolate(data, dead, hi, horizon)
            return Batch(self.store.stage_batch(prepared, offsets, dead), len(spans), messages, commit)
        try:
            prepared = prepare_batch(spans, self.book, deltas=self.store.needs_deltas)
        except Exception as exc:
            if isinstance(exc, ValueError):  # a span the stores cannot hold (prepare_batch names it)
                log.warning("batch has spans that cannot be stored (%s); dead-lettering them one by one", exc)
            else:
                log.exception("pricing the batch failed; isolating the span(s) responsible")
            prepared, spans = self._isolate(data, dead, hi, horizon)
        return Batch(self.store.stage_batch(prepared, offsets, dead), len(spans), messages, commit)

    def _isolate(
        self, data: dict[TopicPartition, list[Any]], dead: list[DeadLetter], latest_ns: int, horizon_ns: int
    ) -> tuple[PreparedBatch, list[Span]]:
        """Prepare the batch without the spans that cannot be dated, priced or stored; each becomes a dead letter.

        The reason says why (``implausible start time: ...``, ``cannot be stored: span 'x' costs ...``);
        the rest of the batch is stored. ``latest_ns``: the latest start accepted, ``horizon_ns`` the
        oldest (see ``_implausible``).
        """
        decoded: list[tuple[Span, TopicPartition, Any]] = []
        for tp, records in data.items():
            for r in records:
                try:
                    span = decode_span(r.value)
                except Exception:
                    continue  # already a dead letter
                why = _implausible(span.start_ns, latest_ns, horizon_ns)
                if why is not None:
                    dead.append(DeadLetter(tp.topic, tp.partition, r.offset, r.key, r.value, why))
                else:
                    decoded.append((span, tp, r))
        spans = [d[0] for d in decoded]
        prepared, rejected = prepare_isolating(spans, self.book, deltas=self.store.needs_deltas)
        for i, reason in rejected:
            _, tp, r = decoded[i]
            dead.append(DeadLetter(tp.topic, tp.partition, r.offset, r.key, r.value, reason))
        left_out = {i for i, _ in rejected}
        return prepared, [s for i, s in enumerate(spans) if i not in left_out]

    # -- 3. write with offsets ---------------------------------------------------------------------

    async def write(self, batch: Batch) -> WriteResult:
        """Dead letters to the DLQ topic, then the batch and its offsets into the store, at most once.

        ``StoreBusyError`` (another worker held the store; nothing written) is retried with backoff;
        any other failure is raised and nothing of the batch is stored.
        """
        if batch.dead:
            await publish_dead_letters(self.producer, self.config.dlq_topic, list(batch.dead))
        started = time.perf_counter()
        results = [await self._apply(part) for part in batch.parts]
        self.commit_seconds.observe(time.perf_counter() - started)
        self.crash.reached("after_db_commit")
        return results[0] if len(results) == 1 else _sum_results(results)

    async def _apply(self, staged: StagedBatch) -> WriteResult:
        """One ``apply_batch``, retried with backoff while the store is busy."""
        delay = 0.05
        for attempt in range(_BUSY_ATTEMPTS):
            try:
                return await self.store.apply_batch(staged)
            except StoreBusyError as exc:
                if attempt == _BUSY_ATTEMPTS - 1:
                    raise
                self.stats.db_retries += 1
                log.warning("store busy, retrying the batch in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- 4. commit to Kafka ------------------------------------------------------------------------

    async def commit(self, batch: Batch, result: WriteResult) -> None:
        """Commit the batch's offsets to Kafka (after the store has them) and count the batch."""
        try:
            await asyncio.wait_for(self.consumer.commit(batch.commit), KAFKA_TIMEOUT)
        except (KafkaError, TimeoutError) as exc:  # the store holds the truth; the next assignment seeks there
            self.stats.kafka_commit_failures += 1
            log.info("Kafka offset commit skipped (the store has the offsets): %s", exc)
        self.crash.reached("after_kafka_commit")
        st = self.stats
        st.batches += 1
        st.messages += batch.messages
        st.spans += batch.spans
        st.stored += result.new_spans
        st.duplicates += result.duplicate_spans
        st.dead_letters += len(batch.dead)
        st.last_commit_ns = time.time_ns()

    # -- 5. seek on rebalance ----------------------------------------------------------------------

    async def refresh_facts(self) -> RetentionFacts:
        """Read the store's retention facts again (the ingest horizon moves with them and the clock)."""
        self.facts = await self.store.retention_facts()
        return self.facts

    def revoke(self) -> None:
        """Partitions are being taken away: batches fetched or prepared before now are dropped."""
        self.generation += 1
        self._next = {}
        self._replay, self._held = {}, {}

    async def seek(self, assigned: Iterable[TopicPartition]) -> None:
        """Position each assigned partition at the offset stored with its last applied batch.

        Unless Kafka has lost the group's committed offset for it while the store holds one: the
        broker restarted empty (the embedded broker keeps nothing), or the topic was deleted and
        recreated (Kafka drops a deleted topic's offsets), so the stored offset counts records of a
        log that is gone, and seeking there would skip every new record below it. Such a partition
        is re-read from its beginning (what Kafka's ``earliest`` reset does), with an ERROR line and
        ``offset_resets``; spans already stored are recognised by span id and not counted again.
        The end offset is not used for this: the embedded broker reports it too low.
        """
        assigned = list(assigned)
        self.stats.rebalances += 1
        self.generation += 1
        if not assigned:
            return
        consumer = self.consumer
        stored = await self.store.stored_offsets(self.config.group_id, self.config.topic)
        unconfirmed = await self._unconfirmed(assigned, stored)
        held = [tp for tp in assigned if stored.get(tp.partition)]
        in_kafka = await self._committed_in_kafka(held)
        forgotten = {tp for tp, c in in_kafka.items() if c is None}
        starts: dict[TopicPartition, int | None] = {}
        for tp in assigned:
            if tp in forgotten:  # the log the stored offsets counted is gone: its beginning
                starts[tp] = None
            elif tp in unconfirmed:
                starts[tp] = unconfirmed[tp].first_offset
            else:
                starts[tp] = stored.get(tp.partition)
        fresh = [tp for tp, offset in starts.items() if offset is None]
        beginnings = await consumer.beginning_offsets(fresh) if fresh else {}
        positions: dict[TopicPartition, int] = {tp: beginnings[tp] if o is None else o for tp, o in starts.items()}
        # No await from here on: a fetch that ran between a seek and ``_next`` would drop the sought
        # records as not ours, and nothing would fetch them again.
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        self._next = positions
        self._unverified = set(positions)
        self._replay = {tp: r.next_offset for tp, r in unconfirmed.items() if tp not in forgotten}
        self._held = {}
        for tp in forgotten:
            self._log_reset(tp, stored[tp.partition], positions[tp], "Kafka holds no committed offset for it")
        log.info("assigned %s; positions from the store: %s", sorted(tp.partition for tp in assigned), stored)
        # A worker killed between the store's commit and Kafka's left Kafka a batch behind; with no newer
        # records in that partition nothing would commit there again, and the group's lag would stay wrong.
        behind = {
            tp: positions[tp]
            for tp, c in in_kafka.items()
            if c is not None and tp not in unconfirmed and c < positions[tp] == stored.get(tp.partition)
        }
        if behind:
            try:
                await asyncio.wait_for(self.consumer.commit(behind), KAFKA_TIMEOUT)
                log.info("Kafka's committed offsets caught up with the store's: %s", behind)
            except (KafkaError, TimeoutError) as exc:  # the store holds the truth; the next batch commits
                log.info("could not commit the store's offsets to Kafka (%s): %s", exc, behind)

    async def _committed_in_kafka(self, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Kafka's committed offset of this group for each of ``tps`` (None: Kafka holds none).

        Every applied batch is committed to Kafka too, so a missing one means Kafka lost it (or every
        commit of this group failed, or its offsets expired after a long idle time: re-reading then
        only costs time). A failing lookup gives no partitions, which keeps the stored offsets.
        """
        if not tps:
            return {}
        try:
            committed = await asyncio.wait_for(
                asyncio.gather(*(self.consumer.committed(tp) for tp in tps)), KAFKA_TIMEOUT
            )
        except (KafkaError, TimeoutError) as exc:
            log.warning("could not read Kafka's committed offsets (%s); seeking to the store's offsets", exc)
            return {}
        return dict(zip(tps, committed, strict=True))

    def _log_gap(self, tp: TopicPartition, expected: int, first: int) -> None:
        """Say loudly that offsets ``[expected, first)`` of ``tp`` are gone from Kafka and were never stored."""
        self.stats.offset_gaps += 1
        self.stats.offsets_lost += first - expected
        log.error(
            "partition %s of %s: offsets %d to %d (%d messages) are no longer in Kafka and were never stored: "
            "the topic's retention deleted them before a worker stored them (or compaction removed them). "
            "Their spans are lost; reading on from offset %d",
            tp.partition,
            tp.topic,
            expected,
            first - 1,
            first - expected,
            first,
        )

    def _log_reset(self, tp: TopicPartition, stored: int, now: int, why: str) -> None:
        """Say loudly that ``tp`` is re-read from ``now`` although the store had reached ``stored``."""
        self.stats.offset_resets += 1
        log.error(
            "partition %s of %s: the store has read it up to offset %d, but %s: the broker restarted empty or "
            "the topic was recreated. Re-reading it from offset %d (its beginning); spans already stored are "
            "recognised and not counted again",
            tp.partition,
            tp.topic,
            stored,
            why,
            now,
        )

    async def _unconfirmed(
        self, assigned: list[TopicPartition], stored: dict[int, int]
    ) -> dict[TopicPartition, PartitionOffsets]:
        """The assigned partitions whose last batch the store began and did not confirm (contract 4.)."""
        if self.store.atomic_batches:
            return {}
        ranges = await self.store.unconfirmed_ranges(self.config.group_id, self.config.topic)
        out = {tp: ranges[tp.partition] for tp in assigned if tp.partition in ranges}
        for tp, r in out.items():
            if stored.get(tp.partition, r.first_offset) != r.first_offset:
                log.warning("partition %d: unconfirmed range %s does not start at the stored offset %s",
                            tp.partition, r, stored.get(tp.partition))  # fmt: skip
            log.info("partition %d: re-forming the unconfirmed batch [%d, %d)", tp.partition, r.first_offset,
                     r.next_offset)  # fmt: skip
        return out

    def rebalance_listener(self, settle: Callable[[], Awaitable[None]]) -> ConsumerRebalanceListener:
        """The listener to subscribe with: ``settle`` (write what is in flight), then revoke or seek."""
        return _Rebalance(self, settle)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Write the batches in flight before giving partitions up; seek to the stored offsets on assignment."""

    def __init__(self, checkpoint: Checkpoint, settle: Callable[[], Awaitable[None]]) -> None:
        self.checkpoint = checkpoint
        self.settle = settle

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.checkpoint.revoke()  # a batch fetched before this point is dropped unless already queued
        await self.settle()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        cp = self.checkpoint
        cp.generation += 1  # work fetched until the seek below is stale
        await self.settle()
        await cp.seek(assigned)


def _implausible(start_ns: int, latest_ns: int, horizon_ns: int = EARLIEST_START_NS) -> str | None:
    """Why a span starting at ``start_ns`` cannot be stored by its date (the dead letter's reason), or None."""
    if start_ns < EARLIEST_START_NS:
        return f"implausible start time: start_ns={start_ns} is before 2000-01-01 (the producer's clock is wrong)"
    if start_ns < horizon_ns:
        return aged_reason(start_ns, horizon_ns)
    if start_ns > latest_ns:
        return ahead_reason(start_ns, latest_ns - MAX_CLOCK_AHEAD_NS, "this worker's clock")
    return None


def _joined(batches: list[Batch]) -> Batch:
    """One queued unit of several partitions' batches (applied one by one, committed to Kafka together)."""
    first, *rest = batches
    commit: dict[TopicPartition, int] = {}
    for b in batches:
        commit.update(b.commit)
    return Batch(
        first.staged,
        sum(b.spans for b in batches),
        sum(b.messages for b in batches),
        commit,
        tuple(b.staged for b in rest),
    )


def _sum_results(results: list[WriteResult]) -> WriteResult:
    """What several applied batches changed, together (for the stats and the post-commit hooks)."""
    touched = [r.touched for r in results]
    starts = [t.min_start_ns for t in touched if t.min_start_ns is not None]
    ends = [t.max_start_ns for t in touched if t.max_start_ns is not None]
    return WriteResult(
        new_spans=sum(r.new_spans for r in results),
        duplicate_spans=sum(r.duplicate_spans for r in results),
        cost_nano=sum(r.cost_nano for r in results),
        unpriced_items=sum(r.unpriced_items for r in results),
        touched=BatchSummary(
            features=frozenset().union(*(t.features for t in touched)),
            loaded_features=frozenset().union(*(t.loaded_features for t in touched)),
            users=frozenset().union(*(t.users for t in touched)),
            endpoints=frozenset().union(*(t.endpoints for t in touched)),
            min_start_ns=min(starts) if starts else None,
            max_start_ns=max(ends) if ends else None,
        ),
    )


def _decode_each(tp: TopicPartition, records: list[Any], dead: list[DeadLetter]) -> list[Span]:
    """Decode one message at a time, turning each failure into a dead letter with the error text."""
    out: list[Span] = []
    for r in records:
        try:
            if r.value is None:
                raise ValueError("message has no value")
            out.append(decode_span(r.value))
        except Exception as exc:
            dead.append(DeadLetter(tp.topic, tp.partition, r.offset, r.key, r.value, f"{type(exc).__name__}: {exc}"))
    return out
