"""How long does ``reprice`` take? Re-pricing a range's stored spans beside writing the same spans.

    python benchmarks/bench_reprice.py [--spans 100000] [--batch-size 20000]

One run, one SQLite file: the spans of ``bench_ingest`` (request trees of 4 spans over one hour,
DynamoDB reads, S3, Lambda requests, Bedrock tokens, 2% sampled) are written with the default book
(``write_batch_sync``, batches of ``--batch-size``: the reference), then the day is re-priced with a
book where every DynamoDB read costs twice as much (a quarter of the items change), then the same
reprice is undone. Prints seconds and spans/s of each and reprice / write (the same spans).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_ingest import NOW_NS, make_spans

from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.sqlite import SQLiteStorage
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    args = parser.parse_args()
    spans = make_spans(args.spans)
    book = PriceBook.default()
    dearer = book.with_overrides(
        [PriceEntry(key="dynamodb_read", service="dynamodb", per_request=Decimal("0.0000005"), source="bench")]
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reprice.db"
        conn = connect(path)
        t0 = time.perf_counter()
        for i in range(0, len(spans), args.batch_size):
            write_batch_sync(conn, prepare_batch(spans[i : i + args.batch_size], book))
        write_s = time.perf_counter() - t0
        conn.close()
        day = dt.datetime.fromtimestamp(NOW_NS / 1e9, dt.UTC).date()
        start, end = day - dt.timedelta(days=1), day + dt.timedelta(days=1)
        with SQLiteStorage(path) as storage:
            t0 = time.perf_counter()
            result = storage.reprice(start_date=start, end_date=end, book=dearer)
            reprice_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            storage.undo_restatement(result.id)
            undo_s = time.perf_counter() - t0
    n = len(spans)
    print(f"spans: {n:,}; reprice changed {result.spans_changed:,} of {result.spans_seen:,}, "
          f"delta {result.delta_nano / 1e9:+.6f} USD")  # fmt: skip
    print(f"{'write (prepare + write_batch_sync)':<38} {write_s:8.2f} s  {n / write_s:>10,.0f} spans/s   1.00x")
    print(f"{'reprice (one transaction)':<38} {reprice_s:8.2f} s  {n / reprice_s:>10,.0f} spans/s  "
          f"{reprice_s / write_s:5.2f}x")  # fmt: skip
    print(f"{'undo':<38} {undo_s:8.2f} s  {n / undo_s:>10,.0f} spans/s  {undo_s / write_s:5.2f}x")
    print("(one run on a shared machine: noisy; the ratio is what compares)")


if __name__ == "__main__":
    main()
