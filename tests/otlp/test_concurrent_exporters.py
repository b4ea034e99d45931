"""Many real OTLP exporters at once: the receiver's shared batches deliver every span once, totals exact."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from support import GPT_4O_MINI, frozen, nano, topic_span_ids

from consumers.config import WorkerConfig
from consumers.worker import Worker
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.otlp.receiver import KafkaSink, Receiver
from spendtrace.server.store.base import open_store

APPS, TRACES = 6, 40  # each trace: a root, a feature span and two chat calls = 4 spans
SPANS = APPS * TRACES * 4


def _app(url: str, app: int, start: threading.Barrier, costs: dict[str, int]) -> None:
    """One traced service: its own provider and exporter, small batches, so exports overlap with the others'."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"svc{app}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url), max_export_batch_size=37,
                                                   schedule_delay_millis=5))  # fmt: skip
    tracer = provider.get_tracer("load")
    tenant = f"tenant-{app % 4}"
    cost = 0
    start.wait()
    for i in range(TRACES):
        with (
            tracer.start_as_current_span("POST /answer", attributes={"enduser.id": tenant, "http.route": "/answer"}),
            tracer.start_as_current_span("answer", attributes={"spendtrace.feature": f"feature-{i % 3}"}),
        ):
            for k in range(2):
                prompt, completion = 100 + app * 7 + i, 10 + k
                usage = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                         "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                         "gen_ai.usage.input_tokens": prompt, "gen_ai.usage.output_tokens": completion}  # fmt: skip
                with tracer.start_as_current_span("chat gpt-4o-mini", attributes=usage):
                    pass
                cost += nano((prompt, GPT_4O_MINI["input"]), (completion, GPT_4O_MINI["output"]))
    assert provider.force_flush(120)
    provider.shutdown()
    costs[f"svc{app}"] = cost


def _drain(broker: EmbeddedBroker, topic: str, db: Path, spans: int = SPANS) -> None:
    async def run() -> None:
        cfg = WorkerConfig(bootstrap=broker.bootstrap, db_path=str(db), group_id=f"{topic}-g", topic=topic,
                           dlq_topic=f"{topic}.dlq", alerts_topic=f"{topic}.alerts", partitions=3,
                           batch_size=1_000, session_timeout_ms=2_000, heartbeat_interval_ms=400)  # fmt: skip
        worker = Worker(cfg)
        task = asyncio.create_task(worker.run())
        try:
            deadline = asyncio.get_running_loop().time() + 120
            while _stored(db) < spans:
                assert asyncio.get_running_loop().time() < deadline, "the worker did not drain the topic in time"
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        finally:
            worker.request_stop()
            await task

    asyncio.run(run())


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    with open_store(db) as store:
        return int(store.total()["transaction_count"])


@pytest.mark.parametrize("batch_bytes", [KafkaSink.MAX_BATCH_BYTES, 4096], ids=["default-batches", "4KiB-batches"])
def test_concurrent_exporters_deliver_every_span_exactly_once(
    broker: EmbeddedBroker, topic_name: str, tmp_path: Path, batch_bytes: int
) -> None:
    """Six services export at once through one receiver: every span is on the topic once and stored once, exact.

    With 4 KiB batches the exports of one round fill many batches per partition, one export's
    records often split across two.
    """
    costs: dict[str, int] = {}
    sink = KafkaSink(broker.bootstrap, topic_name, partitions=3, max_batch_bytes=batch_bytes)
    with Receiver(sink, port=0) as receiver:
        start = threading.Barrier(APPS)
        threads = [threading.Thread(target=_app, args=(receiver.url, a, start, costs)) for a in range(APPS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        stats = receiver.stats
    assert len(costs) == APPS, "an app thread failed"
    assert (stats.spans_accepted, stats.spans_rejected, stats.unavailable, stats.throttled) == (SPANS, 0, 0, 0)
    assert stats.requests > APPS  # the exports really were many, and overlapped (each app's batches are small)
    ids = topic_span_ids(broker.bootstrap, topic_name)
    assert len(ids) == SPANS and len(set(ids)) == SPANS  # on the topic exactly once: no retry, no loss
    db = tmp_path / "worker.db"
    _drain(broker, topic_name, db)
    with open_store(db) as store:
        total = store.total()
        by_feature = {r["feature"]: r["cost_nano"] for r in store.aggregate_by_feature()}
    assert total["transaction_count"] == SPANS and total["request_count"] == APPS * TRACES
    assert total["cost_nano"] == sum(costs.values()) and total["unpriced_count"] == 0
    assert sum(by_feature.values()) == sum(costs.values()) and set(by_feature) >= {"feature-0", "feature-1"}


def test_a_frozen_broker_gets_503s_and_the_retries_lose_nothing(
    own_broker: EmbeddedBroker, topic_name: str, tmp_path: Path
) -> None:
    """The broker stops answering mid-load: shared batches fail as 503 for their requests, retries deliver all.

    Every span is on the topic at least once (a request refused after part of it was acknowledged is
    sent again in full), and the worker stores each exactly once.
    """
    import json
    import time

    from support import json_export, post

    now = time.time_ns()
    exports = [
        json_export([{"traceId": f"{c + 1:08x}{i:024x}", "spanId": f"{c + 1:04x}{i * 4 + k:012x}", "name": "x",
                      "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000),
                      "attributes": [{"key": "spendtrace.feature", "value": {"stringValue": "f"}}]}
                     for k in range(4)])
        for c in range(4) for i in range(60)
    ]  # fmt: skip
    refused: list[int] = []

    def client(bodies: list[bytes], url: str) -> None:
        for body in bodies:
            while True:
                status, headers, raw = post(url, body, "application/json")
                if status == 200:
                    assert "partialSuccess" not in json.loads(raw)
                    break
                assert status in (429, 503) and int(headers["retry-after"]) > 0
                refused.append(status)
                time.sleep(0.05)  # the exporter's back-off, shortened (Retry-After says 2 s)

    pid = own_broker._proc.pid  # type: ignore[union-attr]
    with Receiver(KafkaSink(own_broker.bootstrap, topic_name, partitions=3, timeout=2.0), port=0) as receiver:
        threads = [threading.Thread(target=client, args=(exports[c::4], receiver.url)) for c in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while receiver.stats.spans_accepted < 100:  # load is flowing
            assert time.monotonic() < deadline and any(t.is_alive() for t in threads)
            time.sleep(0.01)
        with frozen(pid):
            while receiver.stats.unavailable < 1:  # a produce timed out: its round was answered 503
                assert time.monotonic() < deadline, "no 503 while the broker was frozen"
                time.sleep(0.01)
        for t in threads:
            t.join(300)
        stats = receiver.stats
    assert 503 in refused and stats.spans_accepted == len(exports) * 4
    ids = topic_span_ids(own_broker.bootstrap, topic_name)
    assert set(ids) == {f"{c + 1:04x}{i * 4 + k:012x}" for c in range(4) for i in range(60) for k in range(4)}
    db = tmp_path / "worker.db"
    _drain(own_broker, topic_name, db, len(exports) * 4)
    with open_store(db) as store:
        assert store.total()["transaction_count"] == len(exports) * 4


def test_an_export_the_broker_never_acknowledges_is_refused(own_broker: EmbeddedBroker, topic_name: str) -> None:
    """Connected, then the broker freezes: the export's batch goes out but no ack comes, so 503, never 200."""
    import time

    from support import json_export, post

    def export(n: int) -> bytes:
        now = str(time.time_ns())
        return json_export([{"traceId": f"{n:032x}", "spanId": f"{n:016x}", "name": "x",
                             "startTimeUnixNano": now, "endTimeUnixNano": now}])  # fmt: skip

    def until_accepted(receiver: Receiver, body: bytes) -> int:
        """Post as an exporter retries (a 503 again later) until accepted; how many 503s it took."""
        refused, deadline = 0, time.monotonic() + 120
        while (status := post(receiver.url, body, "application/json")[0]) != 200:
            assert status == 503 and time.monotonic() < deadline, (status, receiver.stats)
            refused += 1
            time.sleep(0.2)  # the exporter's back-off; on a loaded machine a 1 s ack timeout can pass
        return refused

    pid = own_broker._proc.pid  # type: ignore[union-attr]
    with Receiver(KafkaSink(own_broker.bootstrap, topic_name, partitions=3, timeout=1.0), port=0) as receiver:
        before = until_accepted(receiver, export(1))  # the producer is connected
        with frozen(pid):  # every broker thread stopped before the export goes out
            status, headers, _ = post(receiver.url, export(2), "application/json")
        assert status == 503 and int(headers["retry-after"]) > 0, (status, headers, receiver.stats)
        after = until_accepted(receiver, export(2))  # the exporter's retry
        assert receiver.stats.unavailable == before + 1 + after, (before, after, receiver.stats)
