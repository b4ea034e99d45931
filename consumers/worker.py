"""One consumer-group worker: Kafka batch → decode → price → one SQLite transaction → offset commit.

Effectively once (DESIGN.md §4): spans, rollup deltas, dead letters and the offsets reached are
written in one transaction; Kafka offsets are committed only after it; on start and on every
rebalance each assigned partition is positioned at the offset stored in the database (the
aiokafka ``local_state_consumer`` pattern), so a crash anywhere repeats work the database
ignores (``INSERT OR IGNORE`` on ``span_id``) and never skips any.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from consumers.config import WorkerConfig
from consumers.dlq import DeadLetter, publish_dead_letters
from consumers.hooks import HookRunner, PostCommitHook
from consumers.topics import ensure_topics
from spendtrace.schema import Span, decode_span

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger(__name__)

#: Test hook: ``SPENDTRACE_CRASH_AT=point:n`` SIGKILLs the worker the n-th time it reaches ``point``
#: (``after_decode``, ``after_db_commit``, ``after_kafka_commit``), so fault tests can kill it
#: exactly between two steps of the effectively-once protocol.
_CRASH_ENV = "SPENDTRACE_CRASH_AT"


@dataclass
class WorkerStats:
    """Counters since the worker started (exposed by ``--metrics-port``)."""

    batches: int = 0
    messages: int = 0
    spans: int = 0
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
    """Finish the in-flight batch before giving partitions up; seek to the stored offsets on assignment."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.worker._batch_lock:  # waits for the batch in flight to commit
            pass

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.worker.stats.rebalances += 1
        await self.worker._seek_to_stored(list(assigned))


class Worker:
    """A consumer-group member that prices spans into SQLite; use ``run()`` or ``start``/``step``/``stop``."""

    def __init__(self, config: WorkerConfig, *, book: Any = None, hook_queue: int = 256) -> None:
        self.config = config
        self.stats = WorkerStats()
        self._book = book
        self._hooks = HookRunner(hook_queue)
        self._batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._db: Any = None
        self._next_retention = 0.0
        self._crash = _CrashPoints(os.environ.get(_CRASH_ENV))

    # -- lifecycle -----------------------------------------------------------------------------

    def add_post_commit_hook(self, hook: PostCommitHook) -> None:
        """Call ``await hook(write_result)`` after each batch's transaction commits (in a task of its own)."""
        self._hooks.add(hook)

    @property
    def hooks(self) -> HookRunner:
        """The post-commit hook runner (its counters, ``drain()``)."""
        return self._hooks

    def request_stop(self) -> None:
        """Ask ``run()`` to finish the batch in flight, commit it and leave the group."""
        self._stopping.set()

    async def start(self) -> None:
        """Open the database, create missing topics and join the consumer group."""
        from spendtrace.storage._db import connect_async

        cfg = self.config
        if self._book is None:
            self._book = load_price_book(cfg.prices_file)
        self._db = await connect_async(cfg.db_path)
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
        await self._consumer.start()
        self._consumer.subscribe([cfg.topic], listener=_Rebalance(self))
        self._next_retention = time.monotonic() + min(5.0, cfg.retention_interval_s)

    async def stop(self) -> None:
        """Leave the group and close everything (call after the last ``step``)."""
        async with self._batch_lock:
            consumer, self._consumer = self._consumer, None
            producer, self._producer = self._producer, None
        await self._hooks.close()
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            await producer.stop()
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def run(self) -> None:
        """Consume until ``request_stop()``; every batch taken is committed before this returns."""
        await self.start()
        try:
            while not self._stopping.is_set():
                await self.step()
        finally:
            await self.stop()

    async def step(self) -> int:
        """Fetch one batch (waiting up to ``poll_timeout_ms``) and commit it; return the messages taken."""
        assert self._consumer is not None, "start() first"
        cfg = self.config
        data = await self._consumer.getmany(timeout_ms=cfg.poll_timeout_ms, max_records=cfg.batch_size)
        taken = 0
        if data:
            async with self._batch_lock:
                taken = await self._process(data)
        if time.monotonic() >= self._next_retention:
            await self._retention()
        return taken

    # -- the batch -----------------------------------------------------------------------------

    async def _process(self, data: dict[TopicPartition, list[Any]]) -> int:
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        group = self.config.group_id
        spans: list[Span] = []
        dead: list[DeadLetter] = []
        offsets: list[tuple[str, str, int, int]] = []
        commit: dict[TopicPartition, int] = {}
        taken = 0
        decode = decode_span
        for tp, records in data.items():
            if not records or tp not in assigned:
                continue  # revoked while this batch waited: its new owner starts from the stored offset
            taken += len(records)
            try:
                spans.extend([decode(r.value) for r in records])
            except Exception:
                spans.extend(_decode_each(tp, records, dead))
            nxt = records[-1].offset + 1
            offsets.append((group, tp.topic, tp.partition, nxt))
            commit[tp] = nxt
        if not taken:
            return 0
        self._crash.reached("after_decode")
        batch = self._prepare(spans, data, assigned, dead)
        if dead:
            assert self._producer is not None
            await publish_dead_letters(self._producer, self.config.dlq_topic, dead)
        result = await self._write(batch, offsets, dead)
        self._crash.reached("after_db_commit")
        try:
            await consumer.commit(commit)
        except KafkaError as exc:  # the database holds the truth; the next assignment seeks there
            self.stats.kafka_commit_failures += 1
            log.warning("Kafka offset commit failed (the database has the offsets): %s", exc)
        self._crash.reached("after_kafka_commit")
        st = self.stats
        st.batches += 1
        st.messages += taken
        st.spans += len(spans)
        st.dead_letters += len(dead)
        st.last_commit_ns = time.time_ns()
        self._hooks.submit(result)
        return taken

    def _prepare(
        self, spans: list[Span], data: dict[TopicPartition, list[Any]], assigned: Any, dead: list[DeadLetter]
    ) -> Any:
        """Price the batch; if a span that decoded still cannot be priced, isolate it as a dead letter."""
        from spendtrace.storage._ingest import prepare_batch

        try:
            return prepare_batch(spans, self._book)
        except Exception:
            log.exception("pricing the batch failed; isolating the span(s) responsible")
        good: list[Span] = []
        for tp, records in data.items():
            if tp not in assigned:
                continue
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
        spans[:] = good
        return prepare_batch(good, self._book)

    async def _write(self, batch: Any, offsets: Sequence[tuple[str, str, int, int]], dead: list[DeadLetter]) -> Any:
        """One transaction; a database locked by another worker is retried with backoff."""
        from spendtrace.storage._ingest import write_batch_async

        delay = 0.05
        for attempt in range(12):
            try:
                return await write_batch_async(self._db, batch, offsets=list(offsets), dead_letters=list(dead))
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == 11:
                    raise
                self.stats.db_retries += 1
                log.warning("database busy, retrying the batch in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    # -- rebalance and housekeeping --------------------------------------------------------------

    async def _seek_to_stored(self, assigned: list[TopicPartition]) -> None:
        from spendtrace.storage._ingest import read_offsets_async

        consumer = self._consumer
        if consumer is None or not assigned:
            return
        stored = await read_offsets_async(self._db, self.config.group_id, self.config.topic)
        fresh = []
        for tp in assigned:
            nxt = stored.get(tp.partition)
            if nxt is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, nxt)
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        log.info("assigned %s; positions from the database: %s", sorted(tp.partition for tp in assigned), stored)

    async def _retention(self) -> None:
        """Apply retention; several workers may try at once and only one needs to succeed."""
        from spendtrace.storage._retention import apply_retention_async

        self._next_retention = time.monotonic() + self.config.retention_interval_s
        try:
            await apply_retention_async(self._db, time.time_ns())
            self.stats.retention_runs += 1
        except sqlite3.OperationalError as exc:
            log.info("retention skipped this round (another worker is writing): %s", exc)


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
    """The default price book, or the one ``prices_file`` overrides."""
    from spendtrace.pricing import PriceBook

    return PriceBook.load(prices_file=prices_file) if prices_file else PriceBook.default()
