"""Dashboard query latency with millions of spans stored, beside references measured in the same run.

    python benchmarks/bench_queries.py [--spans 5000000] [--tenants 100] [--days 30] [--repeat 50]

Builds (or reuses, from /tmp/spendtrace-bench) a database of ``--spans`` spans written through the
real ingest path (``prepare_batch`` + ``write_batch_sync``), then times each dashboard query on a
warm ``SQLiteStorage``: median and p95 over ``--repeat`` runs. Targets (issue #3): at most 20 ms
per dashboard query and 5 ms per request subtree. References, same run, same connection: a bare
``SELECT SUM(cost_nano)`` over all the wide day rollups (what one scan of them costs) and a bare
primary-key lookup of one span.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import ENDPOINTS, Shape, cached_db

from spendtrace.server.store.sqlite import SQLiteStorage

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
    """Build or reuse the database, time the queries, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=5_000_000)
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    shape = Shape(spans=args.spans, days=args.days, tenants=args.tenants)
    path = cached_db(shape)
    now = shape.now_ns

    raw = sqlite3.connect(path)
    counts = {t: raw.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("spans", "requests", "rollup_day")}
    counts["rollup_hour"] = raw.execute("SELECT COUNT(*) FROM rollup_hour").fetchone()[0]
    counts["dash_day"] = raw.execute("SELECT COUNT(*) FROM dash_day").fetchone()[0]
    rids = [r[0] for r in raw.execute("SELECT request_id FROM requests ORDER BY random() LIMIT 200")]
    sids = [r[0] for r in raw.execute("SELECT span_id FROM spans ORDER BY random() LIMIT 200")]
    raw.close()
    print(
        f"database: {path} ({path.stat().st_size / 1e9:.2f} GB): {counts['spans']:,} spans, "
        f"{counts['requests']:,} requests, {counts['rollup_day']:,} day-rollup rows, "
        f"{counts['rollup_hour']:,} hour-rollup rows, {counts['dash_day']:,} dashboard day rows; "
        f"{shape.tenants} tenants, {shape.days} days, "
        f"{len(ENDPOINTS)} endpoints, {len({f for tree in ENDPOINTS.values() for f, _, _ in tree})} features"
    )
    rng = random.Random(5)
    storage = SQLiteStorage(path)
    print("dashboard rollups:", "in use" if storage._dash else "NOT maintained by this file's writer (wide rollups)")
    conn = storage._conn  # the same connection and page cache as the queries, for the references
    week_start = now - 7 * DAY_NS - 3 * 3_600_000_000_000 - 17 * 60_000_000_000  # mid-day: day+hour+minute
    cases: list[tuple[str, Callable[[], object], float]] = [
        (
            "ref: SELECT SUM(cost_nano) day rollups",
            lambda: conn.execute("SELECT SUM(cost_nano) FROM rollup_day").fetchone(),
            0,
        ),
        (
            "ref: span primary-key lookup",
            lambda: conn.execute("SELECT * FROM spans WHERE span_id = ?", (rng.choice(sids),)).fetchone(),
            0,
        ),
        ("total, all time", storage.total, 20),
        ("by feature, all time", storage.aggregate_by_feature, 20),
        ("by feature, last 7 days (mid-day start)", lambda: storage.aggregate_by_feature(start=week_start), 20),
        ("by user, all time", storage.aggregate_by_user, 20),
        ("by user, top 10, last 7 days", lambda: storage.aggregate_by_user(start=week_start, limit=10), 20),
        ("by endpoint, all time", storage.aggregate_by_endpoint, 20),
        ("fully-loaded breakdown, all time", storage.get_feature_cost_breakdown, 20),
        ("trend 30 days (all features)", lambda: storage.get_cost_trend(days=30, now=now), 20),
        ("trend 30 days, one feature", lambda: storage.get_cost_trend("search", 30, now=now), 20),
        ("requests, 20 costliest", lambda: storage.get_request_cost(20, "cost"), 20),
        ("request subtree", lambda: storage.get_request_subtree(rng.choice(rids)), 5),
    ]
    print(f"\n{'query':<42} {'median ms':>10} {'p95 ms':>8} {'target':>8}  verdict")
    ref_ms = 0.0
    for name, fn, target in cases:
        med, p95 = timeit(fn, args.repeat)
        if name.startswith("ref: SELECT SUM"):
            ref_ms = med
        verdict = "" if not target else ("ok" if p95 <= target else "OVER")
        ratio = f"  ({med / ref_ms:.2f}x the SUM reference)" if ref_ms and target and target != 5 else ""
        print(f"{name:<42} {med:>10.2f} {p95:>8.2f} {target or '':>8}  {verdict}{ratio}")
    storage.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
