"""Which "now" retention uses, and the oldest span start a worker still stores (issue #15, item 5).

Two rules, both from the store's ``RetentionFacts`` (the raw-span retention and the newest stored
span start) and the writer's clock (a worker's, or the app's in local mode); pure, no I/O:

- **Retention never runs ahead of the data.** A round is dated ``min(clock, newest stored start +
  NOW_MARGIN_NS)``: a worker whose clock jumps to 2100 deletes nothing a correct clock would keep
  (an idle store keeps its raw spans a little longer instead, which loses nothing).
- **A span older than the raw horizon is a dead letter.** Its stored copy may have been deleted by
  retention (the rollups still count it), so storing it again could count it twice, and nothing
  can tell. The horizon is the retention "now" above minus the raw retention, plus
  ``HORIZON_MARGIN_NS``: every cutoff a round has applied is older, as long as the workers' clocks
  agree within that margin and the raw retention was not lengthened since spans were deleted.

The local exporter (no broker; it applies retention itself, between its own batches, under one
lock) uses the cutoff retention has actually applied instead (``applied_horizon_ns``): a span newer
than every cutoff applied so far cannot have had a copy deleted, so it is accepted, first arrival
or not; this keeps a backfill of old spans into a fresh local store working (the README's
reconciliation example), and refuses them once retention has run past them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from spendtrace.schema import Span, encode_span
from spendtrace.server.model.ingest import DeadLetter, RetentionFacts

__all__ = [
    "HORIZON_DEAD_LETTER_TOPIC",
    "HORIZON_MARGIN_NS",
    "MAX_CLOCK_AHEAD_NS",
    "NOW_MARGIN_NS",
    "aged_dead_letters",
    "aged_reason",
    "ahead_reason",
    "applied_horizon_ns",
    "ingest_horizon_ns",
    "retention_now_ns",
]

#: How far a span's start may be ahead of the writer's clock (the authority: a worker's, or the app's in
#: local mode): a clock in 2100 would otherwise put spend where no dashboard looks and that retention
#: never ages out.
MAX_CLOCK_AHEAD_NS = 3_600 * 10**9

#: ``dead_letters.topic`` of spans a store refused in its write, as older than the retention cutoff it had
#: applied (``partition``: the writing process's pid; ``offset``: a number unique within it)
HORIZON_DEAD_LETTER_TOPIC = "(horizon)"

#: How far past the newest stored span start a retention round may be dated.
NOW_MARGIN_NS = 86_400 * 10**9

#: Spans this much younger than the raw retention cutoff are refused too (clock skew between workers,
#: a round starting while a batch is written).
HORIZON_MARGIN_NS = 3_600 * 10**9


def retention_now_ns(clock_ns: int, facts: RetentionFacts) -> int:
    """The "now" a retention round uses: the clock, but never past the newest stored span + ``NOW_MARGIN_NS``."""
    if facts.newest_start_ns is None:
        return clock_ns
    return min(clock_ns, facts.newest_start_ns + NOW_MARGIN_NS)


def ingest_horizon_ns(clock_ns: int, facts: RetentionFacts) -> int:
    """The oldest span start stored: anything older may have had a copy deleted by retention."""
    return retention_now_ns(clock_ns, facts) - facts.raw_keep_ns + HORIZON_MARGIN_NS


def applied_horizon_ns(facts: RetentionFacts) -> int | None:
    """The oldest span start a writer that dates and runs retention itself stores: the latest cutoff applied."""
    return facts.applied_cutoff_ns


def aged_reason(start_ns: int, horizon_ns: int) -> str:
    """The dead letter's reason for a span starting before ``horizon_ns``."""
    return (
        f"older than the raw-span retention horizon: start_ns={start_ns} is "
        f"{(horizon_ns - start_ns) / 3.6e12:,.1f} h before {horizon_ns} (raw spans that old may have been "
        "deleted by retention, so a copy stored before cannot be recognised and would be counted twice)"
    )


def ahead_reason(start_ns: int, clock_ns: int, whose: str) -> str:
    """The dead letter's reason for a span starting more than ``MAX_CLOCK_AHEAD_NS`` after ``clock_ns``."""
    return (
        f"implausible start time: start_ns={start_ns} is {(start_ns - clock_ns) / 3.6e12:,.1f} h ahead of {whose} "
        f"(at most {MAX_CLOCK_AHEAD_NS // 3_600_000_000_000} h accepted; the producer's clock is wrong)"
    )


def aged_dead_letters(spans: Sequence[Span], cutoff_ns: int, now_ns: int) -> list[DeadLetter]:
    """Dead letters for ``spans`` refused by a store's write as older than the applied ``cutoff_ns``."""
    pid = os.getpid()
    return [
        DeadLetter(
            HORIZON_DEAD_LETTER_TOPIC,
            pid,
            now_ns + i,
            s.request_id.encode("utf-8", "replace"),
            encode_span(s),
            aged_reason(s.start_ns, cutoff_ns),
        )
        for i, s in enumerate(spans)
    ]
