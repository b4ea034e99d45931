"""A worker started before its broker (issue #15, item 11): it retries with backoff and says so, then consumes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from consumers.config import WorkerConfig
from consumers.testing import make_spans, produce_spans, stored_offsets, wait_for
from consumers.worker import Worker
from spendtrace.server.broker import EmbeddedBroker, free_port


async def test_a_worker_waits_for_an_unreachable_bootstrap_then_consumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One WARNING line per attempt while nothing listens; once the broker is up the worker joins and stores."""
    caplog.set_level(logging.WARNING, logger="consumers.worker")
    broker = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log")
    cfg = WorkerConfig(
        bootstrap=broker.bootstrap, db_path=str(tmp_path / "cost.db"), group_id="g", topic="spans",
        dlq_topic="spans.dlq", alerts_topic="spans.alerts", partitions=2, batch_size=100,
        session_timeout_ms=2_000, heartbeat_interval_ms=400,
    )  # fmt: skip
    worker = Worker(cfg)
    task = asyncio.create_task(worker.run())

    def attempts() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot reach Kafka")]

    try:
        await wait_for(lambda: task.done() or len(attempts()) >= 2, 60, "two attempts to reach Kafka")
        assert not task.done(), f"the worker gave up: {task.exception() if task.done() else ''}"
        assert f"at {broker.bootstrap} (attempt 1:" in attempts()[0] and "retrying in 0.5s" in attempts()[0]
        assert "(attempt 2:" in attempts()[1] and "retrying in 1.0s" in attempts()[1]
        broker.start()
        ends = await produce_spans(broker.bootstrap, cfg.topic, make_spans(200, seed=50), partitions=2)
        await wait_for(lambda: task.done() or stored_offsets(cfg.db_path, "g", cfg.topic) == ends, 90, "the spans")
        assert not task.done()
        assert any(r.getMessage().startswith("reached Kafka at") for r in caplog.records)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
        broker.stop()
    assert worker.stats.stored == 200


async def test_a_stop_request_ends_the_wait_for_the_bootstrap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM (request_stop) while the broker is unreachable: run() returns cleanly, no traceback."""
    caplog.set_level(logging.WARNING, logger="consumers.worker")
    cfg = WorkerConfig(bootstrap=f"127.0.0.1:{free_port()}", db_path=str(tmp_path / "cost.db"), group_id="g")
    worker = Worker(cfg)
    task = asyncio.create_task(worker.run())
    await wait_for(lambda: task.done() or any("cannot reach Kafka" in r.getMessage() for r in caplog.records), 60,
                   "an attempt to reach Kafka")  # fmt: skip
    assert not task.done()
    worker.request_stop()
    await asyncio.wait_for(task, 30)
    assert task.exception() is None and worker.stats.batches == 0
