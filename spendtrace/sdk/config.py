"""Process-wide export configuration: ``configure``, ``flush``, ``shutdown``, ``get_stats``.

Where spans go, in order of precedence: ``configure(exporter=...)``; Kafka with
``configure(kafka_bootstrap=...)``; the SQLite store with ``configure(db=...)``; Kafka when
``SPENDTRACE_KAFKA_BOOTSTRAP`` is set (topic from ``topic=`` / ``SPENDTRACE_TOPIC``, default
``spendtrace.spans``); otherwise the SQLite store at ``SPENDTRACE_DB`` or ``cost_data.db`` in
the working directory. Without any
call to ``configure``, the first recorded span installs that default. Spill files go to
``spill_dir=`` / ``SPENDTRACE_SPILL_DIR`` as given, else to a per-user directory under the
system temp dir with one sub-directory per destination, so spans spilled for one store are
never replayed into another.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from spendtrace import settings as _settings
from spendtrace.errors import ConfigError
from spendtrace.schema import Span
from spendtrace.sdk import pipeline as _pipeline
from spendtrace.sdk.export._base import SpanExporter
from spendtrace.sdk.export._breaker import (
    CircuitBreaker,
    default_circuit_breaker,
    get_circuit_breaker,
    set_circuit_breaker,
)
from spendtrace.sdk.export._processor import BatchProcessor, default_spill_dir

__all__ = [
    "ExporterStats",
    "FlushResult",
    "configure",
    "ensure_configured",
    "flush",
    "flush_local",
    "get_processor",
    "get_stats",
    "reset",
    "shutdown",
]

log = logging.getLogger("spendtrace.export")

DEFAULT_TOPIC = "spendtrace.spans"

#: Exporters found by name ("module:attribute"), as OpenTelemetry's configuration finds its own: the
#: local store exporter prices and stores spans, so it lives on the server side, and an app that
#: records to Kafka never imports it.
EXPORTERS: dict[str, str] = {"local": "spendtrace.server.local_export:LocalStoreExporter"}


@runtime_checkable
class FileExporter(Protocol):
    """An exporter that writes a local database file (the local store): reads of that file flush it first."""

    db_path: Path

    def same_file(self, path: str | os.PathLike[str]) -> bool: ...


def _exporter_class(name: str) -> Any:
    module, _, attr = EXPORTERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True, slots=True)
class ExporterStats:
    """Counters of the current configuration (since the last ``configure``).

    ``recorded``: spans handed over by the app. ``exported``: spans the exporter confirmed,
    replayed ones included. ``spilled``: spans written to the spill file. ``replayed``: spans
    exported from the spill (possibly spilled by an earlier process). ``dropped``: spans lost
    because they met a full buffer, the spill being full, unwritable or slower than the app
    (each one is counted and logged). ``export_errors``: failed export calls. ``queued`` /
    ``in_flight``: in memory now. ``spill_refused``: spill files never replayed because another
    user owns them (or their directory), or others can write to them (each is logged).
    ``spill_lost_frames`` / ``spill_lost_spans``: spill frames given up on replay because they were
    damaged (a flipped byte, a torn write), and the spans their headers say they held (a damaged
    header does not say; each loss is logged with the file and byte range). ``lost_at_crash``:
    spans an earlier process using the same spill directory held in memory when it was killed
    (SIGKILL, out of memory), counted when this configuration started (a lower bound; logged).
    ``rejected``: spans the destination refused for good (larger than Kafka accepts), each batch's
    logged with the first span's ids and the reason; the rest of their batch or spill frame went on.
    """

    recorded: int = 0
    exported: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    export_errors: int = 0
    spill_errors: int = 0
    queued: int = 0
    in_flight: int = 0
    breaker_state: str = "closed"
    exporter: str = ""
    spill_refused: int = 0
    spill_lost_frames: int = 0
    spill_lost_spans: int = 0
    lost_at_crash: int = 0
    rejected: int = 0


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What ``flush`` achieved for the spans recorded before it was called.

    ``delivered``, ``spilled`` and ``dropped`` count what the processor did while the flush
    ran; ``pending`` is how many of the spans recorded before the call were still in memory
    when it returned. ``ok``: nothing pending and nothing dropped (every span is delivered or
    safely on disk); ``all_delivered``: ``ok`` and nothing went to the spill file.
    """

    delivered: int = 0
    spilled: int = 0
    pending: int = 0
    dropped: int = 0

    @property
    def ok(self) -> bool:
        """Every span recorded before the flush is delivered or in the spill file."""
        return self.pending == 0 and self.dropped == 0

    @property
    def all_delivered(self) -> bool:
        """Every span recorded before the flush reached the exporter (none spilled)."""
        return self.ok and self.spilled == 0


_lock = threading.RLock()
_processor: BatchProcessor | None = None
_after_shutdown_drops = 0
_atexit_registered = False
_exit_timeout = 5.0


def _slug(text: str) -> str:
    import hashlib

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40]
    return f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _spill_dir_for(exporter: SpanExporter) -> Path:
    """The default spill directory: one sub-directory per destination under the per-user root."""
    root = default_spill_dir()
    if os.environ.get("SPENDTRACE_SPILL_DIR"):
        return root
    if isinstance(exporter, FileExporter):
        return root / _slug("sqlite-" + os.path.abspath(exporter.db_path))
    bootstrap = getattr(exporter, "bootstrap", None)
    topic = getattr(exporter, "topic", None)
    if isinstance(bootstrap, str) and isinstance(topic, str):
        return root / _slug(f"kafka-{bootstrap}-{topic}")
    return root / _slug(type(exporter).__qualname__)


def _env_bootstrap() -> str | None:
    value = os.environ.get("SPENDTRACE_KAFKA_BOOTSTRAP", "").strip()
    return value or None


def _build_exporter(
    exporter: SpanExporter | None,
    kafka_bootstrap: str | None,
    topic: str | None,
    db: str | os.PathLike[str] | None,
    kafka_options: dict[str, Any],
) -> SpanExporter:
    if exporter is not None:
        if not all(callable(getattr(exporter, m, None)) for m in ("export", "force_flush", "shutdown")):
            raise TypeError(f"exporter must implement export/force_flush/shutdown, got {type(exporter).__name__}")
        return exporter
    # Explicit arguments beat the environment: configure(db=...) means the local store even when
    # SPENDTRACE_KAFKA_BOOTSTRAP is set.
    bootstrap = kafka_bootstrap or (None if db is not None else _env_bootstrap())
    if bootstrap:
        from spendtrace.sdk.export._kafka import KafkaExporter

        name = topic or os.environ.get("SPENDTRACE_TOPIC", "").strip() or DEFAULT_TOPIC
        return KafkaExporter(bootstrap, name, **kafka_options)
    exporter_cls = _exporter_class("local")
    local: SpanExporter = exporter_cls(_settings.default_db_path() if db is None else db)
    return local


def configure(
    *,
    kafka_bootstrap: str | None = None,
    topic: str | None = None,
    db: str | os.PathLike[str] | None = None,
    spill_dir: str | os.PathLike[str] | None = None,
    exporter: SpanExporter | None = None,
    sample_rate: float | None = None,
    batch_size: int = 512,
    max_delay: float = 0.05,
    max_queue: int = 100_000,
    max_spill_bytes: int = 512 * 1024 * 1024,
    max_spill_file_bytes: int = 16 * 1024 * 1024,
    lambda_memory_mb: int | None = None,
    circuit_breaker: CircuitBreaker | None = None,
    partitions: int | None = None,
    kafka_options: dict[str, Any] | None = None,
    fsync: bool = True,
    replay: bool = True,
    exit_timeout: float = 5.0,
) -> BatchProcessor:
    """Choose where spans go and how they are batched; replaces any earlier configuration.

    With no arguments: Kafka if ``SPENDTRACE_KAFKA_BOOTSTRAP`` is set, else the SQLite store
    (``SPENDTRACE_DB`` or ``cost_data.db``). ``db`` also becomes the default database of the
    query API. ``kafka_options`` go to ``KafkaExporter`` (acks, linger_ms, compression_type,
    request_timeout_ms, ...). The previous configuration is flushed (what it cannot deliver
    within ``exit_timeout`` seconds is spilled) before the new one starts. Returns the new
    processor. Raises ``ConfigError`` / ``ValueError`` / ``TypeError`` for bad settings.
    """
    global _processor, _atexit_registered, _exit_timeout
    options = dict(kafka_options or {})
    if partitions is not None:
        options["partitions"] = partitions
    if not exit_timeout >= 0:
        raise ConfigError(f"exit_timeout must be >= 0 seconds, got {exit_timeout!r}")
    if sample_rate is not None:
        from spendtrace.sdk import sampling as _sampling

        _sampling.set_global_sample_rate(sample_rate)
    if lambda_memory_mb is not None:
        from spendtrace.sdk import clock as _clock

        _clock.set_lambda_memory_mb(lambda_memory_mb)
    new_exporter = _build_exporter(exporter, kafka_bootstrap, topic, db, options)
    if circuit_breaker is not None:
        set_circuit_breaker(circuit_breaker)
    with _lock:
        _pipeline.disable_autoconfigure()
        old, _processor = _processor, None
        if old is not None:
            _pipeline.reset_sink()  # spans recorded meanwhile wait in the early list
            old.shutdown(_exit_timeout, close_exporter=old.exporter is not new_exporter)
        if db is not None:
            _settings.set_db_path(db)
        processor = BatchProcessor(
            new_exporter,
            batch_size=batch_size,
            max_delay=max_delay,
            max_queue=max_queue,
            spill_dir=spill_dir if spill_dir is not None else _spill_dir_for(new_exporter),
            max_spill_bytes=max_spill_bytes,
            max_spill_file_bytes=max_spill_file_bytes,
            fsync=fsync,
            replay=replay,
            # The local store's readers in this process flush and then read the file: spans moved to
            # the spill by age would be missing from what they read until replayed.
            spill_aged=not isinstance(new_exporter, FileExporter),
        )
        _processor = processor
        _exit_timeout = float(exit_timeout)
        processor.extend(_pipeline.set_sink(processor.on_span))
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
    return processor


def ensure_configured() -> None:
    """Install the default configuration unless one exists (called on the first span recorded)."""
    if _processor is not None:
        return
    if not _lock.acquire(blocking=False):
        return  # someone is configuring right now and will take over the waiting spans
    try:
        if _processor is None:
            configure()
    finally:
        _lock.release()


def get_processor() -> BatchProcessor | None:
    """The processor of the current configuration, if any."""
    return _processor


def flush(timeout: float = 5.0) -> FlushResult:
    """Wait up to ``timeout`` seconds until every span recorded so far is delivered or spilled.

    Never raises because of the exporter; the result says what happened (see ``FlushResult``).
    """
    p = _processor
    if p is None:
        return FlushResult(pending=len(_pipeline._early))
    before = p.counters()
    pending = p.flush(timeout)
    after = p.counters()
    return FlushResult(
        delivered=after.exported - before.exported,
        spilled=after.spilled - before.spilled,
        pending=pending,
        dropped=after.dropped - before.dropped,
    )


def flush_local(db_path: str | os.PathLike[str], timeout: float = 5.0) -> None:
    """Before reading ``db_path`` in this process: deliver the spans this process is writing there.

    A cheap no-op unless the current configuration exports to that very SQLite file.
    """
    p = _processor
    if p is None or not isinstance(p.exporter, FileExporter) or threading.current_thread() is p._worker:
        return
    if p.exporter.same_file(db_path):
        p.flush(timeout)


def _count_after_shutdown(span: Span) -> None:
    global _after_shutdown_drops
    _after_shutdown_drops += 1


def shutdown(timeout: float = 5.0) -> FlushResult:
    """Flush (up to ``timeout`` seconds; the rest is spilled) and stop exporting.

    Spans recorded afterwards are counted as dropped until ``configure`` is called again.
    """
    global _processor
    with _lock:
        p = _processor
        _pipeline.disable_autoconfigure()
        _pipeline.set_sink(_count_after_shutdown)
        if p is None:
            return FlushResult()
        before = p.counters()
        p.shutdown(timeout)
        after = p.counters()
        _processor = None
    return FlushResult(
        delivered=after.exported - before.exported,
        spilled=after.spilled - before.spilled,
        pending=after.queued + after.in_flight,
        dropped=after.dropped - before.dropped,
    )


def reset(timeout: float = 5.0) -> None:
    """Shut down the current configuration and return to the state at import (used by tests).

    The next recorded span installs the default configuration again; the default circuit
    breaker and the default database path (``configure(db=...)`` set it) are restored.
    """
    global _processor, _after_shutdown_drops
    with _lock:
        p, _processor = _processor, None
        _pipeline.disable_autoconfigure()
        _pipeline.reset_sink()
        if p is not None:
            p.shutdown(timeout)
        _pipeline.restore_default()
        _after_shutdown_drops = 0
        set_circuit_breaker(default_circuit_breaker())
        _settings.set_db_path(None)


def get_stats() -> ExporterStats:
    """The export counters of the current configuration (zeros before the first span)."""
    p = _processor
    breaker = get_circuit_breaker()
    if p is None:
        return ExporterStats(dropped=_after_shutdown_drops, breaker_state=breaker.state)
    c = p.counters()
    return ExporterStats(
        recorded=c.recorded,
        exported=c.exported,
        spilled=c.spilled,
        replayed=c.replayed,
        dropped=c.dropped,
        export_errors=c.export_errors,
        spill_errors=c.spill_errors,
        queued=c.queued,
        in_flight=c.in_flight,
        breaker_state=breaker.state,
        exporter=repr(p.exporter),
        spill_refused=c.spill_refused,
        spill_lost_frames=c.spill_lost_frames,
        spill_lost_spans=c.spill_lost_spans,
        lost_at_crash=c.lost_at_crash,
        rejected=c.rejected,
    )


def _reinit_lock_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # another thread of the parent may have held it at the fork


class _MultiprocessingHook:
    """Anchor for multiprocessing's after-fork registry (it keeps a weak reference)."""


_mp_hook = _MultiprocessingHook()
_mp_registered = False


def _before_fork() -> None:
    """A multiprocessing child (fork / forkserver) leaves through ``os._exit``, skipping atexit.

    So when multiprocessing is in use, have its children flush through a multiprocessing
    finaliser instead, which its ``Process`` runs when the target returns.
    """
    global _mp_registered
    if _mp_registered or "multiprocessing" not in sys.modules:
        return
    try:
        from multiprocessing import util

        util.register_after_fork(_mp_hook, _in_multiprocessing_child)
        _mp_registered = True
    except Exception:  # pragma: no cover - never let a fork fail because of telemetry
        log.debug("spendtrace: could not hook multiprocessing", exc_info=True)


def _in_multiprocessing_child(_: object) -> None:
    from multiprocessing import util

    util.Finalize(None, _at_exit, exitpriority=100)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_reinit_lock_in_child)


def _at_exit() -> None:
    """At interpreter exit: deliver what can be delivered within the exit timeout, spill the rest."""
    try:
        p = _processor
        if p is not None:
            p.shutdown(_exit_timeout)
    except Exception:  # never turn a clean exit into a traceback
        log.exception("spendtrace: flushing at exit failed")


# Wiring for the layers that cannot import this module: the recorder's first span installs the
# default configuration, and a store about to read a local file lets this process's exporter deliver.
_pipeline.set_default_config(ensure_configured)
_settings.set_before_read(flush_local)
