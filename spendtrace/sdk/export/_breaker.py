"""A circuit breaker on the export path: stop calling a failing exporter for a while, spill instead."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker", "default_circuit_breaker", "get_circuit_breaker", "set_circuit_breaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``error_threshold`` consecutive export errors; half-opens after ``recovery_timeout_sec``.

    While open, the processor does not call the exporter at all and writes batches straight to
    the spill file, so a dead broker costs the app nothing. Once the recovery timeout has passed,
    one trial batch is allowed through (half-open): success closes the breaker (and the spill is
    replayed), failure opens it again for another timeout.
    """

    def __init__(
        self,
        error_threshold: int = 10,
        recovery_timeout_sec: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(error_threshold, bool) or not isinstance(error_threshold, int) or error_threshold < 1:
            raise ValueError(f"error_threshold must be an integer >= 1, got {error_threshold!r}")
        if not isinstance(recovery_timeout_sec, (int, float)) or not recovery_timeout_sec >= 0:
            raise ValueError(f"recovery_timeout_sec must be a number >= 0, got {recovery_timeout_sec!r}")
        self.error_threshold = error_threshold
        self.recovery_timeout_sec = float(recovery_timeout_sec)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False
        self.times_opened = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (an open breaker whose timeout has passed)."""
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.recovery_timeout_sec:
                return HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        """Export errors since the last success."""
        return self._failures

    def allow(self) -> bool:
        """Whether the next batch may go to the exporter (in half-open, only one trial at a time)."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if self._clock() - self._opened_at < self.recovery_timeout_sec:
                    return False
                self._state = HALF_OPEN
                self._trial_out = False
            if self._trial_out:
                return False
            self._trial_out = True
            return True

    def record_success(self) -> None:
        """An export succeeded: close the breaker."""
        with self._lock:
            self._failures = 0
            self._state = CLOSED
            self._trial_out = False

    def record_failure(self) -> None:
        """An export failed: count it, and open the breaker at the threshold or after a failed trial."""
        with self._lock:
            self._failures += 1
            if self._state == HALF_OPEN or (self._state == CLOSED and self._failures >= self.error_threshold):
                self._state = OPEN
                self._opened_at = self._clock()
                self._trial_out = False
                self.times_opened += 1

    def reset(self) -> None:
        """Back to closed with no failures counted."""
        self.record_success()

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(error_threshold={self.error_threshold}, "
            f"recovery_timeout_sec={self.recovery_timeout_sec}, state={self.state!r})"
        )


# Used when the app sets none: quicker to retry than the README's example, because while it is
# open every span goes to disk and waits for replay.
def default_circuit_breaker() -> CircuitBreaker:
    """The breaker used when the app sets none (5 errors, 10 s)."""
    return CircuitBreaker(error_threshold=5, recovery_timeout_sec=10.0)


_breaker = default_circuit_breaker()


def set_circuit_breaker(breaker: CircuitBreaker) -> None:
    """Guard the export path with ``breaker`` (process-wide; takes effect from the next batch)."""
    global _breaker
    if not isinstance(breaker, CircuitBreaker):
        raise TypeError(f"set_circuit_breaker expects a CircuitBreaker, got {type(breaker).__name__}")
    _breaker = breaker


def get_circuit_breaker() -> CircuitBreaker:
    """The breaker currently guarding the export path."""
    return _breaker
