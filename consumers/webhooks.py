"""Alert delivery in the workers: publish each fired event to the alerts topic and POST it to the rule's webhook.

Runs in a task of its own, fed by a bounded queue, so a slow or dead webhook never holds up the
consume loop. Each event is claimed first (``delivery`` ``pending`` -> ``sending``), so events a
crashed worker left pending can be picked up by ``recover()`` in any worker (or by an app writing
to the local store) without double sends. The bodies (Slack / PagerDuty), the retry policy and
the per-attempt bookkeeping are ``spendtrace.server.alerts.delivery``'s, shared with the local
exporter's delivery thread: each HTTP attempt is recorded in the ``AlertStore`` (status or
error) and the event's ``delivery`` ends as ``delivered``, ``failed`` or ``none`` (no webhook).
Here they run with ``httpx``'s async client (per-attempt timeout) and ``asyncio.sleep`` for the
backoff. URLs are only ever logged masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from spendtrace.server.alerts.delivery import (
    NO_HTTPX,
    Attempt,
    RetryPolicy,
    attempt_error,
    delivery_steps,
    mask_httpx_log,
    pagerduty_body,
    pending_events,
    slack_body,
    target_check,
)
from spendtrace.server.model.alerts import AlertEvent, AlertRule
from spendtrace.server.store.base import AlertStore, open_alert_store

__all__ = ["WebhookDispatcher", "pagerduty_body", "slack_body"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class WebhookDispatcher:
    """Queue of fired events; one task publishes them to Kafka and POSTs them with retries.

    ``db_path`` is the store's URL or a bare SQLite path; its ``AlertStore`` is used from one thread.
    """

    def __init__(
        self,
        db_path: str,
        *,
        bootstrap: str | None = None,
        topic: str = "spendtrace.alerts",
        publish: Callable[[AlertEvent], Awaitable[None]] | None = None,
        timeout: float = 5.0,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        queue_size: int = 1000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.db_path = db_path
        self.bootstrap = bootstrap
        self.topic = topic
        self.policy = RetryPolicy(timeout=timeout, max_attempts=max(1, max_attempts), backoff=backoff,
                                  max_backoff=max_backoff)
        self.clock = clock
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._publish = publish
        self._producer: Any = None
        self._queue: asyncio.Queue[tuple[AlertEvent, AlertRule]] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="spendtrace-webhooks")
        self._store: AlertStore | None = None

    # -- intake (called from the evaluator; never waits) ---------------------------------------------

    def submit(self, event: AlertEvent, rule: AlertRule) -> bool:
        """Queue an event for delivery; False (and the event marked failed) when the queue is full."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="spendtrace-webhooks")
        try:
            self._queue.put_nowait((event, rule))
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("alert delivery queue full; event %d of rule %r not delivered", event.id, rule.name)
            self._pool.submit(self._record, event.id, 0, None, "delivery queue full", "failed")
            return False

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every queued event has been handled (up to ``timeout`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Give queued events ``timeout`` seconds, then stop the task and close clients."""
        if self._task is not None:
            await self.drain(timeout)
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        if self._store is not None:
            store, self._store = self._store, None
            await self._db(store.close)
        self._pool.shutdown(wait=False)

    # -- the delivery task ----------------------------------------------------------------------

    async def recover(self, older_than_s: float = 300.0) -> int:
        """Queue the events a crashed worker left ``pending`` (fired over ``older_than_s`` ago); returns how many.

        Safe with several workers: each event is claimed (``pending`` -> ``sending``) before delivery.
        """
        found = await self._db(self._pending, time.time_ns() - int(older_than_s * 1e9))
        return sum(self.submit(event, rule) for event, rule in found)

    async def _run(self) -> None:
        while True:
            event, rule = await self._queue.get()
            try:
                if not await self._db(self._claim, event.id):
                    continue  # another worker's dispatcher has it
                await self._publish_event(event)
                await self.deliver(event, rule)
            except Exception:  # one event's failure must not end the task
                log.exception("delivering alert event %d failed", event.id)
            finally:
                self._queue.task_done()

    async def _publish_event(self, event: AlertEvent) -> None:
        try:
            if self._publish is not None:
                await self._publish(event)
            elif self.bootstrap:
                if self._producer is None:
                    from aiokafka import AIOKafkaProducer

                    producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                                client_id="spendtrace-alerts")
                    await producer.start()
                    self._producer = producer
                await self._producer.send_and_wait(self.topic, event.to_json(), key=event.rule_name.encode())
        except Exception as exc:  # the event is in the database; the topic is a convenience feed
            log.warning("publishing alert event %d to %s failed: %s", event.id, self.topic, exc)

    async def deliver(self, event: AlertEvent, rule: AlertRule) -> str:
        """POST the event to the rule's webhook with retries; return the final delivery status."""
        steps = delivery_steps(event, rule, self.policy)
        reply: Any = None
        while True:
            try:
                kind, arg, extra = steps.send(reply)
            except StopIteration as stop:
                final = str(stop.value)
                break
            reply = None
            if kind == "post":
                reply = await self._post(arg, extra, rule)
            elif kind == "record":
                await self._db(self._record, event.id, *arg)
            else:
                await asyncio.sleep(arg)
        if final == "delivered":
            self.delivered += 1
        elif final == "failed":
            self.failed += 1
        return final

    async def _post(self, url: str, body: Any, rule: AlertRule) -> Attempt:
        refused = await self._db(target_check, url, rule)  # resolves the name (blocking): our thread, not ingest's
        if refused is not None:
            return refused
        try:
            client = await self._http()
        except ImportError:
            return Attempt(None, NO_HTTPX, retry=False)
        try:
            resp = await client.post(url, json=body)
            return Attempt(int(resp.status_code))
        except Exception as exc:  # timeouts, refused connections, TLS errors ...
            return Attempt(None, attempt_error(exc, url))

    async def _http(self) -> Any:
        if self._client is None:
            import httpx

            mask_httpx_log()
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.policy.timeout), follow_redirects=False,
                                             headers={"User-Agent": "spendtrace-alerts"})
        return self._client

    # -- bookkeeping in the store, on one thread of its own ------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _connect(self) -> AlertStore:
        if self._store is None:
            self._store = open_alert_store(self.db_path)
        return self._store

    def _claim(self, event_id: int) -> bool:
        return self._connect().claim_delivery(event_id)

    def _pending(self, before_ns: int) -> list[tuple[AlertEvent, AlertRule]]:
        return pending_events(self._connect(), before_ns)

    def _record(self, event_id: int, attempt: int | None, status: int | None, error: str | None,
                final: str | None) -> None:
        self._connect().record_delivery(event_id, attempt=attempt, status=status, error=error, final=final,
                                        at_ns=self.clock())
