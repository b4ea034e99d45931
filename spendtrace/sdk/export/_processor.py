"""Batching between the app's threads and an exporter: a bounded buffer, a worker thread, a spill file.

The app thread only appends to a deque (``on_span``); a worker thread takes batches, hands them
to the exporter, and on failure (or while the circuit breaker is open) writes them to the spill
file, replaying it once the exporter works again. A second thread spills the oldest spans when
the buffer passes a quarter of its bound (down to an eighth) while the worker is stuck in a slow
export, and, so that a SIGKILL finds little in memory, every span that waited about ``max_delay``
while the worker was busy (a slow or hung export, a replay) and no ``flush`` waited: a span is
handed to the exporter or written to disk within about 1.25 ``max_delay`` plus one spill write,
while the spill thread keeps up with the app. A span is dropped only when it arrives at a full
buffer, since the app never waits for room: the spill is full or unwritable, or the app records
faster than the spill thread takes spans off the buffer (a tight recording loop holds the GIL,
which the spill thread gets back only at the interpreter's switch interval after each of its
system calls). Every drop is counted and logged.

What a SIGKILL takes with it (the buffer) is counted by the next process using the spill directory:
each processor keeps a small crash record there (``_pending``), rewritten when spans leave the buffer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spendtrace.schema import Span
from spendtrace.sdk.export._base import SpanExporter, SpansRejected
from spendtrace.sdk.export._breaker import CircuitBreaker, get_circuit_breaker
from spendtrace.sdk.export._pending import PendingRecord, reap
from spendtrace.sdk.export._spill import SpillFull, SpillStore

__all__ = ["BatchProcessor", "Counters", "default_spill_dir"]

log = logging.getLogger("spendtrace.export")

_LOG_EVERY = 10.0  # seconds between two warnings of the same kind


def default_spill_dir() -> Path:
    """``SPENDTRACE_SPILL_DIR``, else ``<tempdir>/spendtrace-spill-<uid>`` (per user, survives restarts of the app).

    The spill store creates it 0700 and uses it only while it belongs to this user (see ``_spill``).
    """
    env = os.environ.get("SPENDTRACE_SPILL_DIR")
    if env:
        return Path(env)
    import tempfile  # not at import: it pulls in random, shutil and compressors

    return Path(tempfile.gettempdir()) / f"spendtrace-spill-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot of one processor's counters (see ``spendtrace.ExporterStats`` for their meaning)."""

    recorded: int
    exported: int
    spilled: int
    replayed: int
    dropped: int
    export_errors: int
    spill_errors: int
    queued: int
    in_flight: int
    spill_refused: int = 0
    spill_lost_frames: int = 0
    spill_lost_spans: int = 0
    lost_at_crash: int = 0
    rejected: int = 0


class _RateLimited:
    """Log a warning at most once per interval, saying how many were suppressed meanwhile."""

    def __init__(self, interval: float = _LOG_EVERY) -> None:
        self.interval = interval
        self._next = 0.0
        self._suppressed = 0

    def warn(self, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        self._next = now + self.interval
        extra, self._suppressed = self._suppressed, 0
        if extra:
            msg += f" ({extra} similar messages suppressed)"
        log.warning(msg, *args, exc_info=exc_info)


_live: weakref.WeakSet[BatchProcessor] = weakref.WeakSet()


class BatchProcessor:
    """Feeds an exporter from a background thread; never blocks or raises into the recording app.

    ``batch_size`` spans go out together, or fewer after ``max_delay`` seconds. ``max_queue``
    bounds the in-memory buffer; past a quarter of it the oldest spans are spilled to ``spill_dir``
    (bounded by ``max_spill_bytes``), and so are spans that waited ``max_delay`` while the worker
    was busy (unless ``spill_aged`` is False: the local store, whose readers in this process see
    only what was written, not what waits in the spill); a failing exporter's batches are spilled
    too, then replayed in order once it works again, by this process or the next one using the
    directory.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        batch_size: int = 512,
        max_delay: float = 0.05,
        max_queue: int = 100_000,
        spill_dir: str | os.PathLike[str] | None = None,
        max_spill_bytes: int = 512 * 1024 * 1024,
        max_spill_file_bytes: int = 16 * 1024 * 1024,
        breaker: CircuitBreaker | None = None,
        fsync: bool = True,
        replay: bool = True,
        spill_aged: bool = True,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not max_delay > 0:
            raise ValueError(f"max_delay must be > 0 seconds, got {max_delay!r}")
        self.exporter = exporter
        self.batch_size = batch_size
        self.max_delay = float(max_delay)
        self.max_queue = max(max_queue, batch_size)
        self._spill_high = max(self.max_queue // 4, batch_size)
        self._spill_low = self.max_queue // 8
        self.spill = SpillStore(
            spill_dir if spill_dir is not None else default_spill_dir(),
            max_bytes=max_spill_bytes,
            max_file_bytes=max_spill_file_bytes,
            fsync=fsync,
        )
        self._breaker = breaker
        self.replay_enabled = replay
        self.spill_aged = spill_aged
        self._warn_export = _RateLimited()
        self._warn_drop = _RateLimited()
        self._warn_spill = _RateLimited()
        self._stopped = False
        self._close_exporter = True
        self.lost_at_crash = self._reap_dead()
        self._record = self._open_record()
        self._init_runtime()
        _live.add(self)
        self._start_threads()

    # ---- the crash record (``_pending``) -------------------------------------------------------

    def _open_record(self) -> PendingRecord | None:
        """This processor's crash record in the spill directory, or None when the directory is unusable."""
        try:
            self.spill._ensure_dir()
            return PendingRecord(self.spill.directory)
        except Exception as exc:
            log.warning("spendtrace: no crash record in %s (a SIGKILL goes uncounted): %s", self.spill.directory, exc)
            return None

    def _note_pending(self) -> None:
        """Rewrite the crash record with the spans in the buffer (every take rewrites it too, under ``_cond``)."""
        with self._cond:
            self._note_pending_locked()

    def _note_pending_locked(self) -> None:
        record = self._record
        if record is None:
            return
        try:
            record.write(len(self._queue))
        except OSError:
            self._record = None
            log.warning("spendtrace: the crash record %s cannot be written; no longer kept", record.path)

    def _reap_dead(self) -> int:
        """Count (and remove) the records of processes that died with spans in memory; one WARNING line."""
        try:
            if self.spill._dir_untrusted() is not None:
                return 0  # the spill store refuses the directory, and says so
            dead = reap(self.spill.directory)
        except Exception:
            log.exception("spendtrace: reading crash records in %s failed", self.spill.directory)
            return 0
        lost = sum(n for _, n in dead)
        if lost:
            pids = ", ".join(str(pid) for pid, n in dead if n)
            log.warning(
                "spendtrace: %d spans were lost by an earlier process (pid %s) killed while holding them in memory "
                "(SIGKILL or out of memory; a lower bound: get_stats().lost_at_crash)",
                lost,
                pids,
            )
        return lost

    # ---- state that a forked child rebuilds ------------------------------------------------

    def _init_runtime(self) -> None:
        self._queue: deque[Span] = deque()
        self._cond = threading.Condition(threading.Lock())  # guards taking, in-flight and counters
        self._wake = threading.Event()
        self._spill_wake = threading.Event()
        self._worker_idle = False  # the worker waits for a batch to fill (it takes every span within max_delay)
        self._stopping = False
        self._deadline = float("inf")
        self._flush_waiters = 0
        self._taken = 0
        self._inflight: dict[int, int] = {}  # start index -> span count of batches being handled
        self._current: list[Span] | None = None
        self._replaying = False
        self._abandoned = False
        self._drop_lock = threading.Lock()
        self._admission_dropped = 0
        self._exported = 0
        self._spilled = 0
        self._replayed = 0
        self._dropped = 0
        self._export_errors = 0
        self._spill_errors = 0
        self._rejected = 0
        self._spill_broken_until = 0.0
        self._worker: threading.Thread | None = None
        self._spiller: threading.Thread | None = None

    def _start_threads(self) -> None:
        self._worker = threading.Thread(target=self._run, name="spendtrace-export", daemon=True)
        self._spiller = threading.Thread(target=self._run_spiller, name="spendtrace-spill", daemon=True)
        self._worker.start()
        self._spiller.start()

    def _after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's buffer (the parent exports it) and start own threads."""
        self.spill.after_fork_in_child()
        if self._record is not None:
            self._record.forget_in_child()
        self.lost_at_crash = 0
        self._record = None if self._stopped else self._open_record()
        hook = getattr(self.exporter, "after_fork_in_child", None)
        if hook is not None:
            try:
                hook()
            except Exception:
                log.exception("exporter %r failed to reset after fork", self.exporter)
        self._init_runtime()
        if not self._stopped:
            self._start_threads()

    # ---- the app's side --------------------------------------------------------------------

    def on_span(self, span: Span) -> None:
        """Buffer one finished span (called on the app's thread: O(1), no I/O, no lock)."""
        q = self._queue
        n = len(q)
        if n >= self.batch_size:
            if n >= self.max_queue:
                self._overflow(span)
                return
            if not self._wake.is_set():
                self._wake.set()
            if n >= self._spill_high and not self._spill_wake.is_set():
                self._spill_wake.set()
        q.append(span)

    def extend(self, spans: Sequence[Span]) -> None:
        """Buffer several spans (used to take over those recorded before configuration)."""
        for span in spans:
            self.on_span(span)

    def _overflow(self, span: Span) -> None:
        """The buffer is full: let the spill thread run (a GIL hand-off, no I/O here), else drop and count."""
        if not self._stopping and time.monotonic() >= self._spill_broken_until:
            self._spill_wake.set()
            for _ in range(3):
                time.sleep(0)  # releases the GIL so the spill thread can take spans off the buffer
                if len(self._queue) < self.max_queue:
                    self._queue.append(span)
                    return
        self._drop_admission()

    def _drop_admission(self) -> None:
        with self._drop_lock:
            self._admission_dropped += 1
        self._warn_drop.warn(
            "spendtrace: buffer full (%d spans) and the spill cannot keep up; dropping spans (dropped so far: %d)",
            self.max_queue,
            self._dropped + self._admission_dropped,
        )

    # ---- taking, settling ------------------------------------------------------------------

    def _take(self, limit: int) -> tuple[int, list[Span]]:
        q = self._queue
        with self._cond:
            n = min(limit, len(q))
            batch = [q.popleft() for _ in range(n)]
            self._note_pending_locked()  # before any of these spans is delivered: never counts a delivered one
            start = self._taken
            self._taken += n
            if n:
                self._inflight[start] = n
        return start, batch

    def _settle(self, start: int) -> None:
        with self._cond:
            self._inflight.pop(start, None)
            self._cond.notify_all()

    def _spill_or_drop(self, batch: list[Span], *, reason: str) -> None:
        """Write ``batch`` to the spill file; if that fails, count it as dropped and log."""
        if time.monotonic() >= self._spill_broken_until:
            try:
                self.spill.write(batch)
            except Exception as exc:
                with self._cond:
                    self._spill_errors += 1
                # A full spill frees up as replay deletes files; a failing disk is retried a bit later.
                self._spill_broken_until = time.monotonic() + (0.0 if isinstance(exc, SpillFull) else 1.0)
                self._warn_spill.warn("spendtrace: cannot spill %d spans (%s): %s", len(batch), reason, exc)
            else:
                with self._cond:
                    self._spilled += len(batch)
                return
        with self._cond:
            self._dropped += len(batch)
        self._warn_drop.warn(
            "spendtrace: dropped %d spans (%s; the spill is full or unwritable); dropped so far: %d",
            len(batch),
            reason,
            self._dropped + self._admission_dropped,
        )

    # ---- the worker ------------------------------------------------------------------------

    def _breaker_now(self) -> CircuitBreaker:
        return self._breaker if self._breaker is not None else get_circuit_breaker()

    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    break
            except Exception:  # a bug here must not kill the worker: log and carry on
                log.exception("spendtrace: export worker error")
                time.sleep(0.05)
        if self._close_exporter:
            try:
                self.exporter.shutdown()
            except Exception:
                log.exception("spendtrace: exporter shutdown failed")

    def _step(self) -> bool:
        """One round of the worker; ``False`` once stopped and drained."""
        q = self._queue
        waited = False
        if self._stopping:
            if not q:
                return False
            if time.monotonic() >= self._deadline:
                return False  # shutdown() spills what is left
        elif len(q) < self.batch_size and not self._flush_waiters and not self._replaying:
            self._idle_wait()
            waited = True
        start, batch = self._take(self.batch_size)
        if batch:
            self._current = batch
            try:
                delivered = self._deliver(batch)
            finally:
                self._current = None
                self._settle(start)
            if delivered and self.replay_enabled and not self._stopping and self.spill.has_backlog():
                self._drain_spill()
                self._replaying = self.spill.has_backlog()  # more left: go round again without waiting
            return True
        if self._stopping:
            return True
        self._replaying = bool(self.replay_enabled and self.spill.has_backlog() and self._replay_one())
        if self._replaying:
            return True  # more may follow: go round again without waiting
        if not q and not waited:
            self._idle_wait()
        return True

    def _idle_wait(self) -> None:
        """Wait up to ``max_delay`` for a full batch; meanwhile the spill thread leaves the buffer alone."""
        self._worker_idle = True
        try:
            self._wake.wait(self.max_delay)
        finally:
            self._worker_idle = False
        self._wake.clear()

    def _deliver(self, batch: list[Span]) -> bool:
        """Export ``batch``, or spill it; ``True`` if the exporter took it."""
        breaker = self._breaker_now()
        if self._stopping and time.monotonic() >= self._deadline:
            self._spill_or_drop(batch, reason="shutting down")
            return False
        if not breaker.allow():
            self._spill_or_drop(batch, reason="circuit breaker open")
            return False
        try:
            self.exporter.export(batch)
        except SpansRejected as exc:
            self._count_rejected(exc)
            breaker.record_success()
            with self._cond:
                self._exported += len(batch) - len(exc.rejected)
            return True
        except Exception as exc:
            breaker.record_failure()
            with self._cond:
                self._export_errors += 1
            self._warn_export.warn("spendtrace: export of %d spans failed, spilling them: %r", len(batch), exc)
            if not self._abandoned:
                self._spill_or_drop(batch, reason="export failed")
            return False
        breaker.record_success()
        with self._cond:
            self._exported += len(batch)
        return True

    def _drain_spill(self) -> None:
        """After a fresh batch went out: replay spill frames until fresh spans need the worker again.

        That is, while less than a batch waits in memory and no ``flush`` waits for those spans, for
        at most ``max_delay`` (at least one frame). So a backlog drains at the destination's speed
        between fresh batches, not one frame per fresh batch (one per ``max_delay`` under light
        traffic, which left a 2-minute outage's spill waiting for minutes).
        """
        deadline = time.monotonic() + self.max_delay
        q = self._queue
        while self._replay_one():
            if self._stopping or len(q) >= self.batch_size or (self._flush_waiters and q):
                return
            if time.monotonic() >= deadline:
                return

    def _replay_one(self) -> int:
        breaker = self._breaker_now()
        if not breaker.allow():
            return 0

        refused = 0

        def export(spans: list[Span]) -> None:
            nonlocal refused
            try:
                self.exporter.export(spans)
            except SpansRejected as exc:  # the frame is done: the rest went, the refused are counted
                self._count_rejected(exc)
                refused = len(exc.rejected)

        try:
            n = self.spill.replay_one(export)
        except Exception as exc:
            breaker.record_failure()
            with self._cond:
                self._export_errors += 1
            self._warn_export.warn("spendtrace: replay from the spill failed, will retry: %r", exc)
            return 0
        breaker.record_success()
        if n:
            with self._cond:
                self._exported += n - refused
                self._replayed += n - refused
                self._cond.notify_all()
        return n

    def _count_rejected(self, exc: SpansRejected) -> None:
        """Count spans the destination refused for good, and say which and why (one ERROR per batch)."""
        with self._cond:
            self._rejected += len(exc.rejected)
        span, why = exc.rejected[0]
        log.error(
            "spendtrace: the exporter refused %d span(s) for good, not retried (rejected so far: %d); first: "
            "span %s of request %s: %s",
            len(exc.rejected),
            self._rejected,
            span.span_id[:64],
            span.request_id[:64],
            why[:300],
        )

    def _run_spiller(self) -> None:
        """Spill the oldest spans while the buffer is past its high-water mark, or once they waited ``max_delay``.

        The age rule bounds what a SIGKILL can take: at fixed ticks (a quarter of ``max_delay``)
        this thread notes the index of the newest span; spans already there four ticks ago and still
        untaken while the worker is busy go to the spill in one frame. No per-span clock, nothing on
        the recording path.
        """
        rounds = 4
        tick = self.max_delay / rounds
        marks = [0] * rounds  # the buffer's end (an index in ``_taken`` terms) at each of the last ticks
        next_tick = time.monotonic() + tick
        while not self._stopping:
            self._spill_wake.wait(max(0.0, next_tick - time.monotonic()))
            self._spill_wake.clear()
            now = time.monotonic()
            ticked = now >= next_tick
            if ticked:
                next_tick = max(next_tick + tick, now)
            self._note_pending()  # the crash record stays current while the export thread is stuck
            # Everything above the low-water mark in one frame: one fsync, and one GIL hand-off
            # against a fast-recording app, instead of one per batch; then the age rule has its turn.
            excess = len(self._queue) - self._spill_low
            if excess > 0 and time.monotonic() >= self._spill_broken_until:
                self._spill_some(max(self.batch_size, excess), "buffer over its bound")
            if not ticked:
                continue
            aged = marks[0] - self._taken
            # Not while a flush waits: the app asked for delivery, and the worker is taking batches for it.
            busy = self.spill_aged and not self._worker_idle and not self._flush_waiters
            if aged > 0 and busy and not self._stopping and self._spill_has_room():
                self._spill_some(aged, "waited max_delay while the exporter was busy")
            marks = [*marks[1:], self._taken + len(self._queue)]

    def _spill_has_room(self) -> bool:
        """Whether the age rule may spill: the disk is not failing and a file's worth of room is left.

        With the spill (nearly) full, spans wait in memory for the exporter instead of being dropped.
        """
        if time.monotonic() < self._spill_broken_until:
            return False
        used = self.spill._dir_bytes
        return used is None or used + self.spill.max_file_bytes <= self.spill.max_bytes

    def _spill_some(self, limit: int, reason: str) -> bool:
        """Take up to ``limit`` of the oldest spans and spill them in one frame; ``False`` if none were left."""
        start, batch = self._take(limit)
        if not batch:
            return False
        try:
            self._spill_or_drop(batch, reason=reason)
        except Exception:
            log.exception("spendtrace: spill thread error")
        finally:
            self._settle(start)
        return True

    # ---- flush, shutdown, stats -------------------------------------------------------------

    def _done_upto(self, target: int) -> bool:
        return self._taken >= target and all(start >= target for start in self._inflight)

    def flush(self, timeout: float = 5.0) -> int:
        """Wait until every span buffered before this call is exported, spilled or dropped.

        Returns how many of those spans are still pending when the timeout ran out (0: all settled).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            target = self._taken + len(self._queue)
            self._flush_waiters += 1
        self._wake.set()
        try:
            with self._cond:
                while not self._done_upto(target):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._alive():
                        break
                    self._cond.wait(min(remaining, 0.05))
                return self._pending_upto(target)
        finally:
            with self._cond:
                self._flush_waiters -= 1

    def _pending_upto(self, target: int) -> int:
        untaken = max(0, target - self._taken)
        inflight = sum(min(n, max(0, target - start)) for start, n in self._inflight.items())
        return untaken + inflight

    def _alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def shutdown(self, timeout: float = 5.0, *, close_exporter: bool = True) -> None:
        """Deliver what is buffered within ``timeout`` seconds, spill the rest, stop the threads.

        ``close_exporter=False`` leaves the exporter open (it is handed to a new processor).
        """
        if self._stopped:
            return
        self._stopped = True
        self._close_exporter = close_exporter
        self._deadline = time.monotonic() + max(0.0, timeout)
        self._stopping = True
        self._wake.set()
        self._spill_wake.set()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(max(0.0, timeout) + 0.5)
        if self._spiller is not None and self._spiller is not threading.current_thread():
            self._spiller.join(1.0)
        # Whatever the worker could not deliver in time goes to disk, for the next process to replay.
        stuck = self._current
        if self._alive() and stuck is not None:
            self._abandoned = True
            self._spill_or_drop(list(stuck), reason="exporter still busy at shutdown")
        while True:
            start, batch = self._take(self.batch_size)
            if not batch:
                break
            self._spill_or_drop(batch, reason="not delivered before shutdown")
            self._settle(start)
        self.spill.close()
        with self._cond:  # no thread writes it after this
            record, self._record = self._record, None
        if record is not None:
            record.close(delete=True)
        _live.discard(self)

    def counters(self) -> Counters:
        """A consistent snapshot of this processor's counters."""
        with self._cond:
            queued = len(self._queue)
            in_flight = sum(self._inflight.values())
            return Counters(
                recorded=self._taken + queued + self._admission_dropped,
                exported=self._exported,
                spilled=self._spilled,
                replayed=self._replayed,
                dropped=self._dropped + self._admission_dropped,
                export_errors=self._export_errors,
                spill_errors=self._spill_errors,
                queued=queued,
                in_flight=in_flight,
                spill_refused=self.spill.refused,
                spill_lost_frames=self.spill.lost_frames,
                spill_lost_spans=self.spill.lost_spans,
                lost_at_crash=self.lost_at_crash,
                rejected=self._rejected,
            )


def _after_fork_in_child() -> None:
    for processor in list(_live):
        processor._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
