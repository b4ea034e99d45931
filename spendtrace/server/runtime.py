"""Process settings of the server's long-running processes: the consumer workers and their store writers."""

from __future__ import annotations

import gc
import sys

__all__ = ["GC_THRESHOLDS", "SWITCH_INTERVAL_S", "tune_gc", "tune_threads"]

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


#: Seconds a thread may hold the GIL while another waits for it (CPython's default is 0.005).
SWITCH_INTERVAL_S = 0.0005


def tune_threads() -> None:
    """Hand the GIL over sooner in a worker process writing ClickHouse (``spendtrace-consumer`` calls this
    beside ``tune_gc`` for a ClickHouse store; a SQLite worker keeps CPython's default: not measured there).

    A worker's store thread mostly waits in the database (ClickHouse's engine releases the GIL), and
    after each call it needs the GIL back for a few lines of Python while the pricing thread holds it
    for long stretches: with the default 5 ms it waited up to that long after every engine call. With
    one thread pricing in a loop, the store's ``apply_batch`` into chDB took 222-235 us/span at 5 ms
    and 112-175 at 0.5 ms (same run, alternated); in worker runs the store thread and the worker's
    spans/s moved the same way in most pairs (README, Known gaps, ClickHouse).
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
