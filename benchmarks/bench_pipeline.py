"""Spans per second through one consumer worker, beside a bare aiokafka consume and a bare SQLite insert.

    python benchmarks/bench_pipeline.py [--spans 1000000] [--batch-size 20000] [--workers-compare] [--repeat 3]
    python benchmarks/bench_pipeline.py --store chdb:///tmp/bench-chdb [--spans 300000]

One run, one embedded broker, the same messages for every measurement:
1. bare consume: an ``AIOKafkaConsumer`` (no group, no decoding) reading the topic end to end;
2. bare insert: ``executemany`` of the same rows into a table shaped like ``spans`` with two
   indexes, one transaction, on a fresh file with the worker's pragmas;
3. the worker (one consumer-group member: its process fetches, decodes and prices, its writer
   process commits spans + rollups + offsets), from the group assignment until the stored
   offsets reach the end of every partition: pipeline fill and drain included.
Prints spans/s of each and the ratios against the targets (worker >= 0.5x bare insert, and
well over 100,000 spans/s). With ``--store chdb:///dir`` (or a ``clickhouse://`` server) the worker
writes ClickHouse and 2. is a bare ``client.insert`` of the same rows, in batches of ``--batch-size``,
into a fresh database with the same schema (every materialized view runs): issue #13's reference.
``--workers-compare`` also times 2 workers as processes vs tasks.
``--profile FILE`` writes a cProfile of the worker run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.config import WorkerConfig
from consumers.testing import make_spans, produce_spans, stored_offsets
from consumers.worker import Worker, load_price_book, tune_gc, tune_threads
from spendtrace.schema import decode_span, encode_span
from spendtrace.server.broker import EmbeddedBroker


async def bare_consume(bootstrap: str, topic: str, n: int, batch: int) -> float:
    """Seconds for a plain consumer to read ``n`` messages (values untouched)."""
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
    )
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        got = 0
        t0 = time.perf_counter()
        while got < n:
            for records in (await c.getmany(timeout_ms=500, max_records=batch)).values():
                got += len(records)
        return time.perf_counter() - t0
    finally:
        await c.stop()


def bare_insert(path: Path, rows: list[tuple[object, ...]]) -> float:
    """Seconds for one executemany of ``rows`` into a spans-shaped table with two indexes, committed."""
    from spendtrace.server.store.sqlite._db import _PRAGMAS

    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    conn.execute("PRAGMA journal_mode = WAL")
    cols = len(rows[0])
    conn.execute(f"CREATE TABLE spans (span_id TEXT PRIMARY KEY, {', '.join(f'c{i}' for i in range(1, cols))})")
    conn.execute("CREATE INDEX spans_request ON spans (c2)")  # request_id
    conn.execute("CREATE INDEX spans_start ON spans (c7)")  # start_ns
    sql = f"INSERT INTO spans VALUES ({', '.join('?' * cols)})"
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def bare_clickhouse_insert(url: str, batches: list[Any]) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) for ``client.insert`` of each prepared batch's rows into ``spans`` at
    ``url`` (the views run too)."""
    from spendtrace.server.store.clickhouse._client import connect
    from spendtrace.server.store.clickhouse._ingest import SPAN_NAMES

    conn = connect(url)  # created and migrated before the clock starts
    n = len(SPAN_NAMES)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            columns = [b.span_values[i::n] for i in range(n)]
            conn.client.insert(
                "spans", [*columns, [""] * len(b.spans)], column_names=[*SPAN_NAMES, "batch"], column_oriented=True
            )
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        conn.close()


def _database(store: str, name: str) -> str:
    """``store`` (a ClickHouse URL) naming database ``name`` instead of its own."""
    from urllib.parse import urlsplit

    parts = urlsplit(store)
    if parts.scheme == "chdb":
        return f"chdb://{parts.netloc}{parts.path}?database={name}"
    return f"{parts.scheme}://{parts.netloc}/{name}"


async def run_worker(cfg: WorkerConfig, ends: dict[int, int], profile: str | None) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) from the group assignment to the last batch committed, for one worker.

    Run with the garbage collector and the GIL switch interval set as ``spendtrace-consumer`` sets them
    (``tune_gc``, ``tune_threads``; the interval is put back after, for the bare measurements), and
    this script's own data (a million spans and rows, held for the other measurements) frozen out of
    the collections: in the worker's process it would not exist.
    """
    tune_gc()
    switch = sys.getswitchinterval()
    if "://" in str(cfg.db_path):  # as spendtrace-consumer: a ClickHouse store only
        tune_threads()
    try:
        return await _run_worker(cfg, ends, profile)
    finally:
        sys.setswitchinterval(switch)


async def _run_worker(cfg: WorkerConfig, ends: dict[int, int], profile: str | None) -> tuple[float, float]:
    worker = Worker(cfg, book=load_price_book(None))
    await worker.start()
    prof = cProfile.Profile() if profile else None
    total = sum(ends.values())
    try:
        while not worker.stats.rebalances:  # joining the group is not part of the throughput
            await asyncio.sleep(0.01)
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        taken = 0
        while taken < total:
            taken += await worker.step()
        await worker.drain()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        if prof:
            prof.disable()
        await worker.stop()
    assert stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == ends
    if prof and profile:
        prof.dump_stats(profile)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    return dt, cpu


def stage_costs(spans: list[Any], book: Any, batch: int, tmp: Path) -> dict[str, float]:
    """Microseconds per span of each step of the worker's hot loop, timed alone in this thread."""
    from spendtrace.server.model.ingest import PartitionOffsets
    from spendtrace.server.store.sqlite._db import connect
    from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
    from spendtrace.server.store.sqlite._writer_protocol import Write, decode_request, encode_write, load_batch

    values = [encode_span(s) for s in spans]
    n = len(spans)
    conn = connect(tmp / "stages.db")
    t_decode = t_prepare = t_encode = t_load = t_write = 0.0
    for i in range(0, n, batch):
        t0 = time.perf_counter()
        decoded = [decode_span(v) for v in values[i : i + batch]]
        t_decode += time.perf_counter() - t0
        t0 = time.perf_counter()
        prepared = prepare_batch(decoded, book)
        t1 = time.perf_counter()
        payload = encode_write(prepared, [PartitionOffsets("g", "t", 0, i, i + batch)], [])
        t2 = time.perf_counter()
        request = decode_request(payload)
        assert isinstance(request, Write)
        sent = load_batch(request)
        t3 = time.perf_counter()
        offsets = [(o.group, o.topic, o.partition, o.next_offset) for o in request.offsets]
        write_batch_sync(conn, sent, offsets=offsets, dead_letters=request.dead_letters)
        t_prepare += t1 - t0
        t_encode += t2 - t1
        t_load += t3 - t2
        t_write += time.perf_counter() - t3
    conn.close()
    return {
        "worker: decode (msgspec)": t_decode / n * 1e6,
        "worker: price + rollup deltas": t_prepare / n * 1e6,
        "worker: stage for the writer": t_encode / n * 1e6,
        "writer process: decode message": t_load / n * 1e6,
        "writer process: one transaction": t_write / n * 1e6,
    }


def time_cli_workers(bootstrap: str, topic: str, db: Path, n: int, mode: str, ends: dict[int, int]) -> float:
    """Seconds from the first batch stored to the last, for ``spendtrace-consumer --workers n --worker-mode mode``."""
    group = f"g-{db.stem}"
    cmd = [sys.executable, "-m", "consumers", "--bootstrap", bootstrap, "--db", str(db), "--group", group,
           "--topic", topic, "--workers", str(n), "--worker-mode", mode, "--log-level", "WARNING",
           "--session-timeout-ms", "3000", "--no-alerts"]  # fmt: skip
    proc = subprocess.Popen(cmd)
    t0 = None
    try:
        while True:
            stored = stored_offsets(db, group, topic)
            if stored and t0 is None:
                t0 = time.perf_counter()
            if stored == ends:
                assert t0 is not None
                return time.perf_counter() - t0
            if proc.poll() is not None:
                raise RuntimeError(f"workers exited with {proc.returncode}")
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(30)


def _drop(db: Path) -> None:
    """Delete a measured database and its WAL files (a million spans take about a gigabyte)."""
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        await _measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _measure(args: argparse.Namespace, tmp: Path) -> None:
    from spendtrace.server.store.sqlite._ingest import prepare_batch

    spans = make_spans(args.spans)
    book = load_price_book(None)
    rows = prepare_batch(spans, book).span_rows
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        topic = "bench.spans"
        ends = await produce_spans(
            broker.bootstrap, topic, spans, partitions=args.partitions, compression=args.compression
        )
        assert sum(ends.values()) == len(spans), ends
        size = sum(len(encode_span(s)) for s in spans[:1000]) / 1000
        print(
            f"{len(spans):,} spans of {size:.0f} B on {args.partitions} partitions, {args.compression or 'no'} "
            f"compression, batches of {args.batch_size:,}, best of {args.repeat}"
        )

        bare = "bare chDB insert" if args.store else "bare SQLite insert"
        times: dict[str, list[float]] = {"bare aiokafka consume": [], bare: [], "worker": []}
        #: CPU seconds of this process (every thread: the event loop, the pricing and store threads, chDB's own)
        cpu: dict[str, list[float]] = {bare: [], "worker": []}
        tag = f"{os.getpid()}_{int(time.time())}"
        if args.store:
            size = args.batch_size
            batches = [prepare_batch(spans[i : i + size], book) for i in range(0, len(spans), size)]
        for rep in range(args.repeat):  # interleaved, so a noisy neighbour hits every measurement alike
            times["bare aiokafka consume"].append(
                await bare_consume(broker.bootstrap, topic, len(spans), args.batch_size)
            )
            if args.store:
                wall, used = bare_clickhouse_insert(_database(args.store, f"bench_bare_{tag}_{rep}"), batches)
                times[bare].append(wall)
                cpu[bare].append(used)
                store = _database(args.store, f"bench_worker_{tag}_{rep}")
            else:
                times[bare].append(bare_insert(tmp / f"bare-{rep}.db", rows))
                _drop(tmp / f"bare-{rep}.db")
                store = str(tmp / f"worker-{rep}.db")
            cfg = WorkerConfig(
                bootstrap=broker.bootstrap,
                db_path=store,
                group_id=f"bench-{rep}",
                topic=topic,
                dlq_topic="bench.dlq",
                alerts_topic="bench.alerts",
                partitions=args.partitions,
                batch_size=args.batch_size,
                session_timeout_ms=3_000,
            )
            wall, used = await run_worker(cfg, ends, args.profile if rep == 0 else None)
            times["worker"].append(wall)
            cpu["worker"].append(used)
            if not args.store:
                _drop(Path(cfg.db_path))

        n = len(spans)
        rate = {name: n / min(ts) for name, ts in times.items()}
        for name, r in rate.items():
            print(f"{name:<24} {r:>12,.0f} spans/s")
        print(f"worker / bare insert  = {rate['worker'] / rate[bare]:.2f}x   (target >= 0.50x)")
        print(f"worker / bare consume = {rate['worker'] / rate['bare aiokafka consume']:.2f}x")
        print(f"worker                = {rate['worker'] / 100_000:.2f}x 100,000 spans/s   (target well over 1x)")

        if args.store:
            # CPU per span is what a machine shared with other work shows best: wall time there is
            # mostly waiting for a core, and both sides wait alike only on average
            per_span = {name: ", ".join(f"{c / n * 1e6:.1f}" for c in cs) for name, cs in cpu.items()}
            print(
                "CPU of this process per span (all threads, chDB's included), each run: "
                f"bare insert {per_span[bare]} us, worker {per_span['worker']} us"
            )
            print(f"(the worker inserts each partition's records on its own, up to --batch-size "
                  f"{args.batch_size:,} rows per insert, as the bare insert)")  # fmt: skip
            return
        print("where one span's time goes (each step alone in this thread, same rows):")
        for stage, us in stage_costs(spans, book, args.batch_size, tmp).items():
            print(f"  {stage:<34} {us:6.2f} us/span")
        print(f"  {'bare aiokafka consume':<34} {1e6 / rate['bare aiokafka consume']:6.2f} us/span")
        print(f"  {'worker, end to end':<34} {1e6 / rate['worker']:6.2f} us/span  (the worker and its writer overlap)")

        if args.workers_compare:
            print("spendtrace-consumer, first batch stored to last (start-up and group join excluded), best of runs:")
            variants = ((1, "task"), (2, "process"), (2, "task"))
            best: dict[tuple[int, str], float] = {}
            for rep in range(args.repeat):  # alternate, so load from elsewhere hits every variant alike
                for n_workers, mode in variants:
                    db = tmp / f"cli-{mode}-{n_workers}-{rep}.db"
                    r = n / time_cli_workers(broker.bootstrap, topic, db, n_workers, mode, ends)
                    _drop(db)
                    best[(n_workers, mode)] = max(best.get((n_workers, mode), 0.0), r)
            for (n_workers, mode), r in best.items():
                print(f"  --workers {n_workers} --worker-mode {mode:<7}: {r:>10,.0f} spans/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=1_000_000, help="enough batches for the steady state to dominate")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument(
        "--batch-size", type=int, default=WorkerConfig(bootstrap="", db_path="").batch_size, help="the worker default"
    )
    p.add_argument("--workers-compare", action="store_true")
    p.add_argument("--store", default=None, metavar="URL", help="a ClickHouse store URL (chdb:///dir) to measure")
    p.add_argument("--profile", default=None, metavar="FILE")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs of each measurement")
    p.add_argument("--compression", default="gzip", help="producer compression, as the SDK's exporter (default gzip)")
    args = p.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
