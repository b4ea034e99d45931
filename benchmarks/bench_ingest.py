"""Storage write path (no Kafka): spans/s priced and committed, beside a bare SQLite insert of the same rows.

    python benchmarks/bench_ingest.py [--spans 200000] [--batch-size 20000]

One run, the same spans for every measurement (request trees of 4 spans, 50 tenants, DynamoDB reads,
Bedrock tokens drawn at random so LLM items are rarely repeated, Lambda requests, 2% sampled):
1. bare insert: ``executemany`` of the prepared span rows into a table shaped like ``spans`` with
   its two indexes, one transaction per batch, WAL + synchronous=NORMAL (the worker's pragmas);
2. ``prepare_batch``: pricing and every delta, pure Python;
3. ``write_batch_sync``: spans + rollups + fully-loaded + dashboard + requests in one transaction;
4. ``write_batch_async``: the same through aiosqlite;
5. pipelined: one thread prepares the next batch while another commits the previous one.
Prints spans/s of each and prepare+write against the bare insert (target: >= 0.5x).
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import random
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect, connect_async
from spendtrace.server.store.sqlite._ingest import (
    INSERT_SPANS,
    PreparedBatch,
    prepare_batch,
    write_batch_async,
    write_batch_sync,
)

NOW_NS = 1_793_620_800_000_000_000


def make_spans(n: int, seed: int = 1) -> list[Span]:
    """``n`` spans as request trees api -> search -> details / recommend, spread over one hour."""
    rng = random.Random(seed)
    users = [f"tenant-{i:02d}" for i in range(50)]
    spans: list[Span] = []
    for r in range(n // 4):
        rid = f"req-{r:08d}"
        t = NOW_NS - 3_600_000_000_000 + r * (3_600_000_000_000 // max(1, n // 4))
        user = rng.choice(users)
        w = 10.0 if rng.random() < 0.02 else 1.0
        tree = (
            ("api", None, (UsageItem("aws_lambda_request", count=1.0),)),
            ("search", 0, (UsageItem("dynamodb_read", count=float(rng.randint(1, 5))),)),
            ("product_details", 1, (UsageItem("dynamodb_read", count=1.0), UsageItem("s3_get", count=1.0))),
            (
                "recommend",
                1,
                (
                    UsageItem(
                        "bedrock_claude_3_haiku",
                        input_tokens=rng.randint(100, 2000),
                        output_tokens=rng.randint(10, 400),
                    ),
                ),
            ),
        )
        paths: list[tuple[str, ...]] = []
        for i, (feature, parent, usage) in enumerate(tree):
            path = (*(paths[parent] if parent is not None else ()), feature)
            paths.append(path)
            spans.append(
                Span(
                    f"{rid}.{i}",
                    None if parent is None else f"{rid}.{parent}",
                    rid,
                    feature,
                    endpoint="/api/search",
                    user_id=user,
                    start_ns=t + i,
                    duration_ns=1_000_000,
                    weight=w,
                    path=path,
                    usage=usage,
                )
            )
    return spans


def bare_insert(path: Path, batches: list[PreparedBatch]) -> float:
    """Seconds to insert the prepared span rows into a plain table with the two ``spans`` indexes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE spans (span_id TEXT PRIMARY KEY, parent_id TEXT, request_id TEXT NOT NULL, "
        "feature TEXT NOT NULL, operation TEXT, endpoint TEXT, user_id TEXT, start_ns INTEGER NOT NULL, "
        "duration_ns INTEGER NOT NULL, "
        "cpu_ns INTEGER NOT NULL, error INTEGER NOT NULL, error_type TEXT, weight REAL NOT NULL, path TEXT NOT NULL, "
        "usage TEXT NOT NULL, cost_nano INTEGER NOT NULL, unpriced INTEGER NOT NULL, var_nano2 REAL NOT NULL, "
        "price_version TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX spans_request ON spans (request_id)")
    conn.execute("CREATE INDEX spans_start ON spans (start_ns)")
    sql = INSERT_SPANS.replace("INSERT OR IGNORE", "INSERT")
    rows = [b.span_rows for b in batches]  # tuples built before the clock starts
    t0 = time.perf_counter()
    for r in rows:
        conn.execute("BEGIN")
        conn.executemany(sql, r)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def pipelined(path: Path, chunks: list[list[Span]], book: PriceBook) -> float:
    """Seconds to prepare batch N+1 on this thread while a writer thread commits batch N (SQLite releases the GIL)."""
    conn = connect(path, check_same_thread=False)
    q: queue.Queue[PreparedBatch | None] = queue.Queue(maxsize=2)

    def writer() -> None:
        while (b := q.get()) is not None:
            write_batch_sync(conn, b)

    t0 = time.perf_counter()
    th = threading.Thread(target=writer)
    th.start()
    for c in chunks:
        q.put(prepare_batch(c, book))
    q.put(None)
    th.join()
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


async def async_write(path: Path, batches: list[PreparedBatch]) -> float:
    """Seconds for ``write_batch_async`` to store the prepared batches."""
    aconn = await connect_async(path)
    try:
        t0 = time.perf_counter()
        for b in batches:
            await write_batch_async(aconn, b)
        return time.perf_counter() - t0
    finally:
        await aconn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spans", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=20_000)
    args = p.parse_args()
    spans = make_spans(args.spans)
    n = len(spans)
    book = PriceBook.default()
    chunks = [spans[i : i + args.batch_size] for i in range(0, n, args.batch_size)]
    prepare_batch(chunks[0][:100], book)  # warm the per-book caches like a running worker
    t0 = time.perf_counter()
    batches = [prepare_batch(c, book) for c in chunks]
    t_prepare = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t_bare = bare_insert(Path(d) / "bare.db", batches)
        conn = connect(Path(d) / "sync.db")
        t0 = time.perf_counter()
        for b in batches:
            write_batch_sync(conn, b)
        t_write = time.perf_counter() - t0
        conn.close()
        t_async = asyncio.run(async_write(Path(d) / "async.db", batches))
        t_pipe = pipelined(Path(d) / "pipe.db", chunks, book)
    rate = {k: n / v for k, v in {"bare": t_bare, "prep": t_prepare, "write": t_write, "async": t_async}.items()}
    both = n / (t_prepare + t_write)
    pipe = n / t_pipe
    print(f"{n:,} spans, batches of {args.batch_size:,}")
    print(f"bare SQLite insert        {rate['bare']:>10,.0f} spans/s")
    print(f"prepare_batch             {rate['prep']:>10,.0f} spans/s")
    print(f"write_batch_sync          {rate['write']:>10,.0f} spans/s")
    print(f"write_batch_async         {rate['async']:>10,.0f} spans/s")
    target = "(target >= 0.50x)"
    print(f"prepare + write (sync)    {both:>10,.0f} spans/s = {both / rate['bare']:.2f}x bare insert {target}")
    print(f"prepare || write threads {pipe:>10,.0f} spans/s = {pipe / rate['bare']:.2f}x bare insert")


if __name__ == "__main__":
    main()
