"""Metrics end to end: an app records spans with the real SDK and Kafka exporter, a real ``spendtrace-consumer``
stores them, and its ``--metrics-port`` endpoint, scraped during and after the run, reports what the database holds.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.store.sqlite import SQLiteStorage

DEADLINE_S = 120.0
ENDPOINTS = ("/api/search", "/api/recommend")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {sorted labels: value}; parsing fails on anything that is not Prometheus exposition text."""
    resp = httpx.get(url, timeout=30)
    assert resp.status_code == 200
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _cost(scrape: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> float | None:
    values = scrape.get("spendtrace_cost_usd_total")
    return values[()] if values else None


@contextmanager
def _consumer(broker: EmbeddedBroker, topic: str, db: Path, log: Path) -> Iterator[str]:
    """``spendtrace-consumer --metrics-port`` as a process of its own; yields the metrics URL once it answers."""
    port = _free_port()
    argv = [
        sys.executable, "-m", "consumers", "--bootstrap", broker.bootstrap, "--db", str(db),
        "--group", f"{topic}-g", "--topic", topic, "--dlq-topic", f"{topic}.dlq", "--alerts-topic", f"{topic}.alerts",
        "--partitions", "3", "--batch-size", "300", "--session-timeout-ms", "2000", "--metrics-port", str(port),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}:\n{log.read_text()}"
            try:
                if "spendtrace_cost_usd_total" in _scrape(url):  # the database exists: the worker has started
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no metrics within {DEADLINE_S}s:\n{log.read_text()}"
            time.sleep(0.1)
        yield url
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _record(requests: int, offset: int) -> None:
    """Serve ``requests`` requests in the instrumented app (real SDK: request scope, nested features, usage)."""
    from spendtrace import add_api_call, cost_track, track_request

    @cost_track(feature="catalog")
    def catalog(i: int) -> None:
        add_api_call("dynamodb_read", count=1 + i % 3)

    @cost_track(feature="assistant")
    def assistant(i: int) -> None:
        add_api_call("bedrock_claude_3_haiku", input_tokens=300 + i % 101, output_tokens=50 + i % 17)
        catalog(i)

    for i in range(offset, offset + requests):
        with track_request(endpoint=ENDPOINTS[i % 2], user_id=f"tenant-{i % 5}"):
            (assistant if i % 2 else catalog)(i)


def _drained(db: Path, exported: int) -> int:
    """Wait until the database holds ``exported`` spans; return its total in nano-dollars."""
    deadline = time.monotonic() + DEADLINE_S
    with SQLiteStorage(db, readonly=True) as storage:
        while True:
            total = storage.total()
            if total["transaction_count"] == exported:
                return int(total["cost_nano"])
            assert total["transaction_count"] < exported, total
            assert time.monotonic() < deadline, f"stored {total['transaction_count']} of {exported} spans"
            time.sleep(0.05)


def test_worker_metrics_match_the_database_during_and_after_the_run(
    broker: EmbeddedBroker, topic_name: str, db_path: Path, tmp_path: Path
) -> None:
    """``spendtrace_cost_usd_total`` equals the database total once drained; scrapes in between only ever grow."""
    import spendtrace
    from spendtrace.sdk import config as _config
    from spendtrace.sdk import sampling as _sampling

    previous_rate = _sampling.get_global_sample_rate()
    _config.reset()
    scrapes: list[float | None] = []
    lag_seen: list[bool] = []
    stop = threading.Event()
    with _consumer(broker, topic_name, db_path, tmp_path / "worker.log") as url:
        try:
            spendtrace.configure(
                kafka_bootstrap=broker.bootstrap, topic=topic_name, partitions=3, sample_rate=1.0,
                spill_dir=tmp_path / "spill", max_delay=0.05,
            )  # fmt: skip
            _record(300, 0)
            assert spendtrace.flush(30).all_delivered
            first_exported = spendtrace.get_stats().exported
            first_total = _drained(db_path, first_exported)
            first = _scrape(url)
            assert _cost(first) == first_total / 1e9 > 0
            assert first["spendtrace_spans_ingested_total"][()] == first_exported

            def scrape_while_running() -> None:
                while not stop.is_set():
                    s = _scrape(url)
                    scrapes.append(_cost(s))
                    lag_seen.append(bool(s.get("spendtrace_consumer_lag")))
                    time.sleep(0.02)

            scraper = threading.Thread(target=scrape_while_running)
            scraper.start()
            try:
                _record(900, 300)
                assert spendtrace.flush(30).all_delivered
                exported = spendtrace.get_stats().exported
                total = _drained(db_path, exported)
            finally:
                stop.set()
                scraper.join(60)
            final = _scrape(url)
        finally:
            _config.reset()
            _sampling.set_global_sample_rate(previous_rate)

    assert exported > first_exported and total > first_total
    assert _cost(final) == total / 1e9
    assert final["spendtrace_spans_ingested_total"][()] == exported
    assert final["spendtrace_unpriced_usage_total"][()] == 0 and final["spendtrace_dead_letters_total"][()] == 0
    features = {dict(k)["feature"]: v for k, v in final["spendtrace_feature_cost_usd_total"].items()}
    assert set(features) == {"catalog", "assistant", "__other__"} and features["__other__"] == 0
    assert abs(sum(features.values()) - total / 1e9) < 1e-9
    assert final["spendtrace_batch_commit_seconds_count"][(("worker", "0"),)] >= 2
    lag = {dict(k)["partition"]: v for k, v in final["spendtrace_consumer_lag"].items()}
    assert lag == {"0": 0, "1": 0, "2": 0}
    # Scraped while the app was still sending: valid every time, lag reported, never shrinking, never past the end.
    assert scrapes and all(lag_seen)
    costs = [c for c in scrapes if c is not None]
    assert len(costs) == len(scrapes) and costs == sorted(costs)
    assert first_total / 1e9 <= costs[0] and costs[-1] <= total / 1e9
    assert not any("tenant" in k for family in final.values() for labels in family for kv in labels for k in kv)
