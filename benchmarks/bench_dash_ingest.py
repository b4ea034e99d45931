"""What the dashboard's name index (or its week blocks) costs the SQLite ingest at the scale shape, A/B in one run.

    python benchmarks/bench_dash_ingest.py [--spans 200000] [--days 30] [--tenants 100000]
        [--features 10000] [--endpoints 2000] [--rounds 3] [--control] [--what names|blocks]

The same prepared batches of the scale shape (``benchmarks/_data.py``: Zipf-skewed tenants, features
and endpoints, so most batches bring new names) are written with ``write_batch_sync`` into two fresh
files, batch by batch alternately, so both see the same machine load: A as this checkout makes it, B the
same file with some triggers dropped. ``--what names`` (the default): the triggers on ``dash_all`` that keep
``dash_names`` and its trigram index (schema 3; without them, what version 2 wrote); ``--what blocks``: the
triggers on ``dash_day`` that keep ``dash_block`` (schema 4: each value's cost per week and 28-day block;
without them, what version 3 wrote). Prints spans/s of each (write only; pricing is done once, before) and
the ratio A/B per round and its median. ``--control`` keeps the triggers in both files (an A/A run): the
ratio it prints is the harness's own bias and noise. Numbers on a shared machine are noisy; the ratio is
taken within the run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import Shape, generate

from spendtrace.server.model.ingest import PreparedBatch
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

#: the triggers whose cost is measured, and the table they fill: version 3's names (dropping them gives
#: version 2's write path), version 4's blocks (dropping them gives version 3's)
TRIGGERS = {
    "names": (("dash_names_add", "dash_names_drop"), "dash_names"),
    "blocks": (("dash_block_ins", "dash_block_upd", "dash_block_del"), "dash_block"),
}


def one_round(
    batches: list[PreparedBatch], tmp: Path, r: int, control: bool, what: str = "names"
) -> tuple[float, float, int]:
    """(spans/s with the ``what`` triggers, spans/s without, rows they keep) for one pair of fresh files."""
    triggers, table = TRIGGERS[what]
    with_names, without = connect(tmp / f"a{r}.db"), connect(tmp / f"b{r}.db")
    for trigger in triggers if not control else ():
        without.execute(f"DROP TRIGGER {trigger}")
    spent = [0.0, 0.0]
    n = 0
    try:
        for i, batch in enumerate(batches):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate which file goes first
            for which in order:
                conn = (with_names, without)[which]
                t0 = time.perf_counter()
                write_batch_sync(conn, batch)
                spent[which] += time.perf_counter() - t0
            n += len(batch.spans)
        names = with_names.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert without.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == (names if control else 0)
    finally:
        with_names.close()
        without.close()
    return n / spent[0], n / spent[1], int(names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--tenants", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=10_000)
    ap.add_argument("--endpoints", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--control", action="store_true", help="keep the triggers in both files (A/A)")
    ap.add_argument("--what", choices=tuple(TRIGGERS), default="names", help="whose triggers: names or blocks")
    args = ap.parse_args()
    shape = Shape(spans=args.spans, days=args.days, tenants=args.tenants, features=args.features,
                  endpoints=args.endpoints)  # fmt: skip
    book = PriceBook.default()
    batches = [prepare_batch(spans, book) for spans in generate(shape, batch=20_000)]
    print(f"{args.spans:,} spans over {args.days} days, {args.tenants:,} tenants, {args.features:,} features, "
          f"{args.endpoints:,} endpoints; {len(batches)} batches, written alternately into two files")  # fmt: skip
    ratios = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            a, b, names = one_round(batches, Path(d), r, args.control, args.what)
            ratios.append(a / b)
            label = "again with it" if args.control else "without"
            print(f"round {r + 1}: with the {args.what} {a:,.0f} spans/s, {label} {b:,.0f} spans/s: "
                  f"{a / b:.2f}x ({names:,} rows of {TRIGGERS[args.what][1]} kept)")  # fmt: skip
    print(f"median ratio with / without: {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
