"""Dashboard and API read latency on a large store, beside a bare query on the same engine, same run.

    python benchmarks/bench_queries.py [--backend sqlite|chdb] [--spans 730000] [--days 365]
        [--tenants 100000] [--features 10000] [--endpoints 2000] [--repeat 30]
    python benchmarks/bench_queries.py --store URL        # an existing store instead of generated data

Builds (or reuses, under /tmp/spendtrace-bench) a store of generated spans written through the
backend's real ingest path (``benchmarks/_data.py``; ``--features 0 --endpoints 0`` gives the
small shop of eight fixed endpoints), then times, on a warm store with the data's fixed clock:
every ``DashboardReads`` read the TUI makes (``overview``, ``dimension`` per dimension and window
as the TUI pages it, with a server-side search, ``requests``, ``request_tree``, ``trends``, the
alert, dead-letter and unpriced lists) and the HTTP API's reads (``ReadStore`` aggregates, total,
the ``/metrics`` text). Median and p95 over ``--repeat`` runs after one warm-up; target: median
<= 50 ms (issue #16). Reference, same engine and connection: one bare ``sum(cost_nano)`` over the
day rollups' total rows. Numbers on a shared machine are noisy; the ratio is taken within the run.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import NOW_NS, Shape, cached_store

from spendtrace.server.metrics import render_store_metrics
from spendtrace.server.store.base import open_dashboard, open_store

TARGET_MS = 50.0
#: the rows the TUI asks for per page of a dimension table
PAGE = 100


def stats(times: list[float]) -> tuple[float, float]:
    """(median, p95) in ms."""
    times = sorted(times)
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


async def atimed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float]:
    """(median, p95) ms of ``repeat`` awaited calls after one warm-up."""
    await fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return stats(out)


async def atimed_sync(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, p95) ms of a synchronous read (the API's), run in a thread as the API runs it."""

    async def call() -> None:
        await asyncio.to_thread(fn)

    return await atimed(call, repeat)


async def run(url: str, repeat: int, now_ns: int) -> list[tuple[str, float, float]]:
    """Every timed read on ``url``: (name, median ms, p95 ms); the reference first."""
    reads: Any = await open_dashboard(url, clock=lambda: now_ns).open()
    store = open_store(url, readonly=True)
    out: list[tuple[str, float, float]] = []
    try:
        rng = random.Random(5)
        rids = [r.request_id for r in await reads.requests("recent", 200)]
        params = inspect.signature(reads.dimension).parameters
        paged = "limit" in params
        page: dict[str, Any] = {"limit": PAGE} if paged else {}
        top: dict[str, Any] = {"limit": 20} if "limit" in inspect.signature(reads.trends).parameters else {}

        async def bare() -> None:
            await reads._all("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''")

        out.append(("reference: bare sum() over the day rollups", *await atimed(bare, repeat)))
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [("overview (header)", reads.overview)]
        for dim in ("feature", "user", "endpoint"):
            for window in ("all", "30d", "24h", "1h"):
                cases.append((f"dimension {dim}, {window}", lambda d=dim, w=window: reads.dimension(d, w, **page)))
        if paged:
            cases += [
                ("dimension user, all, page 3", lambda: reads.dimension("user", "all", **page, offset=2 * PAGE)),
                ("dimension user, all, search '0042'", lambda: reads.dimension("user", "all", **page, search="0042")),
                ("dimension feature, 30d, search '17'", lambda: reads.dimension("feature", "30d", **page, search="17")),
            ]
        rparams = inspect.signature(reads.requests).parameters
        cases += [
            ("requests, 200 newest", lambda: reads.requests("recent", 200)),
            ("requests, 200 costliest", lambda: reads.requests("cost", 200)),
        ]
        if "search" in rparams:
            newest = ("requests, 200 newest, search '/e0001'", lambda: reads.requests("recent", 200, search="/e0001"))
            cases.append(newest)
        cases += [
            ("request tree", lambda: reads.request_tree(rng.choice(rids))),
            ("trends, 14 days", lambda: reads.trends(14, **top)),
            ("trends, 90 days", lambda: reads.trends(90, **top)),
            ("alert rules", reads.alert_rules),
            ("alert events", reads.alert_events),
            ("dead letters", reads.dead_letters),
            ("unpriced", reads.unpriced),
        ]
        for name, fn in cases:
            out.append((name, *await atimed(fn, repeat)))
        api: list[tuple[str, Callable[[], object]]] = [
            ("API /total", store.total),
            ("API /aggregate/user?limit=100", lambda: store.aggregate_by_user(limit=100)),
            ("API /aggregate/feature?limit=100", lambda: store.aggregate_by_feature(limit=100)),
            ("API /aggregate/endpoint?limit=100", lambda: store.aggregate_by_endpoint(limit=100)),
            ("API /metrics", lambda: render_store_metrics(store)),
        ]
        for name, sfn in api:
            out.append((name, *await atimed_sync(sfn, repeat)))
    finally:
        await reads.close()
        store.close()
    return out


def main() -> int:
    """Build or reuse the store, time the reads, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("sqlite", "chdb"), default="sqlite")
    ap.add_argument("--store", default=None, help="time this existing store URL instead of generated data")
    ap.add_argument("--spans", type=int, default=730_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--tenants", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    shape = Shape(spans=args.spans, days=args.days, tenants=args.tenants, features=args.features,
                  endpoints=args.endpoints)  # fmt: skip
    url = args.store or cached_store(shape, args.backend)
    now = time.time_ns() if args.store else NOW_NS
    if args.store:
        print(f"store: {url} (now = the wall clock)")
    else:
        print(f"store: {url}: {args.spans:,} spans over {args.days} days, {args.tenants:,} tenants, "
              f"{args.features:,} features, {args.endpoints:,} endpoints")  # fmt: skip
    rows = asyncio.run(run(url, args.repeat, now))
    ref = rows[0][1]
    print(f"\n{'read':<44} {'median ms':>10} {'p95 ms':>8} {'x ref':>7}  target {TARGET_MS:g} ms")
    over = []
    for name, med, p95 in rows:
        verdict = "" if name.startswith("reference") else ("ok" if med <= TARGET_MS else "OVER")
        if verdict == "OVER":
            over.append(name)
        print(f"{name:<44} {med:>10.2f} {p95:>8.2f} {med / ref:>7.1f}  {verdict}")
    print(f"\n{len(rows) - 1 - len(over)} of {len(rows) - 1} reads within {TARGET_MS:g} ms median"
          + (f"; over: {', '.join(over)}" if over else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
