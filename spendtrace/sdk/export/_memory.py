"""An exporter that keeps spans in a list, for tests and for inspecting what an app records."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from spendtrace.schema import Span

__all__ = ["InMemoryExporter"]


class InMemoryExporter:
    """Collects every exported span in memory; ``spans`` returns a copy, ``clear()`` empties it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []

    def export(self, spans: Sequence[Span]) -> None:
        """Append ``spans``."""
        with self._lock:
            self._spans.extend(spans)

    @property
    def spans(self) -> list[Span]:
        """The spans exported so far, in export order."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        """Forget the spans exported so far."""
        with self._lock:
            self._spans.clear()

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Nothing is buffered here."""
        return True

    def shutdown(self) -> None:
        """Nothing to release; the collected spans stay readable."""
