"""Spend alerts without Kafka: the local SQLite exporter evaluates rules and sends webhooks itself.

``LocalAlerts.after_commit`` runs on the exporter's thread right after a batch committed, with
the exporter's connection: it evaluates the rules whose scope the batch touched through the same
code as the workers (``spendtrace.server.alerts.evaluate``), so one ``BEGIN IMMEDIATE`` decides the firing
whichever process evaluates. Fired events go to a small daemon thread that POSTs them with the
workers' bodies and retry policy (``spendtrace.server.alerts.delivery``) through a blocking httpx client.
Nothing here raises into the exporter: errors are counted, and logged once per kind.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from spendtrace.server.alerts.delivery import (
    NO_HTTPX,
    Attempt,
    RetryPolicy,
    attempt_error,
    claim_event,
    delivery_steps,
    mask_httpx_log,
    pending_events,
    record_attempt,
    run_sync,
)
from spendtrace.server.alerts.evaluate import AlertEvent, RuleChecker, Touched
from spendtrace.server.alerts.rules import AlertRule

__all__ = ["LocalAlerts"]

log = logging.getLogger("spendtrace.alerts")

_RECOVER = "recover"
_Item = tuple[AlertEvent, AlertRule] | str | None


class LocalAlerts:
    """Rule evaluation after each local batch, and webhook delivery on a background thread.

    Counters: ``evaluations`` (batches checked), ``fired``, ``delivered``, ``failed`` (deliveries
    that gave up), ``dropped`` (events not queued: queue full), ``errors`` (exceptions caught).
    Events left ``pending`` by a process that stopped before sending them (fired over
    ``recover_after_s`` ago) are claimed and sent once by the next process that evaluates rules.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        policy: RetryPolicy | None = None,
        queue_size: int = 1000,
        recover_after_s: float = 300.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.db_path = os.fspath(db_path)
        self.policy = policy or RetryPolicy()
        self.recover_after_s = recover_after_s
        self.clock = clock
        self.evaluations = 0
        self.fired = 0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.errors = 0
        self._queue_size = queue_size
        self._logged: set[str] = set()
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._checker = RuleChecker()
        self._queue: queue.Queue[_Item] = queue.Queue(self._queue_size)
        self._thread: threading.Thread | None = None
        self._recovery_checked = False

    # -- the exporter's side -----------------------------------------------------------------

    def after_commit(self, conn: sqlite3.Connection, result: Any) -> list[AlertEvent]:
        """Evaluate the rules the committed batch ``result`` may have changed; never raises.

        Called on the exporter's thread with its connection (no transaction open). Returns what fired.
        """
        try:
            if getattr(result, "new_spans", 1) == 0:
                return []  # a replay of stored spans changes no spend
            fired = self._checker.check(conn, Touched.from_result(result), self.clock(), self._rule_error)
            self.evaluations += 1
            if not self._recovery_checked and self._checker.cached:
                self._recovery_checked = True
                if self._has_orphans(conn):
                    self._enqueue(conn, _RECOVER)
            for event, rule in fired:
                self.fired += 1
                log.warning("alert fired: %s", event.message)
                self._enqueue(conn, (event, rule))
            return [e for e, _ in fired]
        except Exception as exc:  # telemetry never breaks export
            self._error("evaluating alert rules", exc)
            return []

    def _has_orphans(self, conn: sqlite3.Connection) -> bool:
        row = conn.execute("SELECT 1 FROM alert_events WHERE delivery = 'pending' AND fired_ns < ? LIMIT 1",
                           (self._recover_before(),)).fetchone()
        return row is not None

    def _recover_before(self) -> int:
        return time.time_ns() - int(self.recover_after_s * 1e9)

    def _enqueue(self, conn: sqlite3.Connection, item: _Item) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(self._queue,), name="spendtrace-alerts",
                                            daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if isinstance(item, tuple):
                log.error("alert delivery queue full; event %d of rule %r not delivered", item[0].id, item[1].name)
                record_attempt(conn, item[0].id, 0, None, "delivery queue full", "failed")

    def close(self, timeout: float = 5.0) -> None:
        """Let queued deliveries finish for up to ``timeout`` seconds, then stop the thread.

        Events not sent by then stay in the database (``pending``) for the next process to send.
        A later batch starts a new thread.
        """
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            self._queue.put(None, timeout=max(0.0, timeout))
        except queue.Full:
            return  # still busy: the daemon thread ends with the process
        self._thread, self._queue = None, queue.Queue(self._queue_size)
        thread.join(max(0.0, deadline - time.monotonic()))

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait up to ``timeout`` seconds until every queued event has been handled; True if it was."""
        deadline = time.monotonic() + max(0.0, timeout)
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def after_fork_in_child(self) -> None:
        """A forked child starts with no delivery thread and no queue (the parent delivers its own events)."""
        self._reset_runtime()

    # -- the delivery thread -----------------------------------------------------------------

    def _run(self, items: queue.Queue[_Item]) -> None:
        conn: sqlite3.Connection | None = None
        client: Any = None
        try:
            while True:
                item = items.get()
                try:
                    if item is None:
                        return
                    if conn is None:
                        from spendtrace.server.store.sqlite._db import connect

                        conn = connect(self.db_path)
                    if item == _RECOVER:
                        todo = pending_events(conn, self._recover_before())
                    else:
                        assert isinstance(item, tuple)
                        todo = [item]
                    for event, rule in todo:
                        client = self._deliver(conn, client, event, rule)
                except Exception as exc:  # one event's failure must not end the thread
                    self._error("delivering an alert", exc)
                finally:
                    items.task_done()
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception as exc:
                    self._error("closing the webhook client", exc)
            if conn is not None:
                conn.close()

    def _deliver(self, conn: sqlite3.Connection, client: Any, event: AlertEvent, rule: AlertRule) -> Any:
        """Claim and send one event; returns the (possibly new) HTTP client."""
        if not claim_event(conn, event.id):
            return client  # another process has it
        holder = [client]

        def post(url: str, body: Any) -> Attempt:
            if holder[0] is None:
                holder[0] = _http_client(self.policy.timeout)
                if holder[0] is None:
                    return Attempt(None, NO_HTTPX, retry=False)
            try:
                return Attempt(int(holder[0].post(url, json=body).status_code))
            except Exception as exc:  # timeouts, refused connections, TLS errors ...
                return Attempt(None, attempt_error(exc, url))

        def record(attempt: int | None, status: int | None, error: str | None, final: str | None) -> None:
            record_attempt(conn, event.id, attempt, status, error, final, self.clock())

        final = run_sync(delivery_steps(event, rule, self.policy), post, record)
        if final == "delivered":
            self.delivered += 1
        elif final == "failed":
            self.failed += 1
        return holder[0]

    # -- errors ------------------------------------------------------------------------------

    def _rule_error(self, rule: AlertRule, exc: sqlite3.Error) -> None:
        self._error("evaluating an alert rule", exc)

    def _error(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        if what in self._logged:
            log.debug("spendtrace: %s failed again: %r", what, exc)
            return
        self._logged.add(what)
        log.error("spendtrace: %s failed (logged once; later failures are only counted): %r", what, exc,
                  exc_info=exc)


def _http_client(timeout: float) -> Any:
    """A blocking httpx client with the workers' settings, or None when httpx is not installed."""
    try:
        import httpx
    except ImportError:
        return None
    mask_httpx_log()
    return httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                        headers={"User-Agent": "spendtrace-alerts"})
