"""Retention in chunks: the longest chunk beside one 20,000-span batch's write, and beside the one-shot delete.

    python benchmarks/bench_retention.py [--spans 400000] [--days 60] [--chunk-rows 20000]

Builds ``--spans`` spans over ``--days`` days through the real ingest path (``prepare_batch`` +
``write_batch_sync``, batches of ``--batch-size``) in a temporary file, timing each batch's write
(the reference: what the worker's writer spends per batch). With the default policy (raw 30
days, minute rollups 2) about half the spans and most minute rollups are aged. Then, on two
copies of the file, measures retention as one transaction (what the workers did before chunks) and
as chunks of ``--chunk-rows`` (what they do now, one chunk between batches). Each write, chunk
and one-shot is followed by a passive WAL checkpoint, as in the writer process, and timed with it.
Prints the longest chunk against the median batch write (target: about 1x or less) and against
the one-shot delete. Deletes its files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import NOW_NS, Shape, generate

from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from spendtrace.server.store.sqlite._retention import DEFAULT_CHUNK_ROWS, apply_retention_chunk

TABLES = ("spans", "requests", "rollup_minute", "loaded_minute", "rollup_hour", "dash_hour", "rollup_day", "dash_day")


def _open(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # as the writer process: checkpoints after each reply
    return conn


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def build(path: Path, shape: Shape, batch_size: int) -> list[float]:
    """Store the shape's spans; returns each batch's write + checkpoint seconds."""
    book = PriceBook.default()
    conn = _open(path)
    times = []
    try:
        for spans in generate(shape, batch=batch_size):
            prepared = prepare_batch(spans, book)
            t0 = time.perf_counter()
            write_batch_sync(conn, prepared)
            _checkpoint(conn)
            times.append(time.perf_counter() - t0)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    return times


def _copy(src: Path, dst: Path) -> None:
    """Copy and flush to disk, so the first checkpoint measured does not also flush the whole copied file."""
    shutil.copy(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def counts(path: Path) -> dict[str, int]:
    """Rows per table."""
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        conn.close()


def run_chunks(path: Path, limit: int) -> tuple[list[float], int]:
    """Retention in chunks of ``limit`` until done; returns each chunk's seconds and the rows deleted."""
    conn = _open(path)
    times, total, done = [], 0, False
    try:
        while not done:
            t0 = time.perf_counter()
            deleted, done = apply_retention_chunk(conn, NOW_NS, limit=limit)
            _checkpoint(conn)
            times.append(time.perf_counter() - t0)
            total += deleted
    finally:
        conn.close()
    return times, total


def main() -> None:
    """Build, measure, print, clean up."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=400_000)
    ap.add_argument("--days", type=int, default=60, help="spread of the data before now (raw retention: 30 days)")
    ap.add_argument("--batch-size", type=int, default=20_000)
    ap.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        base = Path(tmp) / "base.db"
        t0 = time.perf_counter()
        writes = build(base, Shape(spans=args.spans, days=args.days, tenants=100), args.batch_size)
        before = counts(base)
        print(f"built {before['spans']:,} spans over {args.days} days in {time.perf_counter() - t0:.1f} s")
        write_ms = statistics.median(writes) * 1e3
        print(f"reference: one {args.batch_size:,}-span batch write, median of {len(writes)}: {write_ms:.1f} ms")

        one, chunked = Path(tmp) / "one.db", Path(tmp) / "chunked.db"
        for copy in (one, chunked):
            _copy(base, copy)
        base.unlink()
        one_times, one_deleted = run_chunks(one, 2**62)  # a limit nothing reaches: one transaction
        assert len(one_times) == 1
        times, deleted = run_chunks(chunked, args.chunk_rows)
        after = counts(chunked)
        assert deleted == one_deleted and after == counts(one), "chunks and one-shot must leave the same rows"
        gone = {t: before[t] - after[t] for t in TABLES if before[t] != after[t]}
        print(f"aged rows deleted: {deleted:,} ({', '.join(f'{t} {n:,}' for t, n in gone.items())})")
        one_ms, worst_ms = one_times[0] * 1e3, max(times) * 1e3
        print(f"one transaction: {one_ms:.0f} ms (the worker stored nothing meanwhile)")
        print(
            f"chunks of {args.chunk_rows:,} rows: {len(times)} chunks, {sum(times) * 1e3:.0f} ms in all, "
            f"median {statistics.median(times) * 1e3:.1f} ms, longest {worst_ms:.1f} ms"
        )
        slowest = sorted(range(len(times)), key=times.__getitem__)[-3:][::-1]
        print("slowest chunks (index: ms): " + ", ".join(f"{i}: {times[i] * 1e3:.1f}" for i in slowest))
        print(f"longest chunk / batch write: {worst_ms / write_ms:.2f}x (target: about 1x or less)")
        print(
            f"longest chunk / one transaction: {worst_ms / one_ms:.3f}x; all chunks / one transaction: "
            f"{sum(times) * 1e3 / one_ms:.2f}x"
        )


if __name__ == "__main__":
    main()
