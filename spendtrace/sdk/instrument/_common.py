"""What every integration shares: the error counter, and usage recorded later than the call (streams).

Integrations never raise into the app. A failure while reading usage out of a response is
counted here and logged once per integration, and the app's call returns as if we were not there.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable

from spendtrace.schema import UsageItem
from spendtrace.sdk.scope import record_usage

__all__ = ["DeferredUsage", "error_count", "note_error", "reset_errors"]

logger = logging.getLogger("spendtrace.instrument")

_lock = threading.Lock()
_errors: dict[str, int] = {}


def note_error(where: str, *, exc_info: bool = True) -> None:
    """Count one failure of integration ``where``; log it (with the traceback) the first time only."""
    with _lock:
        n = _errors.get(where, 0)
        _errors[where] = n + 1
    if n == 0:
        logger.warning("spendtrace: could not read usage from a %s call; not recorded (logged once)", where,
                       exc_info=exc_info)  # fmt: skip


def error_count(where: str | None = None) -> int:
    """Failures counted so far for integration ``where``, or for all of them."""
    with _lock:
        return sum(_errors.values()) if where is None else _errors.get(where, 0)


def reset_errors() -> None:
    """Forget the counts (and log the next failure of each integration again); for tests."""
    with _lock:
        _errors.clear()


class DeferredUsage:
    """Usage of a streamed response: gathered while the app reads the stream, recorded once at its end.

    The context is captured when the call is made, so the usage goes to the span that made the call
    even if the stream is read elsewhere or after that span closed (then ``record_usage`` sends it
    as a late child span). ``finish`` is idempotent: end of stream, ``close()`` and garbage collection
    may all call it.
    """

    __slots__ = ("_build", "_ctx", "_done", "where")

    def __init__(self, where: str, build: Callable[[], UsageItem | None]) -> None:
        self.where = where
        self._build = build
        self._ctx = contextvars.copy_context()
        self._done = False

    def finish(self) -> None:
        """Record the usage seen so far (once); never raises."""
        if self._done:
            return
        self._done = True
        try:
            item = self._build()
            if item is not None:
                self._ctx.run(record_usage, item)
        except Exception:
            note_error(self.where)
