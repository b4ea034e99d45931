"""A Prometheus-style histogram of seconds, kept by each worker (batch commit latency)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

__all__ = ["COMMIT_BUCKETS", "Histogram"]

#: Upper bounds (seconds) of the batch commit latency buckets; ``+Inf`` is implied.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """A Prometheus-style histogram of seconds: per-bucket counts (rendered cumulative), sum and count."""

    def __init__(self, buckets: Sequence[float] = COMMIT_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Count one observation in the first bucket whose bound is >= ``seconds``."""
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def samples(self, name: str, labels: str) -> list[str]:
        """Exposition lines ``name_bucket{..., le}`` (cumulative), ``name_sum`` and ``name_count``."""
        out: list[str] = []
        running = 0
        for bound, n in zip((*map(repr, self.buckets), "+Inf"), self.counts, strict=True):
            running += n
            out.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
        out.append(f"{name}_sum{{{labels}}} {self.sum!r}")
        out.append(f"{name}_count{{{labels}}} {self.count}")
        return out
