"""OTel-traced app → OTLP exporter → receiver → real broker → a worker → SQLite, exact to the nano-dollar."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from support import instrumented, shop_calls

from consumers.config import WorkerConfig
from consumers.worker import Worker
from spendtrace.schema import decode_span
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.otlp.receiver import KafkaSink, Receiver
from spendtrace.server.store.base import open_store

TENANTS = ("acme", "globex", "initech")


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    with open_store(db) as store:
        return int(store.total()["transaction_count"])


def test_spans_travel_through_the_topic_and_a_worker(
    broker: EmbeddedBroker, topic_name: str, tmp_path: Path, make_tracer: Callable[..., TracerProvider]
) -> None:
    """Spans the receiver publishes are what the SDK publishes: a worker prices and stores them, totals exact."""
    db = tmp_path / "worker.db"
    with Receiver(KafkaSink(broker.bootstrap, topic_name, partitions=3), port=0) as receiver:
        provider = make_tracer("shop", url=receiver.url)
        with instrumented(provider):
            expected: dict[str, int] = {}
            for i in range(6):
                tenant = TENANTS[i % 3]
                expected[tenant] = expected.get(tenant, 0) + shop_calls(provider, tenant, i)
        published = receiver.stats.spans_accepted
    assert published == 6 * 7

    async def drain() -> None:
        cfg = WorkerConfig(bootstrap=broker.bootstrap, db_path=str(db), group_id=f"{topic_name}-g", topic=topic_name,
                           dlq_topic=f"{topic_name}.dlq", alerts_topic=f"{topic_name}.alerts", partitions=3,
                           batch_size=1_000, session_timeout_ms=2_000, heartbeat_interval_ms=400)  # fmt: skip
        worker = Worker(cfg)
        task = asyncio.create_task(worker.run())
        try:
            deadline = asyncio.get_running_loop().time() + 120
            while _stored(db) < published:
                assert asyncio.get_running_loop().time() < deadline, "the worker did not drain the topic in time"
                if task.done():
                    task.result()  # a worker that died raises here
                await asyncio.sleep(0.05)
        finally:
            worker.request_stop()
            await task

    asyncio.run(drain())

    async def placement() -> dict[bytes, set[int]]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(topic_name, bootstrap_servers=broker.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
        await consumer.start()
        try:
            seen: dict[bytes, set[int]] = {}
            read = 0
            deadline = asyncio.get_running_loop().time() + 120
            while read < published:
                assert asyncio.get_running_loop().time() < deadline, f"read {read} of {published} messages"
                batches = await consumer.getmany(timeout_ms=500)
                for tp, msgs in batches.items():
                    for m in msgs:
                        assert decode_span(m.value).request_id.encode() == m.key
                        seen.setdefault(m.key, set()).add(tp.partition)
                        read += 1
            return seen
        finally:
            await consumer.stop()

    keys = asyncio.run(placement())
    assert len(keys) == 6 and all(len(p) == 1 for p in keys.values())  # one request, one partition, as the SDK's
    with open_store(db) as store:
        total = store.total()
        by_user = {r["user_id"]: r["cost_nano"] for r in store.aggregate_by_user()}
    assert total["transaction_count"] == published and total["request_count"] == 6
    assert total["cost_nano"] == sum(expected.values()) and total["unpriced_count"] == 0
    assert by_user == expected
