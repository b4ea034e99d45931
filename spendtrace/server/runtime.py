"""Process settings of the server's long-running processes: the consumer workers and their store writers."""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

#: Young-generation size before a collection (CPython's default is 700) and the older generations' ratios.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Collect garbage less often in a worker process (``spendtrace-consumer`` and its writer child call this).

    A batch allocates hundreds of thousands of short-lived containers (Kafka records, rows, deltas),
    and with CPython's default thresholds a worker spent ~1 s in collections per 400,000 spans
    (2.4 us a span, timed with ``gc.callbacks``); with these, ~0.34 s. Objects alive at start-up
    (modules, the price book) are frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
