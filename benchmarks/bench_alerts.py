"""Alert evaluation cost per committed batch, beside the cost of writing that batch.

    python benchmarks/bench_alerts.py [--spans 100000] [--batch-size 5000] [--rules 100] [--store chdb:///dir]

One run, one database: each batch of synthetic spans (``_data.generate``: 8 endpoints, 50 tenants)
is priced and committed with ``prepare_batch`` + ``write_batch_sync`` (the reference), then the
rules its touched scopes cover are evaluated exactly as a worker's post-commit hook does
(``consumers.alerting.evaluate_rules`` on an ``AlertStore``, a second connection). The rules mix 24 h feature
thresholds, 1 h tenant thresholds, endpoint and total thresholds, monthly budgets and rate rules,
set high enough that none fires (firing is rare; this measures the per-batch checking cost).
Prints the time of each per batch and evaluation / write as a ratio (evaluation runs off the
ingest path, but it must keep up: target well under 1x). ``--store URL`` runs it on another store
(a fresh ``chdb://`` directory, or a ClickHouse server's empty database): the batches are written
through its ``IngestStore`` (the reference) and the rules read from its ``AlertStore``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import ENDPOINTS, NOW_NS, Shape, generate

from consumers.alerting import Touched, evaluate_rules
from spendtrace.server.alerts.rules import set_alert, set_budget, set_rate_alert
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import open_alert_store, open_ingest_store
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync


def add_rules(db: Path, n: int, features: list[str], tenants: list[str]) -> None:
    """``n`` rules over every scope kind, none of which can fire on the generated spend."""
    big = 1e9
    for i in range(n):
        kind = i % 6
        name = f"r{i}"
        if kind == 0:
            set_alert(feature=features[i % len(features)], threshold=big, window_hours=24, name=name, db_path=db)
        elif kind == 1:
            set_alert(user_id=tenants[i % len(tenants)], threshold=big, window_hours=1, name=name, db_path=db)
        elif kind == 2:
            set_alert(endpoint=list(ENDPOINTS)[i % len(ENDPOINTS)], threshold=big, window_hours=6, name=name,
                      db_path=db)
        elif kind == 3:
            set_alert(total=True, threshold=big, window_hours=24, name=name, db_path=db)
        elif kind == 4:
            set_budget(big, "month", feature=features[i % len(features)], name=name, db_path=db)
        else:
            set_rate_alert(3, user_id=tenants[i % len(tenants)], min_spend=big, name=name, db_path=db)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=5_000)
    ap.add_argument("--rules", type=int, default=100)
    ap.add_argument("--store", default=None, help="a store URL instead of a temporary SQLite file")
    args = ap.parse_args()
    shape = Shape(spans=args.spans, days=1, tenants=50)
    batches = list(generate(shape, batch=args.batch_size))
    features = sorted({s.feature for b in batches for s in b})
    tenants = sorted({s.user_id for b in batches for s in b if s.user_id})
    book = PriceBook.default()
    with tempfile.TemporaryDirectory() as tmp:
        db: Path | str = Path(tmp) / "bench.db" if args.store is None else args.store
        add_rules(db, args.rules, features, tenants)  # type: ignore[arg-type]  # a URL where a path may go
        reader = open_alert_store(db)
        if args.store is None:
            conn = connect(db)

            def write(spans: list[Any]) -> Any:
                return write_batch_sync(conn, prepare_batch(spans, book))
        else:
            ingest = open_ingest_store(args.store)

            def write(spans: list[Any]) -> Any:
                return ingest.apply_batch(prepare_batch(spans, book))

        rules = reader.list_rules()
        write_s = eval_s = 0.0
        evaluated = 0
        for batch in batches:
            t0 = time.perf_counter()
            result = write(batch)
            t1 = time.perf_counter()
            touched = Touched.from_result(result)
            evaluated += sum(1 for r in rules if touched.covers(r))
            fired = evaluate_rules(reader, rules, touched, NOW_NS)
            t2 = time.perf_counter()
            assert not fired, "the benchmark rules must not fire"
            write_s += t1 - t0
            eval_s += t2 - t1
        (conn if args.store is None else ingest).close()
        reader.close()
    n = len(batches)
    print(f"store: {args.store or 'a temporary SQLite file'}")
    print(f"{sum(map(len, batches)):,} spans in {n} batches, {len(rules)} rules ({evaluated / n:.0f} evaluated/batch)")
    print(f"write (prepare + commit): {write_s / n * 1e3:8.2f} ms/batch  (reference)")
    print(f"alert evaluation:         {eval_s / n * 1e3:8.2f} ms/batch")
    print(f"evaluation / write:       {eval_s / write_s:8.3f}x")


if __name__ == "__main__":
    main()
