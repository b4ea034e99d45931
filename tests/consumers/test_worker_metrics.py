"""The workers' ``--metrics-port`` endpoint: valid Prometheus text, commit latency histogram, lag and stored spend."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from _worker_config import worker_config
from independent_pricing import cost_nano
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from consumers.config import WorkerConfig
from consumers.metrics import Histogram, serve_metrics
from consumers.testing import FEATURES, TENANTS, make_spans, produce_spans, stored_offsets
from consumers.worker import Worker
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.store.sqlite._db import connect

PARTITIONS = 3
DEADLINE_S = 60.0


def _samples(text: str) -> dict[str, list[Sample]]:
    """Samples by sample name; parsing fails on anything that is not Prometheus exposition text."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _check_histogram(samples: dict[str, list[Sample]], name: str) -> int:
    """Assert the buckets of every series are cumulative and end at ``+Inf`` = count; return the total count."""
    total = 0
    for count in samples[f"{name}_count"]:
        worker = count.labels["worker"]
        buckets = [s for s in samples[f"{name}_bucket"] if s.labels["worker"] == worker]
        bounds = [float(s.labels["le"]) for s in buckets]
        values = [s.value for s in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == float("inf")
        assert values == sorted(values), f"buckets not cumulative: {values}"
        assert values[-1] == count.value
        total += int(count.value)
    return total


def test_histogram_renders_cumulative_buckets() -> None:
    """Observations land in the first bucket that holds them; the text has cumulative buckets, sum and count."""
    h = Histogram((0.01, 0.1, 1.0))
    observed = (0.005, 0.01, 0.05, 0.5, 0.5, 3.0)
    for seconds in observed:
        h.observe(seconds)
    text = "# TYPE t histogram\n" + "\n".join(h.samples("t", 'worker="0"')) + "\n"
    samples = _samples(text)
    assert [(s.labels["le"], s.value) for s in samples["t_bucket"]] == [
        ("0.01", 2),
        ("0.1", 3),
        ("1.0", 5),
        ("+Inf", 6),
    ]
    assert samples["t_count"][0].value == 6
    assert abs(samples["t_sum"][0].value - sum(observed)) < 1e-9
    assert _check_histogram(samples, "t") == 6


def _config(broker: EmbeddedBroker, topic: str, db: Path) -> WorkerConfig:
    return worker_config(broker, topic, db, partitions=PARTITIONS)


@asynccontextmanager
async def _endpoint(worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """The real metrics server on a free loopback port, and a client pointed at it."""
    server = await serve_metrics(0, lambda: [worker], host="127.0.0.1")
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.close()
        await server.wait_closed()


async def _scrape(client: httpx.AsyncClient) -> dict[str, list[Sample]]:
    resp = await client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return _samples(resp.text)


def _lag(samples: dict[str, list[Sample]], topic: str) -> dict[int, float]:
    lag = samples.get("spendtrace_consumer_lag", [])
    assert all(s.labels["topic"] == topic for s in lag)
    return {int(s.labels["partition"]): s.value for s in lag}


async def test_metrics_endpoint_serves_lag_latency_and_stored_spend(
    broker: EmbeddedBroker, topic_name: str, db_path: Path
) -> None:
    """Mid-run the lag per partition is what is left to store; once drained it is 0 and the spend matches the DB."""
    spans = make_spans(900, seed=11)
    ends = await produce_spans(broker.bootstrap, topic_name, spans, partitions=PARTITIONS)
    assert len(ends) == PARTITIONS and min(ends.values()) > 100  # every partition needs more than one batch
    cfg = _config(broker, topic_name, db_path)
    worker = Worker(cfg)
    await worker.start()
    try:
        async with _endpoint(worker) as client:
            # One batch: some partition has been fetched from (a high watermark is known) but not drained.
            deadline = time.monotonic() + DEADLINE_S
            while worker.stats.batches == 0:
                assert time.monotonic() < deadline, "the worker committed no batch"
                await worker.step()
                await worker.drain()
            mid = await _scrape(client)
            stored = stored_offsets(db_path, cfg.group_id, topic_name)
            lag = _lag(mid, topic_name)
            assert lag, "no partition reported a lag after the first batch"
            assert lag == {p: ends[p] - stored.get(p, 0) for p in lag}
            assert sum(lag.values()) > 0
            assert _check_histogram(mid, "spendtrace_batch_commit_seconds") == worker.stats.batches

            while stored_offsets(db_path, cfg.group_id, topic_name) != ends:
                assert time.monotonic() < deadline + DEADLINE_S, "the worker did not store every offset"
                await worker.step()
                await worker.drain()
            done = await _scrape(client)
    finally:
        await worker.stop()

    assert _lag(done, topic_name) == dict.fromkeys(range(PARTITIONS), 0)
    assert _check_histogram(done, "spendtrace_batch_commit_seconds") == worker.stats.batches >= 9
    with sqlite3.connect(db_path) as conn:
        stored_nano = conn.execute("SELECT sum(cost_nano) FROM spans").fetchone()[0]
    assert stored_nano == cost_nano(spans) > 0
    assert done["spendtrace_cost_usd_total"][0].value == stored_nano / 1e9
    assert done["spendtrace_spans_ingested_total"][0].value == len(spans)
    assert done["spendtrace_dead_letters_total"][0].value == 0
    assert done["spendtrace_unpriced_usage_total"][0].value == 0
    assert done["spendtrace_alerts_fired_total"][0].value == 0
    assert done["spendtrace_webhook_failures_total"][0].value == 0
    # Direct cost per feature, and cost per service, each add up to the total.
    features = {s.labels["feature"]: s.value for s in done["spendtrace_feature_cost_usd_total"]}
    assert set(features) == {*FEATURES, "__other__"} and features["__other__"] == 0  # every feature in the top set
    assert abs(sum(features.values()) - stored_nano / 1e9) < 1e-9
    services = {s.labels["service"]: s.value for s in done["spendtrace_service_cost_usd_total"]}
    assert set(services) == {"dynamodb", "bedrock", "s3"} and min(services.values()) > 0
    assert abs(sum(services.values()) - stored_nano / 1e9) < 1e-9
    assert done["spendtrace_consumer_spans_total"][0].value == len(spans)
    # Bounded labels: no tenant ever becomes a label name or value.
    every = [s for group in done.values() for s in group]
    assert not any(k in ("tenant", "user_id", "user") for s in every for k in s.labels)
    assert not any(v in TENANTS for s in every for v in s.labels.values())


def _idle_worker(db: Path) -> Worker:
    """A worker that is never started (no broker): enough for the metrics endpoint to read its store."""
    connect(db).close()
    return Worker(WorkerConfig(bootstrap="127.0.0.1:9", db_path=str(db), group_id="g", topic="t",
                               dlq_topic="t.dlq", alerts_topic="t.alerts"))


async def test_scrapes_read_the_store_off_the_workers_executor(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """12 scrapes stuck on a slow store read leave the event loop's default executor (the ingest path's) free,
    and every read runs on the metrics' own thread."""
    from consumers import metrics

    gate = threading.Event()
    threads: set[str] = set()
    real = metrics._read_store

    def slow_read(*args: str) -> tuple[str, dict[int, int]]:
        threads.add(threading.current_thread().name)
        gate.wait(DEADLINE_S)
        return real(*args)

    monkeypatch.setattr(metrics, "_read_store", slow_read)
    async with _endpoint(_idle_worker(db_path)) as client:
        scrapes = [asyncio.create_task(client.get("/metrics")) for _ in range(12)]
        deadline = time.monotonic() + DEADLINE_S
        while not threads:
            assert time.monotonic() < deadline, "no scrape reached the store"
            await asyncio.sleep(0.01)
        ingest_work = [asyncio.to_thread(lambda: "stored") for _ in range(8)]  # what the worker's writes need
        assert await asyncio.wait_for(asyncio.gather(*ingest_work), DEADLINE_S) == ["stored"] * 8
        gate.set()
        responses = await asyncio.gather(*scrapes)
    assert [r.status_code for r in responses] == [200] * 12
    assert all("spendtrace_consumer_batches_total" in r.text for r in responses)
    assert threads and all(name.startswith("spendtrace-metrics") for name in threads), threads


async def test_metrics_bind_loopback_by_default(db_path: Path) -> None:
    """serve_metrics and ``--metrics-host`` default to 127.0.0.1; the option takes another address."""
    from consumers.cli import build_parser as consumer_parser

    server = await serve_metrics(0, lambda: [])
    try:
        assert server.sockets[0].getsockname()[0] == "127.0.0.1"
    finally:
        server.close()
        await server.wait_closed()
    assert consumer_parser().parse_args(["--metrics-port", "9100"]).metrics_host == "127.0.0.1"
    assert consumer_parser().parse_args(["--metrics-host", "0.0.0.0"]).metrics_host == "0.0.0.0"
