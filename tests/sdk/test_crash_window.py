"""A SIGKILLed app loses only what waited less than ``max_delay`` (issue #15, item 6, "shrink the window").

Before, spans behind a hung export stayed in memory until the buffer passed a quarter of its bound
(25,000 spans by default, any age): a kill lost all of them. Now the spill thread writes every span
that waited ``max_delay`` while the worker was busy, so the next start replays them.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import spendtrace
from consumers.testing import make_spans
from spendtrace.schema import Span
from spendtrace.sdk.export._memory import InMemoryExporter
from spendtrace.sdk.export._processor import BatchProcessor
from spendtrace.sdk.export._spill import SpillStore
from spendtrace.server.local_export import LocalStoreExporter

CHILD = r"""
import sys, threading, time
from consumers.testing import make_spans
from spendtrace.sdk.export._processor import BatchProcessor

class Stuck:  # a destination that never answers: the first batch hangs in export
    def export(self, spans): threading.Event().wait()
    def force_flush(self, timeout=None): return True
    def shutdown(self): pass

p = BatchProcessor(Stuck(), batch_size=100, max_delay=0.05, max_queue=1_000_000, spill_dir=sys.argv[1])
p.extend(make_spans(10_000, seed=81))
give_up = time.monotonic() + 30
while p.counters().spilled < 9_900 and time.monotonic() < give_up:
    time.sleep(0.01)
print("spilled", p.counters().spilled, flush=True)
threading.Event().wait()
"""


def test_spans_behind_a_hung_export_are_spilled_within_max_delay_and_replayed_after_a_sigkill(tmp_path: Path) -> None:
    """10,000 spans, the first batch of 100 hung in export: 9,900 reach the spill; after SIGKILL they are all there."""
    spill = tmp_path / "spill"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(spill)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        said = child.stdout.readline().split()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    assert said == ["spilled", "9900"]  # before: 0 (10,000 is below the 250,000-span high-water mark)
    frames = SpillStore(spill, fsync=False)
    got: list[Span] = []
    while frames.replay_one(got.extend):
        pass
    frames.close()
    ids = [s.span_id for s in got]
    assert len(ids) == len(set(ids)) == 9_900
    after = BatchProcessor(InMemoryExporter(), spill_dir=spill, replay=False)
    try:
        assert after.counters().lost_at_crash == 0  # nothing was left in memory (the hung batch is the known gap)
    finally:
        after.shutdown()


def test_local_mode_keeps_spans_behind_a_slow_write_for_the_readers_of_this_process(
    tmp_path: Path, export_reset: None
) -> None:
    """A local store slow to write: nothing is spilled by age, so a read right after ``flush`` sees all 100 spans.

    Its readers in this process flush, then read the file; spans moved to the spill would be missing
    until replayed. The pause gives the age rule twenty times ``max_delay`` to act, had it applied.
    """
    gate = threading.Event()

    class SlowLocal(LocalStoreExporter):
        def export(self, spans: Sequence[Span]) -> None:
            gate.wait(60)
            super().export(spans)

    db = tmp_path / "cost.db"
    processor = spendtrace.configure(exporter=SlowLocal(db, alerts=False), spill_dir=tmp_path / "spill", batch_size=10)
    processor.extend(make_spans(100, seed=83))
    time.sleep(20 * processor.max_delay)
    gate.set()
    assert spendtrace.flush(30).ok
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == 100
    assert spendtrace.get_stats().spilled == 0
