"""One consumer-group worker: Kafka batch → decode → price → one SQLite transaction → offset commit.

Effectively once (DESIGN.md §4): spans, rollup deltas, dead letters and the offsets reached are
written in one transaction; Kafka offsets are committed only after it; on start and on every
rebalance each assigned partition is positioned at the offset stored in the database (the
aiokafka ``local_state_consumer`` pattern), so a crash anywhere repeats work the database
ignores (``INSERT OR IGNORE`` on ``span_id``) and never skips any. A batch is only accepted if
it continues exactly where this member's data for the partition ends, so records fetched before
a seek can neither skip messages nor be taken twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumers.config import WorkerConfig
from consumers.dlq import DeadLetter, publish_dead_letters
from consumers.histogram import Histogram
from consumers.hooks import HookRunner, PostCommitHook
from spendtrace.errors import StoreBusyError
from spendtrace.schema import Span, decode_span
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.model.ingest import PartitionOffsets, PreparedBatch, StagedBatch, WriteResult
from spendtrace.server.runtime import tune_gc
from spendtrace.server.store.base import AsyncIngestStore, open_ingest_store_async
from spendtrace.server.topics import ensure_topics

__all__ = ["Worker", "WorkerStats", "tune_gc"]

log = logging.getLogger(__name__)

#: Test hook: ``SPENDTRACE_CRASH_AT=point:n`` SIGKILLs the worker the n-th time it reaches ``point``
#: (``after_decode``, ``after_db_commit``, ``after_kafka_commit``), so fault tests can kill it
#: exactly between two steps of the effectively-once protocol.
_CRASH_ENV = "SPENDTRACE_CRASH_AT"

#: Records parsed per ``getmany`` call while a batch is assembled (see ``Worker._fetch``).
_FETCH_CHUNK = 5_000

#: Seconds a Kafka offset commit or a client shutdown may take before the worker moves on without it.
_KAFKA_TIMEOUT = 10.0


@dataclass
class WorkerStats:
    """Counters since the worker started (exposed by ``--metrics-port``)."""

    batches: int = 0
    messages: int = 0
    #: spans decoded and priced (replays included)
    spans: int = 0
    #: spans that were new to the database, and those it already had (replays, duplicates)
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    kafka_commit_failures: int = 0
    db_retries: int = 0
    retention_runs: int = 0
    rebalances: int = 0
    last_commit_ns: int = 0


class _CrashPoints:
    def __init__(self, spec: str | None) -> None:
        self.point, self.remaining = "", 0
        if spec:
            point, _, n = spec.partition(":")
            self.point, self.remaining = point, int(n or 1)

    def reached(self, point: str) -> None:
        if point == self.point:
            self.remaining -= 1
            if self.remaining <= 0:
                log.warning("crash point %s reached: SIGKILL", point)
                os.kill(os.getpid(), signal.SIGKILL)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit the batches in flight before giving partitions up; seek to the stored offsets on assignment."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        w = self.worker
        w._generation += 1  # a batch fetched before this point is dropped unless already queued
        w._next = {}
        await w._settle()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        w = self.worker
        w.stats.rebalances += 1
        w._generation += 1
        await w._settle()
        await w._seek_to_stored(list(assigned))


@dataclass
class _Batch:
    """One fetched batch, decoded, priced and staged by the store, waiting for its transaction."""

    #: the prepared batch with its offsets and dead letters, encoded for the store in the pricing thread
    staged: StagedBatch
    spans: int
    messages: int
    dead: list[DeadLetter]
    commit: dict[TopicPartition, int]


class Worker:
    """A consumer-group member that prices spans into SQLite; ``run()``, or ``start``/``step``/``drain``/``stop``.

    Batch N+1 is fetched, decoded and priced while batch N's transaction runs in the worker's
    writer process (``consumers.writer``), on another core; batches are committed strictly in order
    by one writer task, each followed by its Kafka offset commit and the post-commit hooks (which
    run in a task of their own).
    """

    def __init__(self, config: WorkerConfig, *, book: Any = None, hook_queue: int = 256) -> None:
        self.config = config
        self.stats = WorkerStats()
        self._book = book
        self._hooks = HookRunner(hook_queue)
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._store: AsyncIngestStore | None = None
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=2)
        self._writer: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        #: partition -> offset the next batch must start at (set from the database on assignment)
        self._next: dict[TopicPartition, int] = {}
        #: partitions whose first batch since assignment has not been checked against the seek yet
        self._unverified: set[TopicPartition] = set()
        self._generation = 0
        self._next_retention = 0.0
        #: the "now" of the retention round in progress (None between rounds)
        self._retention_now_ns: int | None = None
        self._crash = _CrashPoints(os.environ.get(_CRASH_ENV))

        #: seconds each batch's transaction took, retries included (``--metrics-port``)
        self.commit_seconds = Histogram()

    # -- lifecycle -----------------------------------------------------------------------------

    def add_post_commit_hook(self, hook: PostCommitHook) -> None:
        """Call ``await hook(write_result)`` after each batch's transaction commits (in a task of its own)."""
        self._hooks.add(hook)

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        """The group member's Kafka consumer while running (the lag metric reads its high watermarks)."""
        return self._consumer

    @property
    def hooks(self) -> HookRunner:
        """The post-commit hook runner (its counters, ``drain()``)."""
        return self._hooks

    def request_stop(self) -> None:
        """Ask ``run()`` to finish the batches in flight, commit them and leave the group."""
        self._stopping.set()

    async def start(self) -> None:
        """Open the store, create missing topics and join the consumer group."""
        cfg = self.config
        if self._book is None:
            self._book = load_price_book(cfg.prices_file)
        self._store = await open_ingest_store_async(cfg.db_path)  # created or migrated first
        await ensure_topics(
            cfg.bootstrap,
            [cfg.topic, cfg.dlq_topic, cfg.alerts_topic],
            partitions=cfg.partitions,
            replication_factor=cfg.replication_factor,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=cfg.bootstrap,
            client_id=f"{cfg.client_id}-dlq",
            acks="all",
            max_request_size=cfg.max_message_bytes + 64 * 1024,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=cfg.bootstrap,
            group_id=cfg.group_id,
            client_id=cfg.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(cfg.max_message_bytes, cfg.max_fetch_bytes // 4),
            fetch_max_bytes=cfg.max_fetch_bytes,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        )
        self._next_retention = time.monotonic() + min(5.0, cfg.retention_interval_s)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="spendtrace-writer")
        await self._consumer.start()
        self._consumer.subscribe([cfg.topic], listener=_Rebalance(self))

    async def drain(self) -> None:
        """Wait until every batch taken so far is committed (re-raising a writer failure)."""
        await self._settle()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Commit what is in flight, leave the group and close everything."""
        try:
            await self._settle()
        finally:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            consumer, self._consumer = self._consumer, None
            producer, self._producer = self._producer, None
            await self._hooks.close()
            # Leave the group; bounded, because with the broker gone aiokafka would retry for a long time.
            for client in (consumer, producer):
                if client is not None:
                    try:
                        await asyncio.wait_for(client.stop(), _KAFKA_TIMEOUT)
                    except (KafkaError, TimeoutError) as exc:
                        log.warning("closing %s did not finish cleanly: %r", type(client).__name__, exc)
            store, self._store = self._store, None
            if store is not None:
                await store.close()

    async def run(self) -> None:
        """Consume until ``request_stop()``; every batch taken is committed before this returns."""
        await self.start()
        try:
            while not self._stopping.is_set():
                await self.step()
            await self.drain()
        finally:
            await self.stop()

    async def step(self) -> int:
        """Fetch one batch (waiting up to ``poll_timeout_ms``), price it and queue it for its transaction.

        Returns the number of messages taken; ``drain()`` waits until they are committed.
        """
        assert self._consumer is not None, "start() first"
        if self._failure is not None:
            raise self._failure
        data, generation = await self._fetch()
        if not data:
            return 0
        batch = await asyncio.to_thread(self._prepare, data)  # keeps the loop (heartbeats) responsive
        if generation != self._generation:
            # A rebalance began meanwhile: whatever this member owns now was sought to the stored offsets,
            # so dropping the unwritten batch loses nothing.
            return 0
        self._crash.reached("after_decode")
        await self._queue.put(batch)
        return batch.messages

    async def _fetch(self) -> tuple[dict[TopicPartition, list[Any]], int]:
        """Up to ``batch_size`` records (what arrives within ``poll_timeout_ms``, then what is already
        fetched), and the rebalance generation they belong to.

        Taken ``_FETCH_CHUNK`` records at a time, yielding to the event loop between chunks: parsing
        records is CPU work, and the writer task must not wait for all of it to hand the previous
        batch to the writer process. Chunks taken before a rebalance are dropped: the assignment
        sought every partition back to its stored offset, and ``_next`` with it.
        """
        consumer = self._consumer
        assert consumer is not None
        cfg = self.config
        out: dict[TopicPartition, list[Any]] = {}
        taken = 0
        timeout = cfg.poll_timeout_ms
        generation = self._generation
        while taken < cfg.batch_size:
            if timeout == 0:
                await asyncio.sleep(0)  # between chunks: the writer task may hand over the previous batch
            chunk = await consumer.getmany(timeout_ms=timeout, max_records=min(_FETCH_CHUNK, cfg.batch_size - taken))
            if generation != self._generation:  # a rebalance ran during the awaits above
                out, taken, generation = {}, 0, self._generation
            if not chunk:
                break
            for tp, records in self._contiguous(chunk).items():
                out.setdefault(tp, []).extend(records)
                taken += len(records)
            timeout = 0
        return out, generation

    def _contiguous(self, data: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Keep only records that continue exactly where this member's stored data ends, per partition.

        Records fetched before an assignment's seek (from Kafka's committed offset or the reset policy)
        may start elsewhere; a batch must never start past the stored offset (it would skip messages)
        and records before it are already stored. Later gaps (compaction) are accepted after one re-seek.
        """
        out: dict[TopicPartition, list[Any]] = {}
        consumer = self._consumer
        assert consumer is not None
        for tp, records in data.items():
            expected = self._next.get(tp)
            if not records or expected is None:
                continue  # not (or no longer) ours
            first = records[0].offset
            if first < expected:
                records = [r for r in records if r.offset >= expected]
                if not records:
                    continue
                first = records[0].offset
            if first > expected and tp in self._unverified:
                self._unverified.discard(tp)
                consumer.seek(tp, expected)  # stale records from before the seek: fetch again from the stored offset
                continue
            self._unverified.discard(tp)
            self._next[tp] = records[-1].offset + 1
            out[tp] = records
        return out

    async def _settle(self) -> None:
        if self._writer is not None and not self._writer.done():
            await self._queue.join()

    # -- stage 1: decode and price (in a worker thread) ---------------------------------------------

    def _prepare(self, data: dict[TopicPartition, list[Any]]) -> _Batch:
        store = self._store
        assert store is not None
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
        try:
            prepared = prepare_batch(spans, self._book)
        except Exception:
            log.exception("pricing the batch failed; isolating the span(s) responsible")
            prepared, spans = self._isolate(data, dead)
        staged = store.stage_batch(prepared, offsets, dead)
        return _Batch(staged, len(spans), messages, dead, commit)

    def _isolate(
        self, data: dict[TopicPartition, list[Any]], dead: list[DeadLetter]
    ) -> tuple[PreparedBatch, list[Span]]:
        """Price span by span; a span that decodes but cannot be priced becomes a dead letter."""
        good: list[Span] = []
        for tp, records in data.items():
            for r in records:
                try:
                    span = decode_span(r.value)
                except Exception:
                    continue  # already a dead letter
                try:
                    prepare_batch([span], self._book)
                except Exception as exc:
                    reason = f"pricing failed: {exc!r}"
                    dead.append(DeadLetter(tp.topic, tp.partition, r.offset, r.key, r.value, reason))
                else:
                    good.append(span)
        return prepare_batch(good, self._book), good

    # -- stage 2: one transaction per batch, then the Kafka commit (the writer task) ----------------

    async def _write_loop(self) -> None:
        while True:
            try:
                batch: _Batch | None = await asyncio.wait_for(self._queue.get(), timeout=1.0)
            except TimeoutError:
                batch = None
            taken = time.monotonic()
            if batch is not None:
                try:
                    if self._failure is None:  # after a failure, batches are dropped: their offsets stay unstored
                        await self._commit_batch(batch)
                except Exception as exc:
                    log.exception("writing a batch failed; the worker stops (nothing of it was stored)")
                    self._failure = exc
                    self._stopping.set()
                finally:
                    self._queue.task_done()
            if self._failure is None and (
                self._retention_now_ns is not None or time.monotonic() >= self._next_retention
            ):
                await self._retention(time.monotonic() - taken if batch is not None else 0.0)

    async def _commit_batch(self, batch: _Batch) -> None:
        if batch.dead:
            assert self._producer is not None
            await publish_dead_letters(self._producer, self.config.dlq_topic, batch.dead)
        started = time.perf_counter()
        result = await self._write(batch)
        self.commit_seconds.observe(time.perf_counter() - started)
        self._crash.reached("after_db_commit")
        consumer = self._consumer
        if consumer is not None:
            try:
                await asyncio.wait_for(consumer.commit(batch.commit), _KAFKA_TIMEOUT)
            except (KafkaError, TimeoutError) as exc:  # the database holds the truth; the next assignment seeks there
                self.stats.kafka_commit_failures += 1
                log.info("Kafka offset commit skipped (the database has the offsets): %s", exc)
        self._crash.reached("after_kafka_commit")
        st = self.stats
        st.batches += 1
        st.messages += batch.messages
        st.spans += batch.spans
        st.stored += result.new_spans
        st.duplicates += result.duplicate_spans
        st.dead_letters += len(batch.dead)
        st.last_commit_ns = time.time_ns()
        self._hooks.submit(result)

    async def _write(self, batch: _Batch) -> WriteResult:
        """Apply the staged batch; a store held by another worker (``StoreBusyError``) is retried with backoff."""
        store = self._store
        assert store is not None
        delay = 0.05
        for attempt in range(12):
            try:
                return await store.apply_batch(batch.staged)
            except StoreBusyError as exc:
                if attempt == 11:
                    raise
                self.stats.db_retries += 1
                log.warning("store busy, retrying the batch in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    # -- rebalance and housekeeping --------------------------------------------------------------

    async def _seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        consumer, store = self._consumer, self._store
        if consumer is None or store is None or not assigned:
            return
        stored = await store.stored_offsets(self.config.group_id, self.config.topic)
        fresh = []
        positions: dict[TopicPartition, int] = {}
        for tp in assigned:
            nxt = stored.get(tp.partition)
            if nxt is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, nxt)
                positions[tp] = nxt
        if fresh:
            await consumer.seek_to_beginning(*fresh)
            for tp in fresh:
                positions[tp] = await consumer.position(tp)
        self._next = positions
        self._unverified = set(positions)
        log.info("assigned %s; positions from the database: %s", sorted(tp.partition for tp in assigned), stored)

    async def _retention(self, budget_s: float) -> None:
        """Work on the retention round: chunks (one short transaction each) for about ``budget_s``, on while idle.

        Called after each batch with that batch's write time, so deleting a large backlog takes at
        most about half of the writer's time. A round ends when a chunk finds nothing aged left; the
        next starts ``retention_interval_s`` later. Several workers may share the work; a chunk the
        database is too busy for is retried after the next batch.
        """
        store = self._store
        if store is None:
            return
        if self._retention_now_ns is None:
            self._retention_now_ns = time.time_ns()
        until = time.monotonic() + budget_s
        limit = self.config.retention_chunk_rows
        while not self._stopping.is_set():
            try:
                _, done = await store.retention_chunk(self._retention_now_ns, limit)
            except StoreBusyError as exc:
                log.info("retention chunk skipped (another worker is writing), retried later: %s", exc)
                return
            if done:
                self._retention_now_ns = None
                self._next_retention = time.monotonic() + self.config.retention_interval_s
                self.stats.retention_runs += 1
                return
            if not self._queue.empty() and time.monotonic() >= until:
                return  # a batch is waiting and this one's share is spent


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


def load_price_book(prices_file: str | None) -> Any:
    """AWS Pricing API rates where credentials are configured (else the static table), ``prices_file``'s on top."""
    from spendtrace.server.pricing import PriceBook

    return PriceBook.load(prices_file=prices_file or None)
