"""The hand-off from the recording hot path to whatever exports spans.

``submit`` is called once per finished span, on the application's thread, and must stay
O(1), non-blocking and non-raising. The export layer (``spendtrace.export``) installs the
real sink with ``set_sink``; until something is configured, spans wait in a bounded list so
that a process which records before calling ``configure`` loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from spendtrace.schema import Span

__all__ = ["get_sink", "set_sink", "submit"]

Sink = Callable[[Span], None]

_early: list[Span] = []


def _early_sink(span: Span) -> None:
    _early.append(span)


_sink: Sink = _early_sink


def submit(span: Span) -> None:
    """Hand one finished span to the configured sink (never raises into the app)."""
    try:  # noqa: SIM105 - try/except is cheaper than contextlib.suppress on the hot path
        _sink(span)
    except Exception:  # telemetry must never break the host app; the sink counts its own errors
        pass


def set_sink(sink: Sink) -> list[Span]:
    """Install ``sink`` and return the spans recorded before any sink was set, for it to take over."""
    global _sink
    _sink = sink
    early = _early[:]
    _early.clear()
    return early


def get_sink() -> Sink:
    """The sink currently installed."""
    return _sink
