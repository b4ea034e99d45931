"""Alerts end to end: spans through the real broker, real workers, a real loopback webhook, the alerts topic."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.alerting import AlertEvaluator, attach_alerting
from consumers.config import WorkerConfig
from consumers.testing import produce_spans, stored_offsets, wait_for
from consumers.worker import Worker
from spendtrace.schema import Span, UsageItem
from spendtrace.server.alerts.rules import set_alert
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.pricing import PriceBook, PriceEntry

NS = 1_000_000_000
BOOK = PriceBook([PriceEntry(key="unit_call", service="dynamodb", per_request=Decimal("1"))], name="e2e")


class Clock:
    """A settable wall clock shared by every worker's evaluator in a test."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def dollar_spans(n: int, at_ns: int, tag: str, feature: str = "search") -> list[Span]:
    """``n`` one-span requests costing $1 each (one request id per span, so they spread over partitions)."""
    return [
        Span(span_id=f"{tag}-{i}", parent_id=None, request_id=f"{tag}-{i}", feature=feature, start_ns=at_ns + i,
             usage=(UsageItem(key="unit_call", service="dynamodb", count=1.0),), path=(feature,))
        for i in range(n)
    ]


def config(broker: EmbeddedBroker, topic: str, db: Path, group: str = "g") -> WorkerConfig:
    """A small-batch worker configuration on the session broker (a group of this test's own)."""
    return WorkerConfig(bootstrap=broker.bootstrap, db_path=str(db), group_id=f"{group}-{topic}", topic=topic,
                        dlq_topic=f"{topic}.dlq", alerts_topic=f"{topic}.alerts", partitions=3, batch_size=5)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """All rows of a query on a fresh connection."""
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchall()


@asynccontextmanager
async def workers(cfg: WorkerConfig, n: int, clock: Clock, **delivery: Any) -> AsyncIterator[list[AlertEvaluator]]:
    """Run ``n`` workers of one group, each with alerting attached; stop and close everything on exit."""
    ws = [Worker(cfg, book=BOOK) for _ in range(n)]
    evs = [attach_alerting(w, clock=clock, **delivery) for w in ws]
    for w, ev in zip(ws, evs, strict=True):
        ev.worker = w  # type: ignore[attr-defined]  # lets settle() drain the worker's hooks
    tasks = [asyncio.create_task(w.run()) for w in ws]
    try:
        yield evs
    finally:
        for w in ws:
            w.request_stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        for ev in evs:
            await ev.aclose()
            assert ev.dispatcher is not None
            await ev.dispatcher.aclose(timeout=0.5)


async def settle(cfg: WorkerConfig, ends: dict[int, int], evs: list[AlertEvaluator], what: str) -> None:
    """Wait until every offset is stored, then until every evaluator and dispatcher has caught up."""
    await wait_for(lambda: stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == ends, 60, what)
    for ev in evs:
        await ev.worker.hooks.drain()  # type: ignore[attr-defined]
        assert ev.dispatcher is not None
        await ev.dispatcher.drain()


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.bodies.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def now_ns() -> int:
    """A recent whole minute: the workers' retention keeps minute rollups for two days only, so no fixed date."""
    return time.time_ns() // (60 * NS) * 60 * NS - 5 * 60 * NS


@pytest.fixture
def hook_url() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real loopback HTTP server answering 200; yields its URL and the bodies it received."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    srv.bodies = []  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/services/T1/B2/tok3n", srv.bodies  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


async def alerts_on_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every message on the alerts topic up to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not parts:
            await consumer.client.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        out: list[dict[str, Any]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            batch = await consumer.getmany(timeout_ms=500)
            out += [json.loads(m.value) for msgs in batch.values() for m in msgs]
        return out
    finally:
        await consumer.stop()


async def test_threshold_fires_once_per_cooldown_with_two_workers(
    broker: EmbeddedBroker, topic_name: str, db_path: Path, now_ns: int,
    hook_url: tuple[str, list[dict[str, Any]]],
) -> None:
    """$40 of spans against a $10 rule, split over two workers, fire once; after the cooldown, once more."""
    url, bodies = hook_url
    set_alert(feature="search", threshold=10, window_hours=1, webhook=url,
              allow_private=True, cooldown_minutes=60, name="search-10",
              db_path=db_path)
    cfg = config(broker, topic_name, db_path)
    clock = Clock(now_ns)
    async with workers(cfg, 2, clock, backoff=0.01) as evs:
        ends = await produce_spans(broker.bootstrap, topic_name, dollar_spans(40, now_ns, "a"), partitions=3)
        await settle(cfg, ends, evs, "the first 40 spans")
        assert sum(len(ev.fired) for ev in evs) == 1
        assert sum(ev.evaluations for ev in evs) >= 2  # several batches were evaluated, one fired
        clock.now_ns += 61 * 60 * NS
        more = dollar_spans(15, clock.now_ns, "b")
        ends = await produce_spans(broker.bootstrap, topic_name, more, partitions=3)
        await settle(cfg, ends, evs, "the next 15 spans")
    fired = rows(db_path, "SELECT rule_name, value_nano, delivery FROM alert_events ORDER BY id")
    assert [(r[0], r[2]) for r in fired] == [("search-10", "delivered"), ("search-10", "delivered")]
    assert fired[0][1] > 10 * NS and fired[1][1] > 10 * NS
    assert len(bodies) == 2 and all(b["text"].startswith("[spendtrace] search-10") for b in bodies)
    on_topic = await alerts_on_topic(broker.bootstrap, cfg.alerts_topic)
    assert sorted(m["id"] for m in on_topic) == [r[0] for r in rows(db_path, "SELECT id FROM alert_events ORDER BY id")]
    assert {m["rule_name"] for m in on_topic} == {"search-10"}
    tail = subprocess.run(
        [sys.executable, "-m", "spendtrace", "alerts", "tail", "--bootstrap", broker.bootstrap, "--topic",
         cfg.alerts_topic, "--from-beginning", "--count", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.count("[spendtrace] search-10: feature 'search' spent") == 2


async def test_dead_webhook_does_not_hold_ingestion(broker: EmbeddedBroker, topic_name: str, db_path: Path,
                                                    now_ns: int) -> None:
    """While a delivery hangs on a webhook that never answers, later spans are still committed."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)  # completes TCP handshakes, never answers
    set_alert(feature="search", threshold=2, webhook=f"http://127.0.0.1:{sink.getsockname()[1]}/x",
              allow_private=True, name="dead",
              db_path=db_path)
    cfg = config(broker, topic_name, db_path)
    try:
        async with workers(cfg, 1, Clock(now_ns), timeout=120, max_attempts=1) as evs:
            ends = await produce_spans(broker.bootstrap, topic_name, dollar_spans(5, now_ns, "a"), partitions=3)
            await wait_for(lambda: stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == ends, 60, "first spans")
            await wait_for(lambda: bool(evs[0].fired), 30, "the alert to fire")
            later = await produce_spans(broker.bootstrap, topic_name, dollar_spans(30, now_ns, "b"), partitions=3)
            await wait_for(lambda: stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == later, 60, "later spans")
            assert rows(db_path, "SELECT count(*) FROM spans") == [(35,)]
            assert rows(db_path, "SELECT delivery FROM alert_events") == [("sending",)]  # claimed, still hanging
            assert rows(db_path, "SELECT count(*) FROM alert_deliveries") == [(0,)]
    finally:
        sink.close()


async def test_replay_after_a_crash_fires_nothing_new(broker: EmbeddedBroker, topic_name: str, db_path: Path,
                                                       now_ns: int) -> None:
    """Re-reading every span (offsets lost) adds no spend, so even a zero-cooldown rule fires nothing new."""
    set_alert(feature="search", threshold=3, cooldown_minutes=0, name="no-cooldown", db_path=db_path)
    clock = Clock(now_ns)
    first = config(broker, topic_name, db_path, group="first")
    async with workers(first, 1, clock) as evs:
        ends = await produce_spans(broker.bootstrap, topic_name, dollar_spans(10, now_ns, "a"), partitions=3)
        await settle(first, ends, evs, "the first pass")
    before = rows(db_path, "SELECT id FROM alert_events")
    assert len(before) >= 1
    async with AsyncExitStack() as stack:
        replay = config(broker, topic_name, db_path, group="replay")  # a group with no offsets: reads it all again
        evs = await stack.enter_async_context(workers(replay, 1, clock))
        await settle(replay, ends, evs, "the replay")
        assert rows(db_path, "SELECT id FROM alert_events") == before
        ends = await produce_spans(broker.bootstrap, topic_name, dollar_spans(1, now_ns, "new"), partitions=3)
        await wait_for(lambda: len(rows(db_path, "SELECT id FROM alert_events")) == len(before) + 1, 60,
                       "new spend to fire the rule again")


async def test_threshold_fires_once_per_cooldown_with_two_workers_on_chdb(
    broker: EmbeddedBroker, topic_name: str, tmp_path: Path, now_ns: int,
    hook_url: tuple[str, list[dict[str, Any]]],
) -> None:
    """The same on a ClickHouse store (chDB; alert state in its own tables, claimed): one firing per cooldown."""
    import uuid

    from spendtrace.server.store.base import open_alert_store

    store = f"chdb://{tmp_path.parent / 'chdb'}?database=alerts_{uuid.uuid4().hex[:12]}"
    url, bodies = hook_url
    set_alert(feature="search", threshold=10, window_hours=1, webhook=url, allow_private=True,
              cooldown_minutes=60, name="search-10", db_path=store)  # fmt: skip
    cfg = config(broker, topic_name, store)  # type: ignore[arg-type]  # a store URL where a path may go
    clock = Clock(now_ns)
    async with workers(cfg, 2, clock, backoff=0.01) as evs:
        ends = await produce_spans(broker.bootstrap, topic_name, dollar_spans(40, now_ns, "a"), partitions=3)
        await settle(cfg, ends, evs, "the first 40 spans")
        assert sum(len(ev.fired) for ev in evs) == 1
        clock.now_ns += 61 * 60 * NS
        ends = await produce_spans(broker.bootstrap, topic_name, dollar_spans(15, clock.now_ns, "b"), partitions=3)
        await settle(cfg, ends, evs, "the next 15 spans")
    alerts = open_alert_store(store, readonly=True)
    try:
        fired = [(e.rule_name, e.delivery, e.value_nano) for e in reversed(alerts.latest_events(10))]
    finally:
        alerts.close()
    assert [(r[0], r[1]) for r in fired] == [("search-10", "delivered"), ("search-10", "delivered")]
    assert all(r[2] > 10 * NS for r in fired)
    assert len(bodies) == 2
