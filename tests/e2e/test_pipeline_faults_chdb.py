"""Worker processes writing ClickHouse's engine (chDB), SIGKILLed from outside at random moments: exact totals.

chDB opens one data directory per process, and this test process already holds the session's. So each
worker here is a real ``python -m consumers --store chdb:///DIR`` process owning a directory of its own;
the test sees its progress through its metrics and the group's Kafka offsets, and reads the store only
after the last worker has stopped, from a child process (``_READ``), through the storage interface.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline_support import Recorded, kafka_committed, scrape, start_worker, stop_worker

from consumers.testing import produce, wait_for
from spendtrace.server.broker import EmbeddedBroker, free_port

PARTITIONS = 6
KILLS = 3

# What the child prints: every figure test_pipeline_clickhouse.assert_exact compares, as JSON.
_READ = """
import json, sys
from spendtrace.server.store.base import open_store
store = open_store(sys.argv[1], readonly=True)
try:
    n = int(sys.argv[2])
    total = store.total()
    print(json.dumps({
        "spans": {r["span_id"]: r["cost_nano"] for r in store.transactions(limit=n + 1000)},
        "total": [total["cost_nano"], total["transaction_count"], total["request_count"], total["unpriced_count"]],
        "direct": {r["feature"]: r["direct_cost_nano"] for r in store.get_feature_cost_breakdown()},
        "loaded": {r["feature"]: r["fully_loaded_cost_nano"] for r in store.get_feature_cost_breakdown()},
        "requests": {r["request_id"]: [r["cost_nano"], r["tx_count"]]
                     for r in store.get_request_cost(limit=n + 10, order="cost")},
    }))
finally:
    store.close()
"""


def _spans_stored(port: int) -> float:
    try:
        return scrape(port).get("spendtrace_consumer_spans_total", 0.0)
    except OSError:  # not listening yet
        return 0.0


def _read_store(url: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _READ, url, str(n)], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


async def test_chdb_worker_sigkilled_at_random_moments_loses_and_doubles_nothing(
    broker: EmbeddedBroker, recorded: Recorded, topic_name: str, tmp_path: Path
) -> None:
    """Worker processes on chDB killed from outside mid-stream, several times (seeded), then one drains: exact."""
    seed = int(os.environ.get("SPENDTRACE_TEST_SEED", random.randrange(1 << 32)))
    print(f"seed {seed} (SPENDTRACE_TEST_SEED={seed} repeats these kill moments)")
    rng = random.Random(seed)
    ends = await produce(broker.bootstrap, topic_name, recorded.messages, partitions=PARTITIONS)
    total = sum(ends.values())
    group = f"{topic_name}-g"
    url = f"chdb://{tmp_path / 'chdb'}"
    log = tmp_path / "workers.log"

    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "consumers", "--bootstrap", broker.bootstrap, "--store", url, "--group", group,
            "--topic", topic_name, "--partitions", str(PARTITIONS), "--session-timeout-ms", "2000",
            "--batch-size", "500", "--metrics-port", str(port), "--log-level", "WARNING",
        ]  # fmt: skip

    killed_at: list[float] = []
    for k in range(KILLS):
        port = free_port()
        proc = start_worker(command(port), log)
        try:
            # Each worker stores a random number of spans, then lives a random moment more, so the kills
            # land in different places: inside an insert, between the tables, before the offsets. Small
            # enough that the first kill is mid-stream however fast the machine is (a few batches of 20,000).
            target = rng.randint(1, 1500)
            await wait_for(lambda p=port, t=target, w=proc: _spans_stored(p) >= t or w.poll() is not None, 180,
                           f"worker {k} to store {target} spans")  # fmt: skip
            assert proc.poll() is None, f"worker {k} exited by itself with {proc.returncode}: see {log}"
            await asyncio.sleep(rng.uniform(0, 0.1))
            killed_at.append(_spans_stored(port))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        if k == 0:
            committed = await kafka_committed(broker, group, topic_name, PARTITIONS)
            assert sum(committed.values()) < total, "the first kill came after the end of the stream"
    print(f"spans each killed worker had stored: {killed_at}")

    port = free_port()
    proc = start_worker(command(port), log)
    try:
        committed: dict[int, int] = {}
        deadline = time.monotonic() + 180
        while committed != ends:  # the worker commits to Kafka after the store: equal ends means all is stored
            assert proc.poll() is None, f"the last worker exited with {proc.returncode}: see {log}"
            assert time.monotonic() < deadline, f"the last worker stalled: committed {committed}, ends {ends}"
            await asyncio.sleep(0.25)
            now = await kafka_committed(broker, group, topic_name, PARTITIONS)
            if now != committed:
                committed, deadline = now, time.monotonic() + 180
    finally:
        assert stop_worker(proc) == 0  # SIGTERM: a graceful stop, so the directory is free for the reader

    e = recorded.expected
    got = _read_store(url, len(e.spans))
    assert got["spans"] == e.span_cost
    assert got["total"] == [e.total_nano, len(e.spans), len(e.requests), e.unpriced_items]
    assert got["direct"] == {f: v["cost_nano"] for f, v in e.by_feature.items()}
    assert got["loaded"] == e.loaded
    assert got["requests"] == {rid: [v["cost_nano"], v["spans"]] for rid, v in e.requests.items()}
