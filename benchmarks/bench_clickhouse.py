"""ClickHouse (chDB, in-process) store: ingest spans/s beside a bare insert, and dashboard query latency.

    python benchmarks/bench_clickhouse.py [--spans 1000000] [--batch 20000] [--tenants 100] [--days 30]

Same run, same engine, two fresh databases with the same schema (spans + every materialized view):

- **ours**: ``write_batch`` (``spendtrace.server.store.clickhouse._ingest``) of each prepared batch:
  the "already stored?" span-id read, the insert with its deduplication token (every view's target
  deduplicated too), the price-book row.
- **bare**: ``client.insert`` of the very same rows into the other database's ``spans`` (the views run
  too): no check, no token. The floor ours is measured against (issue #13 target: >= 0.5x of it).

Batches are prepared (priced) before the clock starts, and written alternately to the two databases,
so both see the same machine load. Then the dashboard queries of the store contract run on the
database ``ours`` filled (``open_store``: reads aggregate over parts as they are), median and p95 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import Shape, generate

from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import open_store
from spendtrace.server.store.clickhouse._client import connect
from spendtrace.server.store.clickhouse._ingest import SPAN_NAMES, write_batch

DAY_NS = 86_400 * 1_000_000_000


def timeit(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, p95) wall time in ms of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def main() -> int:
    """Ingest both ways, then time the queries; print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--dir", default=None, help="chDB data directory (default: a new temporary one)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="spendtrace-chdb-"))
    tag = uuid.uuid4().hex[:8]
    ours_url = f"chdb://{root}?database=ours_{tag}"
    ours, bare = connect(ours_url), connect(f"chdb://{root}?database=bare_{tag}")

    shape = Shape(spans=args.spans, days=args.days, tenants=args.tenants)
    book = PriceBook.default()
    t0 = time.perf_counter()
    batches = [prepare_batch(spans, book) for spans in generate(shape, batch=args.batch)]
    n = sum(len(b.spans) for b in batches)
    print(f"chDB at {root}: {n:,} spans in {len(batches)} batches, prepared in {time.perf_counter() - t0:.1f} s")

    t_ours = t_bare = 0.0
    names = [*SPAN_NAMES, "batch"]
    for b in batches:
        t0 = time.perf_counter()
        write_batch(ours, b)
        t_ours += time.perf_counter() - t0
        t0 = time.perf_counter()
        columns = [b.span_values[i :: len(SPAN_NAMES)] for i in range(len(SPAN_NAMES))]
        bare.client.insert("spans", [*columns, [""] * len(b.spans)], column_names=names, column_oriented=True)
        t_bare += time.perf_counter() - t0
    counts = [ours.tuples("SELECT count() FROM spans")[0][0], bare.tuples("SELECT count() FROM spans")[0][0]]
    assert counts == [n, n], counts
    same = "SELECT sum(cost_nano), sum(spans) FROM rollup_day WHERE service = ''"
    assert ours.tuples(same) == bare.tuples(same)
    print(f"\n{'ingest':<44} {'spans/s':>10} {'s':>7}")
    print(f"{'ours: write_batch (check + token + views)':<44} {n / t_ours:>10,.0f} {t_ours:>7.2f}")
    print(f"{'bare: client.insert of the same rows (views)':<44} {n / t_bare:>10,.0f} {t_bare:>7.2f}")
    print(f"ours / bare: {t_bare / t_ours:.2f}x")

    store = open_store(ours_url)
    now = shape.now_ns
    rng = random.Random(5)
    rids = [r[0] for r in ours.tuples("SELECT request_id FROM spans ORDER BY rand() LIMIT 200")]
    parts = ours.tuples("SELECT count() FROM system.parts WHERE database = currentDatabase() AND active")[0][0]
    week = now - 7 * DAY_NS - 3 * 3_600_000_000_000 - 17 * 60_000_000_000  # mid-day: day + hour + minute rollups
    cases: list[tuple[str, Callable[[], object]]] = [
        ("ref: SELECT sum(cost_nano) FROM rollup_day", lambda: ours.tuples("SELECT sum(cost_nano) FROM rollup_day")),
        ("total, all time", store.total),
        ("by feature, all time", store.aggregate_by_feature),
        ("by feature, last 7 days (mid-day start)", lambda: store.aggregate_by_feature(start=week)),
        ("by user, all time", store.aggregate_by_user),
        ("by user, top 10, last 7 days", lambda: store.aggregate_by_user(start=week, limit=10)),
        ("by endpoint, all time", store.aggregate_by_endpoint),
        ("by service, all time", store.aggregate_by_service),
        ("fully-loaded breakdown, all time", store.get_feature_cost_breakdown),
        ("trend 30 days (all features)", lambda: store.get_cost_trend(days=30, now=now)),
        ("requests, 20 costliest", lambda: store.get_request_cost(20, "cost")),
        ("request subtree", lambda: store.get_request_subtree(rng.choice(rids))),
    ]
    print(f"\nqueries on {n:,} spans ({parts} active parts, unmerged as ingested)")
    print(f"{'query':<44} {'median ms':>10} {'p95 ms':>8}")
    for name, fn in cases:
        med, p95 = timeit(fn, args.repeat)
        print(f"{name:<44} {med:>10.2f} {p95:>8.2f}")
    store.close()
    ours.close()
    bare.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
