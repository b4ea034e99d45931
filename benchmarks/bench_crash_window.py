"""How many spans a SIGKILL of an app takes with it: a real child records to a real broker, then is killed.

The child configures the Kafka exporter (embedded broker, its own spill directory), records
``--spans`` spans at ``--rate`` spans/s (0: as fast as it can), says so, and is SIGKILLed at
once. The parent then reads every message on the child's topic and every span in its spill
directory: what is in neither, and was not dropped (counted) while recording, was lost. It also
reads the child's crash record, the figure the next start reports as ``lost_at_crash``. The
reference is the recording itself: the loss is printed as spans and as milliseconds of the
child's traffic at its measured rate.

    python benchmarks/bench_crash_window.py [--rate 0 --rate 20000] [--spans 400000] [--repeat 3] [--stall]

``--stall`` stops the broker (SIGSTOP) while the child records, as a destination that hangs does: every
export waits, and what is not spilled is in memory. The child records one second of traffic then,
three seconds otherwise.

Run with PYTHONPATH pointing at another tree (and the same script) to compare two versions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from spendtrace.schema import Span, decode_span
from spendtrace.sdk.export._pending import reap
from spendtrace.sdk.export._spill import SpillStore
from spendtrace.server.broker import EmbeddedBroker

CHILD = r"""
import sys, time
import spendtrace
from spendtrace.sdk import pipeline
from consumers.testing import make_spans

bootstrap, topic, spill, n, rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
options = {"max_delay": float(sys.argv[6])} if len(sys.argv) > 6 else {}
spans = make_spans(n, seed=5)
spendtrace.configure(kafka_bootstrap=bootstrap, topic=topic, spill_dir=spill, **options)
pipeline.submit(spans[0])  # connect and create the topic before recording
assert spendtrace.flush(30).all_delivered
print("ready", flush=True)
sys.stdin.readline()  # the parent may stall the broker first
submit = pipeline.submit
t0 = time.perf_counter()
if rate <= 0:
    for s in spans[1:]:
        submit(s)
else:
    for i in range(1, n, 100):
        ahead = t0 + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        for s in spans[i : i + 100]:
            submit(s)
elapsed = time.perf_counter() - t0
print(f"done {elapsed:.6f} {spendtrace.get_stats().dropped}", flush=True)
time.sleep(3600)
"""


async def topic_span_ids(bootstrap: str, topic: str) -> set[str]:
    """Every span id on ``topic``, read from the beginning to the end offsets of each partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not parts:
            await consumer.client.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ids: set[str] = set()
        idle = 0
        while idle < 3:  # the embedded broker's "latest" can lag one batch: read until three empty polls
            got = await consumer.getmany(timeout_ms=500, max_records=10_000)
            n = sum(len(v) for v in got.values())
            idle = idle + 1 if n == 0 else 0
            for records in got.values():
                ids.update(decode_span(r.value).span_id for r in records if r.value is not None)
        return ids
    finally:
        await consumer.stop()


def spill_span_ids(spill: Path) -> set[str]:
    """Every span id in the spill files the child left."""
    got: list[Span] = []
    store = SpillStore(spill, fsync=False)
    while store.replay_one(got.extend):
        pass
    store.close()
    return {s.span_id for s in got}


def one_kill(
    broker: EmbeddedBroker, rate: float, n: int, tag: str, stall: bool, max_delay: float | None = None
) -> tuple[int, int, float, int]:
    """(lost at the kill, counted by the crash record, the child's rate in spans/s, dropped before it) for one SIGKILL.

    Spans the child dropped (and counted) while recording, at a full buffer, are not lost at the kill.
    ``stall``: the broker is stopped (SIGSTOP) while the child records, so every export hangs.
    """
    with tempfile.TemporaryDirectory() as d:
        spill = Path(d) / "spill"
        topic = f"crash.{tag}"
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, broker.bootstrap, topic, str(spill), str(n), str(rate)]
            + ([] if max_delay is None else [str(max_delay)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        broker_pid = broker._proc.pid if broker._proc is not None else 0
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            if stall:
                os.kill(broker_pid, signal.SIGSTOP)
            child.stdin.write("go\n")
            child.stdin.flush()
            line = child.stdout.readline().split()
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
            elapsed, dropped = float(line[1]), int(line[2])
        finally:
            if stall:
                os.kill(broker_pid, signal.SIGCONT)
            if child.poll() is None:
                child.kill()
                child.wait()
        counted = sum(held for _, held in reap(spill))
        sent = asyncio.run(topic_span_ids(broker.bootstrap, topic))
        spilled = spill_span_ids(spill)
        lost = n - len(sent | spilled) - dropped
        print(f"  ({len(sent)} on the topic, {len(spilled - sent)} only in the spill)", flush=True)
        return lost, counted, (n - 1) / elapsed, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, action="append", help="spans/s; 0 = as fast as the app can")
    parser.add_argument("--spans", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-delay", type=float, help="the child's configure(max_delay=...); default: the SDK's")
    parser.add_argument("--stall", action="store_true", help="stop the broker (SIGSTOP) while the child records")
    args = parser.parse_args()
    rates = args.rate or [0.0, 100_000.0, 20_000.0, 2_000.0]
    with EmbeddedBroker() as broker:
        for rate in rates:
            for rep in range(args.repeat):
                n = args.spans if rate <= 0 else min(args.spans, int(rate * (1 if args.stall else 3)))
                tag = f"{int(rate)}.{rep}.{os.getpid()}"
                lost, counted, actual, dropped = one_kill(broker, rate, n, tag, args.stall, args.max_delay)
                print(
                    f"rate {'max' if rate <= 0 else int(rate):>6} ({actual:8.0f} spans/s): {n} recorded, "
                    f"lost at SIGKILL {lost:6d} = {1000 * lost / actual:6.1f} ms of traffic; "
                    f"crash record counted {counted}; dropped while recording {dropped}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
