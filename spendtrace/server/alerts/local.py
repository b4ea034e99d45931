"""Spend alerts without Kafka: the local SQLite exporter evaluates rules and sends webhooks itself.

``LocalAlerts.after_commit`` runs on the exporter's thread right after a batch committed: it
evaluates the rules whose scope the batch touched through the same code as the workers
(``spendtrace.server.alerts.evaluate``) on an ``AlertStore`` of its own, so the store's
``claim_firing`` decides the firing whichever process evaluates. Fired events go to a small daemon
thread (with a store of its own) that POSTs them with the workers' bodies and retry policy
(``spendtrace.server.alerts.delivery``) through a blocking httpx client. Nothing here raises into
the exporter: errors are counted, and logged once per kind.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from spendtrace.errors import StorageError
from spendtrace.server.alerts.delivery import (
    NO_HTTPX,
    Attempt,
    RetryPolicy,
    attempt_error,
    delivery_steps,
    mask_httpx_log,
    pending_events,
    run_sync,
    target_check,
)
from spendtrace.server.alerts.evaluate import RuleChecker, Touched
from spendtrace.server.model.alerts import AlertEvent, AlertRule
from spendtrace.server.store.base import AlertStore, open_alert_store

__all__ = ["LocalAlerts"]

log = logging.getLogger("spendtrace.alerts")

_RECOVER = "recover"
_Item = tuple[AlertEvent, AlertRule] | str | None
# Stores inherited across a fork are kept referenced (never closed or finalised in the child).
_abandoned: list[AlertStore] = []


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
        self._store: AlertStore | None = None
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._checker = RuleChecker()
        self._queue: queue.Queue[_Item] = queue.Queue(self._queue_size)
        self._thread: threading.Thread | None = None
        self._recovery_checked = False

    # -- the exporter's side -----------------------------------------------------------------

    def after_commit(self, result: Any) -> list[AlertEvent]:
        """Evaluate the rules the committed batch ``result`` may have changed; never raises.

        Called on the exporter's thread after the batch committed. Returns what fired.
        """
        try:
            if getattr(result, "new_spans", 1) == 0:
                return []  # a replay of stored spans changes no spend
            if self._store is None:
                self._store = open_alert_store(self.db_path)
            store = self._store
            fired = self._checker.check(store, Touched.from_result(result), self.clock(), self._rule_error)
            self.evaluations += 1
            if not self._recovery_checked and self._checker.cached:
                self._recovery_checked = True
                if store.pending_events(self._recover_before(), limit=1):
                    self._enqueue(store, _RECOVER)
            for event, rule in fired:
                self.fired += 1
                log.warning("alert fired: %s", event.message)
                self._enqueue(store, (event, rule))
            return [e for e, _ in fired]
        except Exception as exc:  # telemetry never breaks export
            self._error("evaluating alert rules", exc)
            return []

    def _recover_before(self) -> int:
        return time.time_ns() - int(self.recover_after_s * 1e9)

    def _enqueue(self, store: AlertStore, item: _Item) -> None:
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
                store.record_delivery(item[0].id, attempt=0, error="delivery queue full", final="failed")

    def close(self, timeout: float = 5.0) -> None:
        """Let queued deliveries finish for up to ``timeout`` seconds, then stop the thread.

        Events not sent by then stay in the store (``pending``) for the next process to send.
        A later batch starts a new thread (and opens the store again).
        """
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:
                self._error("closing the alert store", exc)
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
        """A forked child starts with no delivery thread, no queue and no store (the parent delivers its own events)."""
        if self._store is not None:
            _abandoned.append(self._store)  # the parent's connection: neither used nor closed here
        self._store = None
        self._reset_runtime()

    # -- the delivery thread -----------------------------------------------------------------

    def _run(self, items: queue.Queue[_Item]) -> None:
        store: AlertStore | None = None
        client: Any = None
        try:
            while True:
                item = items.get()
                try:
                    if item is None:
                        return
                    if store is None:
                        store = open_alert_store(self.db_path)
                    if item == _RECOVER:
                        todo = pending_events(store, self._recover_before())
                    else:
                        assert isinstance(item, tuple)
                        todo = [item]
                    for event, rule in todo:
                        client = self._deliver(store, client, event, rule)
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
            if store is not None:
                try:
                    store.close()
                except Exception as exc:
                    self._error("closing the alert store", exc)

    def _deliver(self, store: AlertStore, client: Any, event: AlertEvent, rule: AlertRule) -> Any:
        """Claim and send one event; returns the (possibly new) HTTP client."""
        if not store.claim_delivery(event.id):
            return client  # another process has it
        holder = [client]

        def post(url: str, body: Any) -> Attempt:
            refused = target_check(url, rule)
            if refused is not None:
                return refused
            if holder[0] is None:
                holder[0] = _http_client(self.policy.timeout)
                if holder[0] is None:
                    return Attempt(None, NO_HTTPX, retry=False)
            try:
                return Attempt(int(holder[0].post(url, json=body).status_code))
            except Exception as exc:  # timeouts, refused connections, TLS errors ...
                return Attempt(None, attempt_error(exc, url))

        def record(attempt: int | None, status: int | None, error: str | None, final: str | None) -> None:
            store.record_delivery(event.id, attempt=attempt, status=status, error=error, final=final,
                                  at_ns=self.clock())

        final = run_sync(delivery_steps(event, rule, self.policy), post, record)
        if final == "delivered":
            self.delivered += 1
        elif final == "failed":
            self.failed += 1
        return holder[0]

    # -- errors ------------------------------------------------------------------------------

    def _rule_error(self, rule: AlertRule, exc: StorageError) -> None:
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
