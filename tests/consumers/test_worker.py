"""The consumer worker against the real broker and real SQLite files: offsets, replays, dead letters, hooks."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from _worker_config import worker_config
from aiokafka import AIOKafkaConsumer, TopicPartition
from independent_pricing import cost_nano

from consumers.config import WorkerConfig
from consumers.testing import make_spans, produce, produce_spans, stored_offsets, wait_for
from consumers.worker import Worker
from spendtrace.schema import UsageItem, encode_span
from spendtrace.server.broker import EmbeddedBroker


def _config(broker: EmbeddedBroker, topic: str, db: Path, group: str = "g", **kw: Any) -> WorkerConfig:
    return worker_config(broker, topic, db, group=group, batch_size=kw.pop("batch_size", 200), **kw)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run ``worker`` in a task; on exit ask it to stop and wait for it (re-raising its failure)."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)


def _scalar(db: Path, sql: str, *args: Any) -> Any:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchone()[0]


def _drained(cfg: WorkerConfig, ends: dict[int, int]) -> Callable[[], bool]:
    return lambda: stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == ends


async def test_worker_stores_priced_spans_then_commits_offsets(broker: EmbeddedBroker, topic_name: str, db_path: Path):
    """Every span is stored once with its price; the database and then Kafka hold the offsets reached."""
    spans = make_spans(900, seed=1)
    ends = await produce_spans(broker.bootstrap, topic_name, spans, partitions=3)
    cfg = _config(broker, topic_name, db_path)
    async with running(Worker(cfg)) as worker:
        await wait_for(_drained(cfg, ends), 60, "the worker to store every offset")
    assert _scalar(db_path, "SELECT count(*) FROM spans") == len(spans)
    assert worker.stats.messages == len(spans)  # records fetched before the assignment's seek were not reprocessed
    expected = cost_nano(spans)
    assert expected > 0
    assert _scalar(db_path, "SELECT sum(cost_nano) FROM spans") == expected
    assert _scalar(db_path, "SELECT sum(cost_nano) FROM rollup_day WHERE service = ''") == expected
    probe = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=cfg.group_id, enable_auto_commit=False)
    await probe.start()
    try:
        committed = {p: await probe.committed(TopicPartition(topic_name, p)) for p in ends}
    finally:
        await probe.stop()
    assert committed == ends


async def test_worker_starts_from_database_offsets_not_kafka(broker: EmbeddedBroker, topic_name: str, db_path: Path):
    """Offsets stored in the database decide where a worker starts: spans before them are not read again."""
    spans = make_spans(600, seed=2)
    messages = [(s.request_id.encode(), encode_span(s)) for s in spans]
    ends = await produce(broker.bootstrap, topic_name, messages, partitions=3)
    cfg = _config(broker, topic_name, db_path)
    # Pretend an earlier run stored partition 0 up to half its messages (and nothing of the others), and its
    # commit to Kafka lags behind (Kafka still knows the group reads this log: see test_topic_restart.py).
    half = ends[0] // 2
    earlier = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=cfg.group_id, enable_auto_commit=False)
    await earlier.start()
    try:
        earlier.assign([TopicPartition(topic_name, 0)])
        await earlier.commit({TopicPartition(topic_name, 0): half // 2})
    finally:
        await earlier.stop()
    from spendtrace.server.store.sqlite._db import connect

    conn = connect(db_path)
    conn.execute(
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, updated_ns) VALUES (?,?,?,?,0)",
        (cfg.group_id, topic_name, 0, half),
    )
    conn.close()
    seen: list[Any] = []
    worker = Worker(cfg)
    worker.add_post_commit_hook(lambda result: _append(seen, result))
    async with running(worker):
        await wait_for(_drained(cfg, ends), 60, "the worker to store every offset")
        await worker.hooks.drain()
    assert _scalar(db_path, "SELECT count(*) FROM spans") == len(spans) - half
    assert sum(r.new_spans for r in seen) == len(spans) - half


async def _append(into: list[Any], item: Any) -> None:
    into.append(item)


async def test_replaying_the_topic_counts_nothing_twice(broker: EmbeddedBroker, topic_name: str, db_path: Path):
    """A second group reading the same messages into the same database adds no span and changes no total."""
    spans = make_spans(700, seed=3)
    ends = await produce_spans(broker.bootstrap, topic_name, spans, partitions=3)
    first = _config(broker, topic_name, db_path, group="first")
    async with running(Worker(first)):
        await wait_for(_drained(first, ends), 60, "the first group to drain")
    tables = ("spans", "rollup_hour", "loaded_day", "requests")
    totals = [_scalar(db_path, f"SELECT sum(cost_nano) FROM {t}") for t in tables]
    results: list[Any] = []
    second = _config(broker, topic_name, db_path, group="second")
    worker = Worker(second)
    worker.add_post_commit_hook(lambda result: _append(results, result))
    async with running(worker):
        await wait_for(_drained(second, ends), 60, "the second group to drain")
        await worker.hooks.drain()
    assert [_scalar(db_path, f"SELECT sum(cost_nano) FROM {t}") for t in tables] == totals
    assert _scalar(db_path, "SELECT count(*) FROM spans") == len(spans)
    assert sum(r.new_spans for r in results) == 0
    assert sum(r.duplicate_spans for r in results) == len(spans)


def _garbage() -> list[tuple[str, bytes | None]]:
    good = make_spans(1, seed=9)[0]
    neg = msgspec.structs.replace(good, span_id="neg", usage=(UsageItem("dynamodb_read", count=-1.0),))
    nan = msgspec.structs.replace(good, span_id="nan", usage=(UsageItem("s3_put", count=math.nan),))
    return [
        ("random bytes", b"\xc1\xff\x00garbage"),
        ("wrong schema", msgspec.msgpack.encode({"hello": "world"})),
        ("negative units", encode_span(neg)),
        ("NaN units", encode_span(nan)),
        ("no value", None),
        ("huge name", encode_span(msgspec.structs.replace(good, span_id="big", feature="f" * 5000))),
    ]


async def test_bad_messages_become_dead_letters_and_the_batch_goes_on(
    broker: EmbeddedBroker, topic_name: str, db_path: Path
):
    """Each bad message lands in dead_letters and on the DLQ topic with its bytes and reason; good spans all count."""
    spans = make_spans(300, seed=4)
    garbage = _garbage()
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, s in enumerate(spans):
        messages.append((s.request_id.encode(), encode_span(s)))
        if i % 50 == 0 and i // 50 < len(garbage):
            messages.append((b"bad-" + garbage[i // 50][0].encode(), garbage[i // 50][1]))
    ends = await produce(broker.bootstrap, topic_name, messages, partitions=3)
    cfg = _config(broker, topic_name, db_path, batch_size=64)
    async with running(Worker(cfg)) as worker:
        await wait_for(_drained(cfg, ends), 60, "the worker to store every offset")
    assert worker.stats.dead_letters == len(garbage)
    assert worker.stats.messages == len(messages)
    assert _scalar(db_path, "SELECT count(*) FROM spans") == len(spans)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute('SELECT key, value, reason, partition, "offset" FROM dead_letters').fetchall()
    by_key = {bytes(k).decode(): (v, reason) for k, v, reason, _, _ in rows}
    assert set(by_key) == {"bad-" + name for name, _ in garbage}
    for name, value in garbage:
        stored, reason = by_key["bad-" + name]
        assert (bytes(stored) if stored is not None else None) == value
        assert reason
    assert "Expected" in by_key["bad-negative units"][1] and "length" in by_key["bad-huge name"][1]

    dlq = AIOKafkaConsumer(cfg.dlq_topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await dlq.start()
    try:
        got: dict[bytes, dict[str, bytes]] = {}

        async def read_some() -> None:
            for records in (await dlq.getmany(timeout_ms=200)).values():
                for r in records:
                    got[r.key] = dict(r.headers)
                    assert r.value == dict(garbage)[r.key.decode()[4:]]

        deadline = asyncio.get_running_loop().time() + 30
        while len(got) < len(garbage) and asyncio.get_running_loop().time() < deadline:
            await read_some()
    finally:
        await dlq.stop()
    assert {k.decode() for k in got} == set(by_key)
    for key, headers in got.items():
        assert headers["reason"].decode() == by_key[key.decode()][1]
        assert headers["source_topic"].decode() == topic_name
    positions = {(p, o) for _, _, _, p, o in rows}
    assert {(int(h["source_partition"]), int(h["source_offset"])) for h in got.values()} == positions


async def test_post_commit_hook_runs_after_the_transaction(broker: EmbeddedBroker, topic_name: str, db_path: Path):
    """When a hook runs, another connection already sees the batch's spans; a slow hook does not hold ingestion."""
    spans = make_spans(400, seed=5)
    ends = await produce_spans(broker.bootstrap, topic_name, spans, partitions=3)
    cfg = _config(broker, topic_name, db_path, batch_size=50)
    visible: list[tuple[int, int]] = []
    release = asyncio.Event()

    async def hook(result: Any) -> None:
        visible.append((result.new_spans, _scalar(db_path, "SELECT count(*) FROM spans")))
        await release.wait()  # stuck until everything is ingested

    worker = Worker(cfg, hook_queue=2)
    worker.add_post_commit_hook(hook)
    async with running(worker):
        await wait_for(_drained(cfg, ends), 60, "ingestion to finish while the hook is stuck")
        assert len(visible) == 1  # the hook has only seen the first batch so far
        release.set()
        await worker.hooks.drain()
    assert visible[0][1] >= visible[0][0] > 0
    assert worker.hooks.dropped > 0
    assert worker.stats.batches >= 8


async def test_workers_apply_retention_while_consuming(broker: EmbeddedBroker, topic_name: str, db_path: Path):
    """Spans older than the stored policy are deleted by the worker's periodic round; daily totals stay."""
    from spendtrace import SQLiteStorage

    day = 86_400 * 10**9
    old = make_spans(200, seed=6, start_ns=time.time_ns() - 10 * day)
    new = make_spans(200, seed=7)
    ends = await produce_spans(broker.bootstrap, topic_name, old + new, partitions=3)
    cfg = _config(broker, topic_name, db_path, retention_interval_s=0.2)
    expected = cost_nano(old + new)
    async with running(Worker(cfg)) as worker:
        await wait_for(_drained(cfg, ends), 60, "the worker to store every offset")
        # shortened after they were stored: sent now, the old spans would be dead letters (past the horizon)
        with SQLiteStorage(db_path) as st:
            st.set_retention(raw_data_days=3, hourly_rollups_days=365, daily_rollups_days=1825)
        runs = worker.stats.retention_runs
        await wait_for(lambda: worker.stats.retention_runs >= runs + 2, 30, "a whole round after the policy changed")
    assert _scalar(db_path, "SELECT count(*) FROM spans") == len(new)
    assert _scalar(db_path, "SELECT sum(cost_nano) FROM rollup_day WHERE service = ''") == expected
