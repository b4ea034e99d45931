"""The exporter interface: where a batch of finished spans goes (Kafka, the local store, memory)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from spendtrace.schema import Span

__all__ = ["SpanExporter", "SpansRejected"]


class SpansRejected(Exception):
    """The destination refused some spans for good (too large for it, say); every other span was delivered.

    Raised by ``export`` after the rest of the batch is delivered, so the processor counts and logs
    the refused ones (``rejected``) instead of spilling the batch and retrying it forever.
    """

    def __init__(self, rejected: Sequence[tuple[Span, str]]) -> None:
        super().__init__(f"{len(rejected)} span(s) refused by the destination; first: {rejected[0][1]}")
        #: (span, why) for each refused span
        self.rejected = list(rejected)


@runtime_checkable
class SpanExporter(Protocol):
    """Delivers batches of spans; the ``BatchProcessor`` calls it from its worker thread only.

    ``export`` returns once the batch is durably delivered and raises on any failure, so the
    processor can spill the batch to disk and replay it later; ``SpansRejected`` says that only the
    spans it names were refused, for good, and the rest delivered. An exporter may also define
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
