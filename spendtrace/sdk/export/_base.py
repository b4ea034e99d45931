"""The exporter interface: where a batch of finished spans goes (Kafka, the local store, memory)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from spendtrace.schema import Span

__all__ = ["SpanExporter"]


@runtime_checkable
class SpanExporter(Protocol):
    """Delivers batches of spans; the ``BatchProcessor`` calls it from its worker thread only.

    ``export`` returns once the batch is durably delivered and raises on any failure, so the
    processor can spill the batch to disk and replay it later. An exporter may also define
    ``after_fork_in_child()``; the processor calls it in a forked child before exporting again,
    so the exporter can drop connections and threads that belong to the parent.
    """

    def export(self, spans: Sequence[Span]) -> None:
        """Deliver ``spans``; raise if they may not have been delivered."""
        ...

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Deliver anything the exporter itself buffers; ``True`` if it finished in time."""
        ...

    def shutdown(self) -> None:
        """Release connections and threads; no ``export`` follows."""
        ...
