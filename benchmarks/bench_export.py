"""How fast spans leave the app: the recording-side sink, and spans/s through KafkaExporter to a real broker.

References measured in the same run: a bare ``deque.append`` for the sink, and a bare aiokafka
producer sending the same encoded spans (same acks, compression, linger) for the throughput.
Prints absolute numbers and the ratios.

    python benchmarks/bench_export.py [--spans 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import deque

import spendtrace
from spendtrace.schema import Span, UsageItem, encode_span
from spendtrace.sdk import pipeline as _pipeline
from spendtrace.sdk.export import BatchProcessor, InMemoryExporter
from spendtrace.sdk.export._spill import SpillStore
from spendtrace.server.broker import EmbeddedBroker


def make_spans(n: int) -> list[Span]:
    usage = (UsageItem("dynamodb_read", "dynamodb", count=3.0),)
    return [
        Span(span_id=f"s{i}", parent_id=None, request_id=f"r{i // 4}", feature="search", usage=usage, start_ns=i)
        for i in range(n)
    ]


def per_call_ns(fn: object, spans: list[Span]) -> float:
    call = fn  # type: ignore[assignment]
    t = time.perf_counter_ns()
    for s in spans:
        call(s)  # type: ignore[operator]
    return (time.perf_counter_ns() - t) / len(spans)


def bench_sink(spans: list[Span]) -> None:
    bare: deque[Span] = deque()
    ref = min(per_call_ns(bare.append, spans) for _ in range(3))
    with tempfile.TemporaryDirectory() as d:
        # The app thread's own cost: the worker sleeps (long max_delay, batch larger than the run).
        idle = BatchProcessor(InMemoryExporter(), spill_dir=d, batch_size=10**7, max_queue=10**7, max_delay=60)
        own = min(per_call_ns(idle.on_span, spans) for _ in range(3))
        idle.shutdown()
        # Amortised: the worker drains concurrently and shares the GIL with the recording thread.
        busy = BatchProcessor(InMemoryExporter(), spill_dir=d, max_queue=10**7)
        shared = min(per_call_ns(busy.on_span, spans) for _ in range(3))
        busy.shutdown()
    print(
        f"sink, app thread only:       {own:6.0f} ns/span   bare deque.append: {ref:4.0f} ns   ratio {own / ref:.1f}x"
    )
    print(f"sink, with worker draining:  {shared:6.0f} ns/span   (includes the worker's share of the GIL)")


async def bare_producer(bootstrap: str, topic: str, spans: list[Span]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type="gzip", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        t = time.perf_counter()
        for i in range(0, len(spans), 512):
            futures = [
                await producer.send(topic, encode_span(s), key=s.request_id.encode()) for s in spans[i : i + 512]
            ]
            await asyncio.gather(*futures)
        return time.perf_counter() - t
    finally:
        await producer.stop()


def bench_kafka(spans: list[Span]) -> None:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as d:
        processor = spendtrace.configure(kafka_bootstrap=broker.bootstrap, topic="bench.sdk", spill_dir=d)
        _pipeline.submit(spans[0])  # connect and create the topic before timing
        spendtrace.flush(30)
        t = time.perf_counter()
        for s in spans:
            _pipeline.submit(s)
        result = spendtrace.flush(120)
        sdk = time.perf_counter() - t
        stats = processor.counters()
        spendtrace.shutdown()
        asyncio.run(bare_producer(broker.bootstrap, "bench.ref", spans[:512]))  # warm up, creates the topic
        ref = asyncio.run(bare_producer(broker.bootstrap, "bench.ref", spans))
    n = len(spans)
    print(
        f"KafkaExporter via BatchProcessor: {n / sdk:9.0f} spans/s  (delivered {result.delivered}, "
        f"spilled {stats.spilled}, dropped {stats.dropped})"
    )
    print(f"bare aiokafka producer:           {n / ref:9.0f} spans/s   ratio sdk/bare {ref / sdk:.2f}x")


def bench_spill(spans: list[Span]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = SpillStore(d)
        t = time.perf_counter()
        for i in range(0, len(spans), 512):
            store.write(spans[i : i + 512])
        dt = time.perf_counter() - t
        got: list[Span] = []
        t = time.perf_counter()
        while store.replay_one(got.extend):
            pass
        rt = time.perf_counter() - t
    print(
        f"spill write (fsync per 512):      {len(spans) / dt:9.0f} spans/s   replay read: {len(got) / rt:9.0f} spans/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=20_000)
    args = parser.parse_args()
    spans = make_spans(args.spans)
    bench_sink(spans)
    bench_spill(spans)
    bench_kafka(spans)


if __name__ == "__main__":
    main()
