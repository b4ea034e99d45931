"""Alert evaluation in the workers: after each committed batch, check the rules whose scope it touched.

The evaluation itself (rules per touched scope, rolling windows read from the rollups, the firing
decided by the ``AlertStore``'s atomic ``claim_firing``) lives in ``spendtrace.server.alerts.evaluate``,
shared with the local SQLite exporter, which evaluates the same rules when there is no Kafka; the
claim makes a rule fire at most once per cooldown however many workers and apps evaluate. Here it
runs on a thread of the evaluator's own, so the event loop never blocks on the store. Delivery
(Kafka topic, webhook) happens afterwards in ``consumers.webhooks``' own task, so it never holds
up ingestion.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from spendtrace.server.alerts.evaluate import (
    RuleChecker,
    Touched,
    budget_spend,
    evaluate_rules,
    period_start,
    rate_values,
    scope_spend,
    window_spend,
)
from spendtrace.server.model.alerts import AlertEvent, AlertRule
from spendtrace.server.store.base import AlertStore, open_alert_store

if TYPE_CHECKING:
    from consumers.webhooks import WebhookDispatcher

__all__ = [
    "AlertEvaluator",
    "AlertEvent",
    "Touched",
    "attach_alerting",
    "budget_spend",
    "evaluate_rules",
    "period_start",
    "rate_values",
    "scope_spend",
    "window_spend",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
Clock = Callable[[], int]


class AlertEvaluator:
    """A worker's alert checker: ``await evaluator(write_result)`` is its post-commit hook.

    ``db_path`` is the store's URL or a bare SQLite path. Holds one ``AlertStore`` used from one
    thread (so the event loop never blocks on it), re-reads the rules when they change, and hands
    fired events to a dispatcher.
    ``dropped`` reads the hook runner's count of results it dropped under load: after a drop
    every rule is evaluated, since the dropped batches' scopes are not known.
    """

    def __init__(
        self,
        db_path: str,
        *,
        dispatcher: WebhookDispatcher | None = None,
        clock: Clock = time.time_ns,
        dropped: Callable[[], int] | None = None,
    ) -> None:
        self.db_path = db_path
        self._dropped = dropped
        self._dropped_seen = 0
        self.dispatcher = dispatcher
        self.clock = clock
        self.fired: list[AlertEvent] = []
        self.evaluations = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="spendtrace-alerts")
        self._store: AlertStore | None = None
        self._checker = RuleChecker()
        self._recovered = False

    async def __call__(self, result: Any) -> None:
        touched = Touched.from_result(result)
        if self._dropped is not None:
            dropped = self._dropped()
            if dropped != self._dropped_seen:  # results were skipped: their scopes may need a look too
                self._dropped_seen = dropped
                touched = Touched.everything()
        await self.evaluate(touched)

    async def evaluate(self, touched: Touched) -> list[AlertEvent]:
        """Evaluate the rules ``touched`` covers, record what fires and queue it for delivery."""
        if not self._recovered and self.dispatcher is not None:
            self._recovered = True
            await self.dispatcher.recover()  # events a crashed worker fired but never delivered
        now = self.clock()
        fired = await self._run(lambda: self._evaluate_sync(touched, now))
        self.evaluations += 1
        for event, rule in fired:
            self.fired.append(event)
            log.warning("alert fired: %s", event.message)
            if self.dispatcher is not None:
                self.dispatcher.submit(event, rule)
        return [e for e, _ in fired]

    def _evaluate_sync(self, touched: Touched, now_ns: int) -> list[tuple[AlertEvent, AlertRule]]:
        if self._store is None:
            self._store = open_alert_store(self.db_path)
        return self._checker.check(self._store, touched, now_ns)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def aclose(self) -> None:
        """Close the store and the thread (the dispatcher is closed by its owner)."""
        if self._store is not None:
            store, self._store = self._store, None
            await self._run(store.close)
        self._pool.shutdown(wait=False)


def attach_alerting(worker: Any, *, clock: Clock = time.time_ns, **dispatcher_options: Any) -> AlertEvaluator:
    """Plug alert evaluation and delivery into a ``consumers.worker.Worker`` (its post-commit hook).

    Events go to the worker's alerts topic and to each rule's webhook. Call ``await
    evaluator.aclose()`` and ``await evaluator.dispatcher.aclose()`` after the worker stops.
    """
    from consumers.webhooks import WebhookDispatcher

    cfg = worker.config
    dispatcher = WebhookDispatcher(
        cfg.db_path, bootstrap=cfg.bootstrap, topic=cfg.alerts_topic, **dispatcher_options
    )
    hooks = getattr(worker, "hooks", None)
    dropped = (lambda: int(hooks.dropped)) if hooks is not None and hasattr(hooks, "dropped") else None
    evaluator = AlertEvaluator(cfg.db_path, dispatcher=dispatcher, clock=clock, dropped=dropped)
    worker.add_post_commit_hook(evaluator)
    return evaluator
