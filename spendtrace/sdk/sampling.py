"""Head sampling: which request trees are recorded, decided once at each tree's root.

The rate is a probability in [0, 1]; a recorded tree carries weight ``1 / rate`` on every span,
so weighted sums stay unbiased estimates of the true totals. The process-wide rate comes from
``set_global_sample_rate`` or, at import, from ``SPENDTRACE_SAMPLE_RATE``; a decorator's own
``sample_rate`` overrides it for the trees that decorator starts.
"""

from __future__ import annotations

import math
import os
import random

__all__ = ["get_global_sample_rate", "set_global_sample_rate", "validate_rate"]

#: The generator behind every sampling decision; re-seeded in forked children (see below).
_rng = random.Random()
#: Bound method called on the hot path: a float in [0, 1).
draw = _rng.random


def validate_rate(rate: object, what: str = "sample_rate") -> float:
    """Return ``rate`` as a float if it is a real number in [0, 1]; raise TypeError/ValueError otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise TypeError(f"{what} must be a number between 0 and 1, got {type(rate).__name__}")
    value = float(rate)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be between 0 and 1, got {rate!r}")
    return value


def _rate_from_env() -> float:
    raw = os.environ.get("SPENDTRACE_SAMPLE_RATE")
    if raw is None or not raw.strip():
        return 1.0
    try:
        return validate_rate(float(raw), "SPENDTRACE_SAMPLE_RATE")
    except ValueError:
        # An app must start even with a typo in its environment: record everything and say why.
        import logging

        logging.getLogger("spendtrace").warning(
            "ignoring SPENDTRACE_SAMPLE_RATE=%r: not a number between 0 and 1; recording every request", raw
        )
        return 1.0


#: The process-wide rate, read on the hot path as ``_sampling.rate``.
rate: float = _rate_from_env()


def set_global_sample_rate(sample_rate: float) -> None:
    """Record this fraction of request trees (0 to 1) wherever no decorator sets its own ``sample_rate``.

    The decision is made once at the root of each request, so a tree is recorded whole or not at
    all, and recorded spans carry weight ``1 / sample_rate``. Raises ``ValueError`` / ``TypeError``
    for anything that is not a number between 0 and 1.
    """
    global rate
    rate = validate_rate(sample_rate)


def get_global_sample_rate() -> float:
    """The process-wide sample rate currently in force."""
    return rate


def seed(value: int | None) -> None:
    """Seed the sampling RNG (a test hook, so sampling tests are deterministic rather than lucky)."""
    _rng.seed(value)


def _reseed_after_fork() -> None:
    # A forked worker would otherwise repeat its parent's decisions draw for draw.
    _rng.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed_after_fork)
