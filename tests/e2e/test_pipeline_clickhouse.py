"""The pipeline into ClickHouse's engine: real broker -> workers (asyncio tasks here) -> chDB -> every total exact.

chDB opens one data directory per process, so the workers run as tasks of the test process, in the
session's one chDB directory (``tests/store/store_backends.chdb_url``'s), each test in a database of
its own. Totals are read through the storage interface and compared with the independent pricing of
``pipeline_support.Expected``, to the nano-dollar.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import Expected, Recorded, garbage_messages, interleave, read_dead_letter_topic

from consumers.config import WorkerConfig
from consumers.testing import produce, stored_offsets, wait_for
from consumers.worker import Worker
from spendtrace.errors import StorageError
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.store.base import open_ingest_store, open_store

PARTITIONS = 6


def chdb_store(tmp_path: Path) -> str:
    """A fresh database in the session's one chDB directory (the one ``tests/store`` uses too)."""
    return f"chdb://{tmp_path.parent / 'chdb'}?database=e2e_{uuid.uuid4().hex[:12]}"


def _config(broker: EmbeddedBroker, topic: str, url: str, **kw: Any) -> WorkerConfig:
    return WorkerConfig(
        bootstrap=broker.bootstrap,
        db_path=url,
        group_id=f"{topic}-g",
        topic=topic,
        dlq_topic=f"{topic}.dlq",
        alerts_topic=f"{topic}.alerts",
        partitions=PARTITIONS,
        session_timeout_ms=2_000,
        heartbeat_interval_ms=400,
        **kw,
    )


async def _drain(cfg: WorkerConfig, ends: dict[int, int], book: Any) -> Worker:
    """One worker task until the store holds every partition's end offset."""
    worker = Worker(cfg, book=book)
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(
            lambda: stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == ends or task.done(), 180, "drain"
        )
    finally:
        worker.request_stop()
        await task
    return worker


def assert_exact(url: str, e: Expected) -> None:
    """Raw spans, totals, per-feature direct and fully-loaded cost and every request equal ``e`` exactly."""
    store = open_store(url, readonly=True)
    try:
        spans = store.transactions(limit=len(e.spans) + 1_000)
        assert {r["span_id"]: r["cost_nano"] for r in spans} == e.span_cost
        assert len(spans) == len(e.spans)
        total = store.total()
        assert (total["cost_nano"], total["transaction_count"], total["request_count"]) == (
            e.total_nano,
            len(e.spans),
            len(e.requests),
        )
        assert total["unpriced_count"] == e.unpriced_items
        rows = {r["feature"]: r for r in store.get_feature_cost_breakdown()}
        assert {f: r["direct_cost_nano"] for f, r in rows.items()} == {
            f: v["cost_nano"] for f, v in e.by_feature.items()
        }
        assert {f: r["fully_loaded_cost_nano"] for f, r in rows.items()} == e.loaded
        requests = store.get_request_cost(limit=len(e.requests) + 10, order="cost")
        assert {r["request_id"]: (r["cost_nano"], r["tx_count"]) for r in requests} == {
            rid: (v["cost_nano"], v["spans"]) for rid, v in e.requests.items()
        }
    finally:
        store.close()


async def test_every_span_sent_twice_counts_once_on_chdb(
    broker: EmbeddedBroker, recorded: Recorded, topic_name: str, tmp_path: Path
) -> None:
    """The whole recording published twice into ClickHouse: the second copy adds nothing, to the nano-dollar."""
    url = chdb_store(tmp_path)
    messages = recorded.messages
    ends = await produce(broker.bootstrap, topic_name, messages + messages, partitions=PARTITIONS)
    worker = await _drain(_config(broker, topic_name, url, batch_size=5_000), ends, recorded.book)
    assert worker.stats.messages == 2 * len(messages)
    assert worker.stats.duplicates >= len(messages)
    assert_exact(url, recorded.expected)


@pytest.mark.parametrize(
    ("table", "refuse"),
    [
        ("loaded_day", "bucket < -1"),  # the insert fails half-way: spans and some views' targets have the block
        ("consumer_offsets", "next_offset < 0"),  # the rows are in, the offsets write fails
    ],
)
async def test_a_batch_that_failed_before_its_offsets_is_re_formed_exactly_and_completed(
    broker: EmbeddedBroker, recorded: Recorded, topic_name: str, tmp_path: Path, table: str, refuse: str
) -> None:
    """A worker dies between the rows and the offsets; more records arrive; the next worker re-forms the same
    batch from the unconfirmed range (not a bigger one), so the tables the first attempt missed are completed."""
    url = chdb_store(tmp_path)
    messages = recorded.messages
    half = len(messages) // 2
    await produce(broker.bootstrap, topic_name, messages[:half], partitions=PARTITIONS)
    cfg = _config(broker, topic_name, url, batch_size=2_000)
    ingest = open_ingest_store(url)  # creates the schema; the constraint makes the first batch fail
    from spendtrace.server.store.clickhouse._client import connect  # the fault is injected in the database itself

    conn = connect(url)
    try:
        conn.command(f"ALTER TABLE {table} ADD CONSTRAINT refuse CHECK {refuse}")
        worker = Worker(cfg, book=recorded.book)
        with pytest.raises(StorageError):
            await worker.run()
        unconfirmed = ingest.unconfirmed_ranges(cfg.group_id, cfg.topic)
        assert len(unconfirmed) == 1 and ingest.stored_offsets(cfg.group_id, cfg.topic) == {}
        reader = open_store(url, readonly=True)
        try:
            assert reader.transactions(limit=1), "the failed batch stored rows (half-applied)"
        finally:
            reader.close()
        conn.command(f"ALTER TABLE {table} DROP CONSTRAINT refuse")
    finally:
        conn.close()
    # more records behind the unconfirmed range: a batch formed freely would now be bigger (another token)
    ends = await produce(broker.bootstrap, topic_name, messages[half:], partitions=PARTITIONS)
    await _drain(cfg, ends, recorded.book)
    assert ingest.unconfirmed_ranges(cfg.group_id, cfg.topic) == {}
    ingest.close()
    assert_exact(url, recorded.expected)


async def test_a_worker_joins_and_leaves_while_two_share_the_group_on_chdb(
    broker: EmbeddedBroker, recorded: Recorded, topic_name: str, tmp_path: Path
) -> None:
    """Worker B joins A's group mid-stream, stores batches of its own partitions and leaves; every span once."""
    url = chdb_store(tmp_path)
    messages = recorded.messages
    half = len(messages) // 2
    await produce(broker.bootstrap, topic_name, messages[:half], partitions=PARTITIONS)
    cfg = _config(broker, topic_name, url, batch_size=500)
    a, b = Worker(cfg, book=recorded.book), Worker(cfg, book=recorded.book)
    task_a = asyncio.create_task(a.run())

    def stored() -> int:
        return sum(stored_offsets(url, cfg.group_id, cfg.topic).values())

    try:
        await wait_for(lambda: stored() > 0 or task_a.done(), 120, "worker A to store a batch")
        task_b = asyncio.create_task(b.run())
        try:
            await wait_for(lambda: bool(b.consumer and b.consumer.assignment()) or task_b.done(), 120, "B's share")
            # records for every partition after B owns some: B has work whatever A did meanwhile
            ends = await produce(broker.bootstrap, topic_name, messages[half:], partitions=PARTITIONS)
            await wait_for(lambda: b.stats.batches > 0 or task_b.done(), 120, "worker B to store a batch")
        finally:
            b.request_stop()
            await task_b  # B leaves: its partitions go back to A
        await wait_for(
            lambda: stored_offsets(url, cfg.group_id, cfg.topic) == ends or task_a.done(), 180, "A to drain"
        )
    finally:
        a.request_stop()
        await task_a
    assert a.stats.rebalances >= 3 and b.stats.batches > 0
    assert_exact(url, recorded.expected)


async def test_garbage_interleaved_goes_to_dead_letters_and_good_spans_all_count_on_chdb(
    broker: EmbeddedBroker, recorded: Recorded, topic_name: str, tmp_path: Path
) -> None:
    """1,000 bad messages among the 20,000 spans into ClickHouse: each is a dead letter (table and topic) with its
    reason and size, and the good spans' totals are exact to the nano-dollar."""
    url = chdb_store(tmp_path)
    garbage = garbage_messages(recorded, 1_000)
    ends = await produce(broker.bootstrap, topic_name, interleave(recorded.messages, garbage), partitions=PARTITIONS)
    cfg = _config(broker, topic_name, url, batch_size=5_000)
    worker = await _drain(cfg, ends, recorded.book)
    assert worker.stats.dead_letters == len(garbage)
    assert_exact(url, recorded.expected)

    store = open_store(url, readonly=True)
    try:
        rows = store.dead_letters(limit=2 * len(garbage))
    finally:
        store.close()
    assert len(rows) == len(garbage)
    by_key = {r["key"]: r for r in rows}
    for j, (kind, bad) in enumerate(garbage):
        row = by_key[f"{kind}-{j}"]
        assert row["size"] == len(bad or b"") and row["reason"].strip() and row["topic"] == topic_name, kind
    reasons = {k.rsplit("-", 1)[0]: r["reason"] for k, r in by_key.items()}
    assert "length" in reasons["huge-name"] and ">= 0" in reasons["negative"] and ">= 0" in reasons["nan"]
    from spendtrace.server.store.clickhouse._client import connect  # the stored bytes, which the reads cut

    conn = connect(url, readonly=True)
    try:
        stored = dict(conn.tuples("SELECT key, hex(value) FROM dead_letters FINAL"))
    finally:
        conn.close()
    assert stored == {f"{kind}-{j}": (bad or b"").hex().upper() for j, (kind, bad) in enumerate(garbage)}
    assert await read_dead_letter_topic(broker, cfg.dlq_topic, len(garbage)) == {
        k: r["reason"] for k, r in by_key.items()
    }
