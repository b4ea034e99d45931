"""A spill backlog drains at the destination's speed under steady traffic (issue #15, item 6).

Before, the export thread replayed one spill frame per fresh batch, so under light steady traffic (a batch
every ``max_delay``) a backlog of frames drained one frame per half second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from spendtrace.schema import Span
from spendtrace.sdk.export._processor import BatchProcessor
from spendtrace.sdk.export._spill import SpillStore


class CallLog:
    """A destination that keeps every batch it is given (in memory), noting whether it was fresh or replayed."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    def export(self, spans: Sequence[Span]) -> None:
        with self.lock:
            self.calls.append("replay" if spans[0].span_id.startswith("old-") else "fresh")
            self.spans.extend(spans)

    def force_flush(self, timeout: float = 5.0) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _span(sid: str) -> Span:
    return Span(span_id=sid, parent_id=None, request_id=sid, feature="f", start_ns=1_700_000_000 * 10**9)


def test_a_backlog_drains_between_fresh_batches_not_one_frame_per_batch(tmp_path: Path) -> None:
    """40 frames left by an earlier run, a trickle of fresh spans: all 40 are replayed within a few fresh batches."""
    earlier = SpillStore(tmp_path)
    for f in range(40):
        earlier.write([_span(f"old-{f}-{i}") for i in range(100)])
    earlier.close()
    dest = CallLog()
    processor = BatchProcessor(dest, spill_dir=tmp_path, batch_size=500, max_delay=0.2, fsync=False)
    stop = threading.Event()

    def trickle() -> None:  # far below a batch per max_delay: every fresh batch is a partial one
        n = 0
        while not stop.is_set():
            processor.on_span(_span(f"new-{n}"))
            n += 1
            stop.wait(0.005)

    feeder = threading.Thread(target=trickle)
    feeder.start()
    try:
        while sum(c == "replay" for c in dest.calls) < 40:
            with dest.lock:
                fresh = dest.calls.count("fresh")
            assert fresh < 40, f"after {fresh} fresh batches only {dest.calls.count('replay')} of 40 frames replayed"
            time.sleep(0.01)
        with dest.lock:
            last_replay = max(i for i, c in enumerate(dest.calls) if c == "replay")
            fresh_before_drained = dest.calls[:last_replay].count("fresh")
    finally:
        stop.set()
        feeder.join()
        processor.shutdown()
    # one frame per fresh batch would need 40 fresh batches; the drain needs about one (more on a loaded machine)
    assert fresh_before_drained <= 5, dest.calls
    assert sum(s.span_id.startswith("old-") for s in dest.spans) == 4_000
