"""Write spans straight into the local SQLite store: the no-Kafka setup of the original README.

Pricing and the write go through the same code as the consumer workers
(``spendtrace.server.ingest.prepare.prepare_batch``, then ``IngestStore.apply_batch`` of the store
``open_ingest_store`` opens) with the in-process price book (``spendtrace.server.pricing.current_book()``,
so ``get_tracker().cost_model`` overrides apply), so a span costs the same whichever way it reached
the store.

Spend alerts work here too, without any worker: after each committed batch the exporter's
thread evaluates the rules whose scope the batch touched (``spendtrace.server.alerts.local``, the same
evaluation and firing transaction as the workers), and a small background thread POSTs the
fired events to their webhooks. Neither can slow or break export: errors are caught and counted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spendtrace.schema import Span

if TYPE_CHECKING:
    from spendtrace.server.alerts.local import LocalAlerts
    from spendtrace.server.model.ingest import DeadLetter, RetentionFacts
    from spendtrace.server.store.base import IngestStore

__all__ = ["LOCAL_DEAD_LETTER_TOPIC", "LocalStoreExporter"]

log = logging.getLogger("spendtrace.export")

#: ``dead_letters.topic`` of spans the local exporter could not store (``partition`` is the app's pid).
LOCAL_DEAD_LETTER_TOPIC = "(local)"

# Stores (and their connections) inherited across a fork are kept referenced (never closed or finalised
# in the child).
_abandoned: list[IngestStore] = []


class LocalStoreExporter:
    """Prices each batch and stores it in one SQLite transaction at ``db_path`` (created when missing).

    With ``alerts=True`` (the default) it also evaluates the spend alert rules stored in that
    database after each batch and delivers their webhooks from a background thread; ``shutdown``
    gives pending deliveries up to ``alert_drain_timeout`` seconds. ``alerts`` (a
    ``spendtrace.server.alerts.local.LocalAlerts``, once the first batch is stored) holds the counters.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        alerts: bool = True,
        alert_drain_timeout: float = 5.0,
        retention_interval_s: float = 300.0,
        retention_chunk_rows: int = 20_000,
    ) -> None:
        self.db_path = Path(os.fspath(db_path))
        #: as the workers do: a retention round (the store's policy) starts with the first batch and
        #: then every ``retention_interval_s``; one chunk of at most ``retention_chunk_rows`` per batch
        self.retention_interval_s = retention_interval_s
        self.retention_chunk_rows = retention_chunk_rows
        self.retention_runs = 0
        self._next_retention = 0.0
        self._retention_now_ns: int | None = None
        self.alerts_enabled = alerts
        self.alert_drain_timeout = alert_drain_timeout
        self.alerts: LocalAlerts | None = None
        self._store: IngestStore | None = None
        self._lock = threading.Lock()
        #: spans this exporter could not store and kept as dead letters instead
        self.dead_lettered = 0
        #: times the database file was found deleted or replaced under this exporter (then reopened)
        self.reopened = 0
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the store has open

    def __repr__(self) -> str:
        return f"LocalStoreExporter({str(self.db_path)!r})"

    def same_file(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` names the database this exporter writes."""
        try:
            return os.path.samefile(self.db_path, path)
        except OSError:
            return os.path.abspath(self.db_path) == os.path.abspath(os.fspath(path))

    def export(self, spans: Sequence[Span]) -> None:
        """Price and store ``spans``; duplicate span ids are ignored, as by the workers.

        A span that cannot be priced or stored (a value past the stores' 64-bit columns, say) goes to
        the ``dead_letters`` table with the reason, in the same transaction as the rest of the batch,
        so one bad span never makes the whole batch fail (and then block the spill replay behind it).
        """
        if not spans:
            return
        from spendtrace.schema import EARLIEST_START_NS
        from spendtrace.server.ingest.horizon import MAX_CLOCK_AHEAD_NS, aged_reason, ahead_reason, applied_horizon_ns
        from spendtrace.server.ingest.prepare import prepare_isolating
        from spendtrace.server.pricing import current_book

        # A span dated before 2000 or more than an hour ahead of this host's clock (the only clock in local
        # mode, as the worker's is in the Kafka setup) is kept as a dead letter: stored, the next retention
        # run would delete it unseen, or it would sit where no dashboard looks and never age out. One older
        # than the raw-span cutoff retention has applied (a spill replayed after a long outage) may have had
        # its stored copy deleted: stored again, it would be counted twice (``server.ingest.horizon``).
        total = len(spans)
        clock = time.time_ns()
        latest = clock + MAX_CLOCK_AHEAD_NS
        horizon = applied_horizon_ns(self._facts()) or EARLIEST_START_NS
        lowest = max(EARLIEST_START_NS, horizon)
        misdated = [s for s in spans if not lowest <= s.start_ns <= latest]
        if misdated:
            spans = [s for s in spans if lowest <= s.start_ns <= latest]
        batch, rejected = prepare_isolating(spans, current_book())
        why = "implausible start time: start_ns={} is before 2000-01-01 (this host's clock is wrong)"
        for i, s in enumerate(misdated):
            if s.start_ns > latest:
                reason = ahead_reason(s.start_ns, clock, "this host's clock")
            elif s.start_ns >= EARLIEST_START_NS:
                reason = aged_reason(s.start_ns, horizon)
            else:
                reason = why.format(s.start_ns)
            rejected.append((len(spans) + i, reason))
        dead = _dead_letters([*spans, *misdated], rejected)
        with self._lock:
            if self._store is not None and self._file_identity() != self._identity:
                self._reopen("before writing a batch")
            store = self._open()
            try:
                result = store.apply_batch(batch, (), dead)
            except BaseException:
                self._close()  # start from a fresh store next time
                raise
            if self._file_identity() != self._identity:
                # Committed into a file no longer at db_path (an unlinked inode): stored nowhere anyone reads.
                self._reopen("while a batch was written")
                from spendtrace.errors import StorageError

                raise StorageError(
                    f"the database {self.db_path} was deleted or replaced while {total} spans were written "
                    "to it; they are spilled and written again to the new file"
                )
            self._retention_chunk(store)
            if dead:
                self.dead_lettered += len(dead)
                log.warning(
                    "spendtrace: %d span(s) of a batch of %d cannot be stored, kept in dead_letters of %s; first: %s",
                    len(dead),
                    total,
                    self.db_path,
                    dead[0].reason,
                )
            if self.alerts_enabled:  # the local alerts read through an AlertStore of their own
                if self.alerts is None:
                    from spendtrace.server.alerts.local import LocalAlerts

                    self.alerts = LocalAlerts(self.db_path)
                self.alerts.after_commit(result)  # never raises

    def _open(self) -> IngestStore:
        if self._store is None:
            from spendtrace.server.store.base import open_ingest_store

            if self.db_path.parent != Path(""):
                self.db_path.parent.mkdir(parents=True, exist_ok=True)
            # Opened and used by the export worker thread; the lock serialises the rare other callers.
            self._store = open_ingest_store(self.db_path)
            self._identity = self._file_identity()
        return self._store

    def _facts(self) -> RetentionFacts:
        """The store's retention facts (opening it if needed), read before each batch is prepared."""
        with self._lock:
            if self._store is not None and self._file_identity() != self._identity:
                self._reopen("before writing a batch")
            return self._open().retention_facts()

    def _retention_chunk(self, store: IngestStore) -> None:
        """One chunk of the retention round in progress, or start one when it is due (never raises).

        Local mode has no workers to apply retention, so the exporter does it, between its batches,
        in the same short chunks (``IngestStore.retention_chunk``).
        """
        now = time.monotonic()
        if self._retention_now_ns is None:
            if now < self._next_retention:
                return
            from spendtrace.server.ingest.horizon import retention_now_ns

            try:  # never dated past the newest stored span + 1 day: a clock that jumps deletes no history
                self._retention_now_ns = retention_now_ns(time.time_ns(), store.retention_facts())
            except Exception as exc:
                log.info("spendtrace: retention round not started, retried after a later batch: %s", exc)
                return
        try:
            done = store.retention_chunk(self._retention_now_ns, self.retention_chunk_rows).done
        except Exception as exc:  # busy (a worker or another app holds the store) or failing: retried later
            log.info("spendtrace: retention chunk skipped, retried after a later batch: %s", exc)
            return
        if done:
            self.retention_runs += 1
            self._retention_now_ns = None
            self._next_retention = now + self.retention_interval_s

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at ``db_path`` now; None when there is none.

        SQLite keeps writing to an open file after it is deleted (or its directory is), and those
        writes reach no reader: checked around every batch (two ``stat`` calls against a transaction).
        """
        try:
            st = os.stat(self.db_path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _reopen(self, when: str) -> None:
        """The file at ``db_path`` is not the one open: say so, and open (or create) the one there now."""
        self.reopened += 1
        gone = self._file_identity() is None
        log.error(
            "spendtrace: the database %s was %s %s; %s, and spans are stored there from now on",
            self.db_path,
            "deleted (or its directory)" if gone else "replaced by another file",
            when,
            "creating it again (empty)" if gone else "opening the new file",
        )
        self._close()
        if self.alerts is not None:
            self.alerts.close(0.0)  # its store is the old file too; the next batch opens the new one

    def _close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Every ``export`` commits before returning: nothing is buffered here."""
        return True

    def shutdown(self) -> None:
        """Close the connection; give queued alert webhooks up to ``alert_drain_timeout`` seconds."""
        with self._lock:
            self._close()
        if self.alerts is not None:
            self.alerts.close(self.alert_drain_timeout)

    def after_fork_in_child(self) -> None:
        """A SQLite connection must not cross a fork: forget the parent's store, open a new one on demand."""
        if self._store is not None:
            _abandoned.append(self._store)
        self._store = None
        self._lock = threading.Lock()
        if self.alerts is not None:
            self.alerts.after_fork_in_child()


def _dead_letters(spans: Sequence[Span], rejected: list[tuple[int, str]]) -> list[DeadLetter]:
    """Dead letters for the rejected spans: the span msgpack-encoded, keyed by its request id, with the reason."""
    if not rejected:
        return []
    from spendtrace.schema import encode_span
    from spendtrace.server.model.ingest import DeadLetter

    pid, base = os.getpid(), time.time_ns()  # (topic, partition, offset) is unique per dead letter
    out = []
    for n, (i, reason) in enumerate(rejected):
        span = spans[i]
        try:
            value: bytes | None = encode_span(span)
        except (OverflowError, TypeError, ValueError):  # an int past 64 bits does not even encode
            value = None
        key = span.request_id.encode("utf-8", "replace") if isinstance(span.request_id, str) else None
        out.append(DeadLetter(LOCAL_DEAD_LETTER_TOPIC, pid, base + n, key, value, reason))
    return out
