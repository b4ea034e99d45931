"""Alert delivery: publish each fired event to the alerts topic and POST it to the rule's webhook.

Runs in a task of its own, fed by a bounded queue, so a slow or dead webhook never holds up the
consume loop. Each event is claimed first (``delivery`` ``pending`` -> ``sending``), so events a
crashed worker left pending can be picked up by ``recover()`` in any worker without double sends.
Each HTTP attempt is recorded in ``alert_deliveries`` (status or error) and the event's
``delivery`` ends as ``delivered``, ``failed`` or ``none`` (no webhook). Uses ``httpx``
(async client, per-attempt timeout) with exponential backoff between attempts. URLs are only
ever logged masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from consumers.alerting import AlertEvent
from spendtrace.alerts import AlertRule, load_rules, mask_url, open_db

__all__ = ["WebhookDispatcher", "pagerduty_body", "slack_body"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class _MaskUrls(logging.Filter):
    """Mask URLs in httpx's own request log lines (it logs each request's full URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_url(str(a)) if type(a).__name__ == "URL" or (isinstance(a, str) and "://" in a) else a
                for a in record.args
            )
        return True


_mask_filter = _MaskUrls()


def slack_body(event: AlertEvent) -> dict[str, Any]:
    """A Slack incoming-webhook body, ``{"text": ...}`` (also what most "any HTTP POST" receivers take)."""
    return {"text": event.message}


def pagerduty_body(event: AlertEvent, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 ``trigger``; the dedup key folds repeats of one firing together."""
    severity = "critical" if event.kind == "budget" and event.state_key.endswith(":100") else "warning"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": f"spendtrace-{event.rule_id}-{event.state_key or 'x'}-{event.fired_ns}",
        "payload": {
            "summary": event.message[:1024],
            "severity": severity,
            "source": "spendtrace",
            "component": event.scope_value or "total",
            "group": event.scope,
            "class": event.kind,
            "custom_details": event.to_dict(),
        },
    }


class WebhookDispatcher:
    """Queue of fired events; one task publishes them to Kafka and POSTs them with retries."""

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
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
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
        self._conn: sqlite3.Connection | None = None

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
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._db(conn.close)
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
        if not rule.webhook:
            await self._db(self._record, event.id, None, None, None, "none")
            return "none"
        if rule.webhook_format == "pagerduty":
            body = pagerduty_body(event, rule.routing_key or "")
        else:
            body = slack_body(event)
        client = await self._http()
        masked = mask_url(rule.webhook)
        for attempt in range(1, self.max_attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                resp = await client.post(rule.webhook, json=body)
                status = resp.status_code
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except Exception as exc:  # timeouts, refused connections, TLS errors ...
                error = f"{type(exc).__name__}: {exc}".replace(rule.webhook, masked)[:500]
            ok = error is None
            final = "delivered" if ok else ("failed" if attempt == self.max_attempts else None)
            await self._db(self._record, event.id, attempt, status, error, final)
            if ok:
                self.delivered += 1
                return "delivered"
            log.warning("webhook %s attempt %d/%d for event %d: %s", masked, attempt, self.max_attempts,
                        event.id, error)
            if attempt < self.max_attempts:
                await asyncio.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
        self.failed += 1
        return "failed"

    async def _http(self) -> Any:
        if self._client is None:
            try:
                import httpx
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError("webhook delivery needs httpx: pip install 'spendtrace[consumer]'") from exc
            httpx_log = logging.getLogger("httpx")
            if _mask_filter not in httpx_log.filters:
                httpx_log.addFilter(_mask_filter)
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), follow_redirects=False,
                                             headers={"User-Agent": "spendtrace-alerts"})
        return self._client

    # -- bookkeeping in SQLite, on one thread of its own ------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_db(self.db_path)
        return self._conn

    def _claim(self, event_id: int) -> bool:
        cur = self._connect().execute(
            "UPDATE alert_events SET delivery = 'sending' WHERE id = ? AND delivery = 'pending'", (event_id,)
        )
        return cur.rowcount == 1

    def _pending(self, before_ns: int) -> list[tuple[AlertEvent, AlertRule]]:
        conn = self._connect()
        rules = {r.id: r for r in load_rules(conn, enabled_only=False)}
        out: list[tuple[AlertEvent, AlertRule]] = []
        for row in conn.execute(
            "SELECT id, rule_id, rule_name, fired_ns, scope, scope_value, value_nano, threshold_nano, message"
            " FROM alert_events WHERE delivery = 'pending' AND fired_ns < ? ORDER BY id",
            (before_ns,),
        ).fetchall():
            rule = rules.get(int(row[1]))
            if rule is None or rule.name != row[2]:  # the rule is gone: record the event, deliver nowhere
                rule = AlertRule(id=int(row[1]), name=row[2], kind="threshold", scope=row[4], scope_value=row[5],
                                 threshold_nano=row[7], window_minutes=None, cooldown_minutes=0)
            out.append((AlertEvent(int(row[0]), int(row[1]), row[2], rule.kind, int(row[3]), row[4], row[5],
                                   int(row[6]), row[7], "", row[8]), rule))
        return out

    def _record(self, event_id: int, attempt: int | None, status: int | None, error: str | None,
                final: str | None) -> None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if attempt is not None:
                conn.execute(
                    "INSERT INTO alert_deliveries (event_id, attempt, at_ns, status, error) VALUES (?, ?, ?, ?, ?)",
                    (event_id, attempt, self.clock(), status, error),
                )
            if final is not None:
                conn.execute("UPDATE alert_events SET delivery = ? WHERE id = ?", (final, event_id))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
