"""Retention and the worker's clock (issue #15, item 5): aged spans arriving again, a clock that jumps ahead.

Before: spans older than the raw retention that arrived again (a spill replayed after a long outage,
a producer retry) were stored again, because retention had deleted the raw copy that would have made
them duplicates, and every rollup they fed counted them twice; and a worker whose clock jumped to
2100 dated its retention round with it and deleted every raw span.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from _worker_config import worker_config

from consumers.config import WorkerConfig
from consumers.testing import make_spans, produce_spans, stored_offsets, wait_for
from consumers.worker import Worker
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.store.base import open_store

DAY_NS = 86_400 * 10**9


def _config(broker: EmbeddedBroker, topic: str, db: Path) -> WorkerConfig:
    return worker_config(broker, topic, db, retention_interval_s=0.1, retention_chunk_rows=1_000)


def _count(db: Path, sql: str, *params: int) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


def _total_nano(db: Path) -> int:
    store = open_store(db, readonly=True)
    try:
        return int(store.total()["cost_nano"])
    finally:
        store.close()


async def _until_stored(db: Path, cfg: WorkerConfig, ends: dict[int, int], task: asyncio.Task[None]) -> None:
    def caught_up() -> bool:
        stored = stored_offsets(db, cfg.group_id, cfg.topic)
        return task.done() or all(stored.get(p, 0) >= o for p, o in ends.items())

    await wait_for(caught_up, 90, "the worker to store every offset")
    assert not task.done(), "the worker stopped"


async def test_spans_older_than_the_raw_retention_sent_again_are_dead_letters_not_counted_twice(
    broker: EmbeddedBroker, topic_name: str, db_path: Path
) -> None:
    """Spans stored, aged out of raw retention (rollups keep them), then sent again: totals unchanged, reason named."""
    real = time.time_ns()
    clock = [real - 40 * DAY_NS]  # phase 1: the spans are fresh
    cfg = _config(broker, topic_name, db_path)
    old = make_spans(100, seed=41, start_ns=clock[0] - 2 * 3_600 * 10**9)
    worker = Worker(cfg, clock=lambda: clock[0])
    task = asyncio.create_task(worker.run())
    try:
        await _until_stored(db_path, cfg, await produce_spans(broker.bootstrap, topic_name, old, partitions=3), task)
        assert _count(db_path, "SELECT count(*) FROM spans") == 100
        # phase 2: 40 days later, fresh traffic; retention deletes the old raw spans, the rollups keep them
        clock[0] = real
        fresh = make_spans(100, seed=42)
        await _until_stored(db_path, cfg, await produce_spans(broker.bootstrap, topic_name, fresh, partitions=3), task)
        aged = "SELECT count(*) FROM spans WHERE start_ns < ?"
        await wait_for(lambda: _count(db_path, aged, real - 30 * DAY_NS) == 0, 60, "retention of the old raw spans")
        before = _total_nano(db_path)
        assert before > 0 and _count(db_path, "SELECT count(*) FROM spans") == 100
        # phase 3: the old spans arrive again (a spill replayed after a long outage)
        again = await produce_spans(broker.bootstrap, topic_name, old, partitions=3)
        await _until_stored(db_path, cfg, again, task)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
    assert _total_nano(db_path) == before
    assert _count(db_path, "SELECT count(*) FROM spans") == 100
    with sqlite3.connect(db_path) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM dead_letters")]
    assert len(reasons) == 100
    assert all(r.startswith("older than the raw-span retention horizon") for r in reasons), reasons[0]
    assert worker.stats.dead_letters == 100


async def test_a_worker_clock_that_jumps_to_2100_deletes_no_history(
    broker: EmbeddedBroker, topic_name: str, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention is dated no later than the newest stored span + 1 day: a clock in 2100 keeps every raw span."""
    caplog.set_level(logging.INFO, logger="consumers.worker")
    real = time.time_ns()
    clock = [real]
    cfg = _config(broker, topic_name, db_path)
    spans = [
        *make_spans(100, seed=43, start_ns=real - 20 * DAY_NS),
        *make_spans(100, seed=44, start_ns=real - 10 * DAY_NS),
        *make_spans(100, seed=45),
    ]
    worker = Worker(cfg, clock=lambda: clock[0])
    task = asyncio.create_task(worker.run())
    try:
        await _until_stored(db_path, cfg, await produce_spans(broker.bootstrap, topic_name, spans, partitions=3), task)
        await wait_for(lambda: worker.stats.retention_runs > 0, 30, "a retention round at the right time")
        before = _total_nano(db_path)
        clock[0] = 4_102_444_800 * 10**9  # 2100-01-01
        runs = worker.stats.retention_runs
        await wait_for(lambda: worker.stats.retention_runs >= runs + 2, 30, "a whole round dated after the jump")
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
    assert _count(db_path, "SELECT count(*) FROM spans") == 300
    assert _total_nano(db_path) == before
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("ahead of the newest stored span" in m and "deletes no history" in m for m in errors), errors
