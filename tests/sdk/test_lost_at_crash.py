"""An app SIGKILLed with spans in its buffer (issue #15, item 6): the next process counts them, ``lost_at_crash``.

Before, nothing survived the kill to count them: ``get_stats()`` said nothing was lost. Now each
processor keeps a crash record in its spill directory (the spans waiting in memory), locked while it
lives; the next processor using the directory counts what a dead one held, once, with one WARNING.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import spendtrace
from spendtrace.sdk.export._memory import InMemoryExporter
from spendtrace.sdk.export._processor import BatchProcessor

CHILD = r"""
import sys, threading
from consumers.testing import make_spans
from spendtrace.sdk.export._processor import BatchProcessor

class Stuck:  # a destination that never answers: the buffer stays in memory
    def export(self, spans): threading.Event().wait()
    def force_flush(self, timeout=None): return True
    def shutdown(self): pass

# A long max_delay keeps the spans in memory (a short one spills them: test_crash_window); the record
# is rewritten now rather than at the spill thread's next tick.
p = BatchProcessor(Stuck(), batch_size=100, max_delay=60, max_queue=1_000_000, spill_dir=sys.argv[1])
p.extend(make_spans(10_000, seed=71))
p._note_pending()
print("recorded", flush=True)
threading.Event().wait()
"""


def _record_says(spill: Path, value: int) -> bool:
    return any(rec.read_text().strip() == str(value) for rec in spill.glob("pending-*.rec"))


def _wait(condition: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_spans_in_the_buffer_of_a_sigkilled_app_are_counted_by_the_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 spans recorded, one batch of 100 handed to a stuck exporter, SIGKILL: the next start counts 9,900."""
    spill = tmp_path / "spill"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(spill)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "recorded"
        _wait(lambda: _record_says(spill, 9_900), "the child's crash record to show its buffer")
        alive = BatchProcessor(InMemoryExporter(), spill_dir=spill, replay=False)  # a live process's record stays
        assert alive.counters().lost_at_crash == 0
        alive.shutdown()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    caplog.set_level(logging.WARNING, logger="spendtrace.export")
    spendtrace.configure(exporter=InMemoryExporter(), spill_dir=str(spill))
    try:
        assert spendtrace.get_stats().lost_at_crash == 9_900
    finally:
        spendtrace.shutdown()
    lines = [r.getMessage() for r in caplog.records if "killed while holding them in memory" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith(f"spendtrace: 9900 spans were lost by an earlier process (pid {child.pid})")
    again = BatchProcessor(InMemoryExporter(), spill_dir=spill, replay=False)  # counted once, never again
    try:
        assert again.counters().lost_at_crash == 0
    finally:
        again.shutdown()
    assert not list(spill.glob("pending-*")) and not list(spill.glob("claimed-*"))


def test_a_clean_shutdown_leaves_no_record_and_nothing_is_counted(tmp_path: Path) -> None:
    """A processor that shut down cleanly removes its record: the next one counts nothing."""
    spill = tmp_path / "spill"
    first = BatchProcessor(InMemoryExporter(), spill_dir=spill, max_delay=0.05)
    first.extend([])
    first.shutdown()
    assert not list(spill.glob("pending-*"))
    second = BatchProcessor(InMemoryExporter(), spill_dir=spill)
    try:
        assert second.counters().lost_at_crash == 0
    finally:
        second.shutdown()
