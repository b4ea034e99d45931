"""One consumer-group worker: Kafka batch → decode → price → the store, effectively once → offset commit.

The protocol itself (fetch, prepare, write with offsets, commit to Kafka, seek on rebalance) is
``consumers.checkpoint``; this module runs it: the clients' lifecycle, the pipelining of batch N+1's
pricing with batch N's write, retention chunks between batches, and the post-commit hooks. The
worker imports no database driver and no backend: it writes through ``AsyncIngestStore``
(``open_ingest_store_async(config.db_path)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, RequestTimedOutError

from consumers.checkpoint import CRASH_ENV, Batch, Checkpoint, CrashPoints
from consumers.config import WorkerConfig
from consumers.histogram import Histogram
from consumers.hooks import HookRunner, PostCommitHook
from consumers.stats import WorkerStats
from spendtrace.errors import StoreBusyError
from spendtrace.server.ingest.horizon import NOW_MARGIN_NS, retention_now_ns
from spendtrace.server.runtime import tune_gc, tune_threads
from spendtrace.server.store.base import AsyncIngestStore, open_ingest_store_async
from spendtrace.server.topics import ensure_topics

__all__ = ["Worker", "WorkerStats", "load_price_book", "tune_gc", "tune_threads"]

log = logging.getLogger(__name__)

#: Seconds a client shutdown may take before the worker moves on without it.
_KAFKA_TIMEOUT = 10.0

#: Seconds between two reads of the store's retention facts (the ingest horizon) while batches flow.
FACTS_REFRESH_S = 1.0

#: First and longest wait between two attempts to reach the bootstrap servers at start-up.
BOOTSTRAP_BACKOFF = (0.5, 30.0)


class Worker:
    """A consumer-group member that prices spans into a store; ``run()``, or ``start``/``step``/``drain``/``stop``.

    ``step`` runs the checkpoint's steps 1-2 (fetch, prepare) and queues the batch; one write task
    runs steps 3-4 (write with offsets, commit to Kafka) strictly in order, then hands the result to
    the post-commit hooks (which run in a task of their own). So batch N+1 is fetched, decoded and
    priced while batch N is written (for SQLite, in the store's writer process, on another core).
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        book: Any = None,
        hook_queue: int = 256,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        #: the wall clock (epoch ns) dating spans and retention; tests inject one
        self.clock = clock
        self._facts_read = 0.0
        self.stats = WorkerStats()
        self._book = book
        self._hooks = HookRunner(hook_queue)
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._store: AsyncIngestStore | None = None
        self._checkpoint: Checkpoint | None = None
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=2)
        self._writer: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._next_retention = 0.0
        #: the "now" of the retention round in progress (None between rounds)
        self._retention_now_ns: int | None = None

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
        if not await self._reach_kafka():
            return
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
            fetch_max_wait_ms=cfg.fetch_max_wait_ms,
        )
        self._checkpoint = Checkpoint(
            cfg,
            consumer=self._consumer,
            producer=self._producer,
            store=self._store,
            book=self._book,
            stats=self.stats,
            commit_seconds=self.commit_seconds,
            crash=CrashPoints(os.environ.get(CRASH_ENV)),
            clock=self.clock,
        )
        await self._checkpoint.refresh_facts()
        self._facts_read = time.monotonic()
        self._next_retention = time.monotonic() + min(5.0, cfg.retention_interval_s)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="spendtrace-writer")
        await self._consumer.start()
        self._consumer.subscribe([cfg.topic], listener=self._checkpoint.rebalance_listener(self._settle))

    async def _reach_kafka(self) -> bool:
        """Create the missing topics, retrying with backoff while the bootstrap servers cannot be reached.

        One WARNING line per attempt says so (attempts 0.5 s apart at first, then at most 30 s); a
        stop request ends the wait (False: do not join). Errors other than a connection failure raise.
        """
        cfg = self.config
        delay, longest = BOOTSTRAP_BACKOFF
        attempt = 0
        while True:
            attempt += 1
            try:
                await ensure_topics(
                    cfg.bootstrap,
                    [cfg.topic, cfg.dlq_topic, cfg.alerts_topic],
                    partitions=cfg.partitions,
                    replication_factor=cfg.replication_factor,
                )
            except (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError) as exc:
                log.warning(
                    "cannot reach Kafka at %s (attempt %d: %s); retrying in %.1fs", cfg.bootstrap, attempt, exc, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return False
                delay = min(delay * 2, longest)
                continue
            if attempt > 1:
                log.warning("reached Kafka at %s after %d attempts", cfg.bootstrap, attempt)
            return True

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
        """Fetch one batch (waiting up to ``poll_timeout_ms``), prepare it and queue it for its write.

        Returns the number of messages taken; ``drain()`` waits until they are written and committed.
        """
        checkpoint = self._checkpoint
        assert checkpoint is not None, "start() first"
        if self._failure is not None:
            raise self._failure
        fetched = await checkpoint.fetch()  # step 1
        if fetched.records and time.monotonic() - self._facts_read >= FACTS_REFRESH_S:
            await checkpoint.refresh_facts()
            self._facts_read = time.monotonic()
        taken = 0
        for part in checkpoint.units(fetched):  # step 2, per partition for a store without atomic batches
            batch = await checkpoint.prepare(part)
            if batch is None:
                return taken
            await self._queue.put(batch)  # the write task starts on it while the next unit is prepared
            taken += batch.messages
        return taken

    async def _settle(self) -> None:
        if self._writer is not None and not self._writer.done():
            await self._queue.join()

    # -- steps 3 and 4, one batch at a time, and retention between batches (the write task) ----------

    async def _write_loop(self) -> None:
        while True:
            try:
                batch: Batch | None = await asyncio.wait_for(self._queue.get(), timeout=1.0)
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
                try:
                    await self._retention(time.monotonic() - taken if batch is not None else 0.0)
                except Exception as exc:  # the store failed, not merely busy: stop as for a batch
                    log.exception("a retention chunk failed; the worker stops")
                    self._failure = exc
                    self._stopping.set()

    async def _commit_batch(self, batch: Batch) -> None:
        checkpoint = self._checkpoint
        assert checkpoint is not None
        result = await checkpoint.write(batch)  # step 3
        await checkpoint.commit(batch, result)  # step 4
        self._hooks.submit(result)

    async def _retention(self, budget_s: float) -> None:
        """Work on the retention round: chunks (one short transaction each) for about ``budget_s``, on while idle.

        Called after each batch with that batch's write time, so deleting a large backlog takes at
        most about half of the writer's time. A round ends when a chunk finds nothing aged left; the
        next starts ``retention_interval_s`` later. Several workers may share the work; a chunk the
        store is too busy for (``StoreBusyError``) is retried after the next batch.
        """
        store = self._store
        if store is None:
            return
        if self._retention_now_ns is None:
            self._retention_now_ns = await self._round_now(store)
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

    async def _round_now(self, store: AsyncIngestStore) -> int:
        """The "now" of a new retention round: the clock, never past the newest stored span + 1 day.

        One line says so when the clock is ahead of that: INFO for an idle store, ERROR when the
        clock is ahead of the data by more than the raw retention (it would have deleted every raw
        span: a clock that jumped).
        """
        facts = await store.retention_facts()
        if self._checkpoint is not None:  # the ingest horizon never lags a round this worker dates
            self._checkpoint.facts = facts
        clock = self.clock()
        now = retention_now_ns(clock, facts)
        if now < clock and facts.newest_start_ns is not None:
            ahead_h = (clock - facts.newest_start_ns) / 3.6e12
            if clock - facts.newest_start_ns > facts.raw_keep_ns:
                log.error(
                    "this worker's clock (%d) is %.1f h ahead of the newest stored span, more than the raw "
                    "retention: retention is dated %d (the newest span + %d h) instead, so it deletes no history; "
                    "check this host's clock (NTP)",
                    clock,
                    ahead_h,
                    now,
                    NOW_MARGIN_NS // 3_600_000_000_000,
                )
            else:
                log.info(
                    "retention dated %d, the newest stored span + 1 day (the store is idle for %.1f h)", now, ahead_h
                )
        return now


def load_price_book(prices_file: str | None) -> Any:
    """AWS Pricing API rates where credentials are configured (else the static table), ``prices_file``'s on top."""
    from spendtrace.server.pricing import PriceBook

    return PriceBook.load(prices_file=prices_file or None)
