"""A topic that restarts empty under a worker (issue #15, item 1), on the real embedded broker restarted empty.

Before: the worker sought to the offsets stored in the database, above the new log's end, and every new
message below them was treated as already stored (lost, with no log line). Each test runs on both stores:
the check trusts whichever store holds the offsets (SQLite's file, or a database in the session's chDB).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from _worker_config import worker_config
from independent_pricing import cost_nano

from consumers.config import WorkerConfig
from consumers.testing import make_spans, produce_spans, stored_offsets, wait_for
from consumers.worker import Worker
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.store.base import open_store


@pytest.fixture(params=["sqlite", "chdb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of each backend: a SQLite file, or a database in the session's one chDB directory."""
    if request.param == "sqlite":
        return str(tmp_path / "restart.db")
    return f"chdb://{tmp_path.parent / 'chdb'}?database=restart_{uuid.uuid4().hex[:12]}"


def _config(broker: EmbeddedBroker, topic: str, url: str) -> WorkerConfig:
    return worker_config(broker, topic, url, batch_size=200)


def _spans_stored(url: str) -> tuple[int, int]:
    """How many spans the store holds and their cost, read through the storage interface."""
    store = open_store(url, readonly=True)
    try:
        total = store.total()
    finally:
        store.close()
    return int(total["transaction_count"]), int(total["cost_nano"])


async def _run_until_stored(cfg: WorkerConfig, ends: dict[int, int]) -> Worker:
    worker = Worker(cfg)
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: task.done() or stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == ends, 90,
                       f"the worker to store offsets {ends}")  # fmt: skip
        assert not task.done(), "the worker stopped"
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
    return worker


async def test_a_broker_restarted_empty_is_detected_and_its_new_log_read_from_the_beginning(
    own_broker: EmbeddedBroker, topic_name: str, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After the restart every new span is stored (none skipped below the old offsets), each partition's reset is
    an ERROR line and counted in ``offset_resets``, and the spans of the first log are not counted twice."""
    cfg = _config(own_broker, topic_name, store_url)
    first = make_spans(900, seed=40)
    ends = await produce_spans(own_broker.bootstrap, topic_name, first, partitions=3)
    await _run_until_stored(cfg, ends)
    old = stored_offsets(cfg.db_path, cfg.group_id, cfg.topic)
    assert _spans_stored(store_url)[0] == len(first)

    own_broker.restart()  # empty: no topic, no group, no committed offset
    # Fewer messages than before in every partition: each new log ends below the stored offset...
    second = make_spans(450, seed=41)
    ends = await produce_spans(own_broker.bootstrap, topic_name, second, partitions=3)
    assert all(ends[p] < old[p] for p in ends)
    caplog.set_level(logging.ERROR, logger="consumers.checkpoint")
    worker = await _run_until_stored(cfg, ends)
    # ...and each is read from its beginning: every span of both logs stored once, to the nano-dollar.
    assert _spans_stored(store_url) == (len(first) + len(second), cost_nano(first + second))
    assert worker.stats.offset_resets == 3
    resets = [r.getMessage() for r in caplog.records if "Re-reading it from offset 0" in r.getMessage()]
    assert len(resets) == 3 and all("Kafka holds no committed offset" in m for m in resets)

    # A worker joining the group later (Kafka has the new log's commits now) trusts the store again.
    again = await _run_until_stored(cfg, ends)
    assert again.stats.offset_resets == 0 and again.stats.spans == 0


async def test_a_restarted_log_that_already_grew_past_the_stored_offsets_is_read_whole(
    own_broker: EmbeddedBroker, topic_name: str, store_url: str
) -> None:
    """The new log outgrew the old offsets before the worker came back: the records below them are read too."""
    cfg = _config(own_broker, topic_name, store_url)
    first = make_spans(300, seed=42)
    await _run_until_stored(cfg, await produce_spans(own_broker.bootstrap, topic_name, first, partitions=3))
    old = stored_offsets(cfg.db_path, cfg.group_id, cfg.topic)
    own_broker.restart()
    second = make_spans(900, seed=43)
    ends = await produce_spans(own_broker.bootstrap, topic_name, second, partitions=3)
    assert all(ends[p] > old[p] for p in ends)
    worker = await _run_until_stored(cfg, ends)
    assert _spans_stored(store_url)[0] == len(first) + len(second)
    assert worker.stats.stored == len(second) and worker.stats.offset_resets == 3
