"""The hand-off from the recording hot path to whatever exports spans.

``submit`` is called once per finished span, on the application's thread, and must stay
O(1), non-blocking and non-raising. The export layer (``spendtrace.sdk.config``) installs the
real sink with ``set_sink``. Until something is configured, spans wait in a list, and the
first one triggers the default configuration (Kafka if ``SPENDTRACE_KAFKA_BOOTSTRAP`` is set,
else the local SQLite store), so the README's examples work without calling ``configure``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from spendtrace.schema import Span

__all__ = [
    "disable_autoconfigure",
    "get_sink",
    "reset_sink",
    "restore_default",
    "set_default_config",
    "set_sink",
    "submit",
]

Sink = Callable[[Span], None]

_early: list[Span] = []
_auto = True
#: Installs the default configuration; set by ``spendtrace.sdk.config`` when it is imported (the
#: recorder imports it), so this module needs nothing above it.
_default_config: Callable[[], None] | None = None
_auto_lock = threading.Lock()


def _early_sink(span: Span) -> None:
    _early.append(span)
    if _auto:
        _autoconfigure()


def _autoconfigure() -> None:
    """Install the default configuration once, on the first span recorded before any ``configure``."""
    global _auto
    with _auto_lock:
        if not _auto:
            return
        _auto = False
    try:
        if _default_config is not None:
            _default_config()
    except Exception:  # the app's call must still return normally; the spans stay in _early
        logging.getLogger("spendtrace.export").exception("spendtrace: default configuration failed")


_sink: Sink = _early_sink


def _reinit_lock_in_child() -> None:
    global _auto_lock
    _auto_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_lock_in_child)


def submit(span: Span) -> None:
    """Hand one finished span to the configured sink (never raises into the app)."""
    try:  # noqa: SIM105 - try/except is cheaper than contextlib.suppress on the hot path
        _sink(span)
    except Exception:  # telemetry must never break the host app; the sink counts its own errors
        pass


def set_sink(sink: Sink) -> list[Span]:
    """Install ``sink`` and return the spans recorded before any sink was set, for it to take over."""
    global _sink, _early
    _sink = sink
    early, _early = _early, []
    return early


def reset_sink() -> None:
    """Collect spans in the early list again (between two configurations); no default configuration."""
    global _sink
    disable_autoconfigure()
    _sink = _early_sink


def disable_autoconfigure() -> None:
    """Don't install the default configuration on the next span (someone is configuring explicitly)."""
    global _auto
    _auto = False


def restore_default() -> None:
    """Back to the state at import: spans collect in the early list, and the first one configures the default."""
    global _sink, _early, _auto
    _early = []
    _auto = True
    _sink = _early_sink


def set_default_config(fn: Callable[[], None]) -> None:
    """Register what the first span recorded before any ``configure`` calls to install the default."""
    global _default_config
    _default_config = fn


def get_sink() -> Sink:
    """The sink currently installed."""
    return _sink
