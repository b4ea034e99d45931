"""Retention in the worker: a large aged backlog is deleted in chunks between batches, never stalling ingest."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from consumers.cli import build_parser, config_from_args
from consumers.config import WorkerConfig
from consumers.testing import make_spans, stored_offsets, wait_for
from consumers.worker import Worker
from spendtrace.schema import encode_span
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from spendtrace.server.store.sqlite._retention import set_retention
from spendtrace.server.topics import ensure_topics

DAY_NS = 86_400 * 10**9
AGED = 20_000


def _snapshot(db: Path, cutoff_ns: int) -> tuple[int, int]:
    """(aged spans, younger spans), read in one statement so both come from the same commit."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        aged, young = conn.execute(
            "SELECT (SELECT count(*) FROM spans WHERE start_ns < ?), (SELECT count(*) FROM spans WHERE start_ns >= ?)",
            (cutoff_ns, cutoff_ns),
        ).fetchone()
    return int(aged), int(young)


async def test_worker_stores_new_spans_while_a_retention_backlog_is_worked_off(
    broker: EmbeddedBroker, topic_name: str, db_path: Path
) -> None:
    """20,000 aged spans go in chunks of 5 rows; batches of new spans commit while that round is under way."""
    cfg = WorkerConfig(
        bootstrap=broker.bootstrap,
        db_path=str(db_path),
        group_id=f"{topic_name}-g",
        topic=topic_name,
        dlq_topic=f"{topic_name}.dlq",
        alerts_topic=f"{topic_name}.alerts",
        partitions=3,
        batch_size=100,
        session_timeout_ms=2_000,
        heartbeat_interval_ms=400,
        retention_interval_s=0.2,
        # 5-row chunks: the round over the backlog takes thousands of chunks (seconds), so batches of the
        # spans sent meanwhile have time to land inside it even on a loaded machine (50-row chunks finished
        # a 17,650-row round before the next batch arrived in one CI run)
        retention_chunk_rows=5,
    )
    await ensure_topics(broker.bootstrap, [topic_name], partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    ends: dict[int, int] = {}
    sent = 0
    stop_sending = asyncio.Event()

    async def keep_sending() -> None:
        nonlocal sent
        seed = 100
        while not stop_sending.is_set():
            seed += 1
            spans = make_spans(40, seed=seed)
            for fut in [await producer.send(topic_name, encode_span(s), key=s.request_id.encode()) for s in spans]:
                md = await fut
                ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
            sent += len(spans)

    worker = Worker(cfg)
    run = asyncio.create_task(worker.run())
    sender = asyncio.create_task(keep_sending())
    try:
        # Phase 1: the worker stores new spans and has finished a round on a store with nothing aged.
        await wait_for(lambda: worker.stats.stored > 0 and worker.stats.retention_runs > 0, 60, "ingest and a round")
        # Phase 2: a large backlog ages in at once while spans keep coming: stored 20 days old (another
        # writer, one transaction; within the 30-day cutoff retention applied, which the write checks),
        # then the raw retention is shortened to 10 days.
        now = time.time_ns()
        cutoff = now - 10 * DAY_NS
        with contextlib.closing(connect(db_path)) as conn:
            write_batch_sync(
                conn, prepare_batch(make_spans(AGED, seed=8, start_ns=now - 20 * DAY_NS), PriceBook.default())
            )
            set_retention(conn, raw_data_days=10)
        runs = worker.stats.retention_runs
        first: list[tuple[int, int]] = []
        during: list[tuple[int, int]] = []

        def interleaved() -> bool:
            aged, young = _snapshot(db_path, cutoff)
            if not first:
                if aged < AGED:  # the round has deleted some of the backlog
                    first.append((aged, young))
            elif young > first[0][1] and aged > 0:  # a batch committed since, and the round is not done
                during.append((aged, young))
            return bool(during) or (aged == 0 and worker.stats.retention_runs > runs)

        # the round's length depends on the machine's load: fail when neither deleting nor storing moves
        await wait_for(interleaved, 120, "a batch stored while the backlog was being deleted",
                       progress=lambda: _snapshot(db_path, cutoff))  # fmt: skip
        assert during, f"the round finished without a batch in between (first snapshot {first})"
        assert 0 < during[0][0] < AGED
        # A round that committed its last chunk just before the backlog went in may be counted only after
        # ``runs`` was read (the writer's reply crosses processes), so wait for the backlog itself to be gone.
        await wait_for(lambda: worker.stats.retention_runs > runs and _snapshot(db_path, cutoff)[0] == 0, 120,
                       "the round over the backlog to finish", progress=lambda: _snapshot(db_path, cutoff))  # fmt: skip
        stop_sending.set()
        await sender
        # how many spans were sent during the round depends on the machine's load: fail on a stall, not on slowness
        await wait_for(lambda: stored_offsets(db_path, cfg.group_id, topic_name) == ends, 60, "every new span stored",
                       progress=lambda: stored_offsets(db_path, cfg.group_id, topic_name))  # fmt: skip
    finally:
        stop_sending.set()
        with contextlib.suppress(BaseException):
            await sender
        worker.request_stop()
        await asyncio.wait_for(run, 60)
        await producer.stop()
    assert _snapshot(db_path, cutoff) == (0, sent)
    assert worker.stats.stored == sent


def test_retention_chunk_rows_option_reaches_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    """``--retention-chunk-rows`` lands in the worker's settings; zero is refused (exit 2, saying which option)."""
    assert config_from_args(build_parser().parse_args([])).retention_chunk_rows == 20_000
    assert config_from_args(build_parser().parse_args(["--retention-chunk-rows", "500"])).retention_chunk_rows == 500
    with pytest.raises(SystemExit) as exc:
        config_from_args(build_parser().parse_args(["--retention-chunk-rows", "0"]))
    assert exc.value.code == 2 and "--retention-chunk-rows" in capsys.readouterr().err
