"""Webhook delivery of fired alerts, shared by the workers (async) and the local exporter (a thread).

The pure parts live here: the request bodies (Slack-style ``{"text": ...}`` and PagerDuty
Events v2), the retry policy, and ``delivery_steps``, a generator that plans one event's
delivery as operations (POST, record an attempt, sleep) for a driver to run with whatever
HTTP client and clock it has. The bookkeeping (claim an event ``pending`` -> ``sending``, one
record per attempt, the event's final ``delivery``) is the ``AlertStore``'s ``claim_delivery`` and
``record_delivery``; ``pending_events`` pairs the events a stopped process never sent with their
rules. URLs are only ever logged masked; httpx is imported by the drivers, lazily.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from spendtrace.server.alerts.targets import allow_private_from_env, resolved_refusal
from spendtrace.server.model.alerts import AlertEvent, AlertRule, mask_url
from spendtrace.server.store.base import AlertStore

__all__ = [
    "NO_HTTPX",
    "Attempt",
    "DeliveryOp",
    "RetryPolicy",
    "attempt_error",
    "delivery_steps",
    "mask_httpx_log",
    "pagerduty_body",
    "pending_events",
    "run_sync",
    "slack_body",
    "target_check",
    "webhook_body",
]

log = logging.getLogger("spendtrace.alerts")

#: The reason recorded when a webhook is due but httpx is not installed.
NO_HTTPX = "webhook delivery needs httpx: pip install 'spendtrace[alerts]'"


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


def webhook_body(event: AlertEvent, rule: AlertRule) -> dict[str, Any]:
    """The JSON body the rule's webhook format calls for."""
    if rule.webhook_format == "pagerduty":
        return pagerduty_body(event, rule.routing_key or "")
    return slack_body(event)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Per-attempt timeout (seconds), attempts, and exponential backoff between them."""

    timeout: float = 5.0
    max_attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST came to: the HTTP status, or an error; ``retry=False`` when trying again cannot help."""

    status: int | None
    error: str | None = None
    retry: bool = True


def attempt_error(exc: BaseException, url: str) -> str:
    """A short description of a failed POST with the URL masked (timeouts, refused connections, TLS ...)."""
    return f"{type(exc).__name__}: {exc}".replace(url, mask_url(url))[:500]


def target_check(url: str, rule: AlertRule) -> Attempt | None:
    """Before each POST: a refused, final ``Attempt`` when ``url`` resolves to where webhooks may not go.

    The rule was validated when it was saved; this re-checks what its DNS name resolves to now,
    with the rule's ``allow_private_webhook`` (or ``SPENDTRACE_ALLOW_PRIVATE_WEBHOOKS`` here). Blocking (DNS).
    """
    allow = bool(rule.params.get("allow_private_webhook")) or allow_private_from_env()
    reason = resolved_refusal(url, allow_private=allow)
    if reason is None:
        return None
    log.error("webhook %s of rule %r refused, not sent: %s", mask_url(url), rule.name, reason)
    return Attempt(None, f"webhook target refused: {reason}", retry=False)


#: ``("post", url, body)`` -> ``Attempt``; ``("record", (attempt, status, error, final))`` -> None;
#: ``("sleep", seconds)`` -> None
DeliveryOp = tuple[str, Any, Any]


def delivery_steps(event: AlertEvent, rule: AlertRule, policy: RetryPolicy) -> Generator[DeliveryOp, Any, str]:
    """Plan one event's delivery; returns the final status: ``delivered``, ``failed`` or ``none`` (no webhook).

    Every attempt is recorded with its status or error; the last record carries the final status.
    """
    if not rule.webhook:
        yield ("record", (None, None, None, "none"), None)
        return "none"
    body = webhook_body(event, rule)
    masked = mask_url(rule.webhook)
    attempts = max(1, policy.max_attempts)
    for attempt in range(1, attempts + 1):
        result: Attempt = yield ("post", rule.webhook, body)
        status, error = result.status, result.error
        if error is None and status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        last = attempt == attempts or not result.retry
        final = "delivered" if error is None else ("failed" if last else None)
        yield ("record", (attempt, status, error, final), None)
        if error is None:
            return "delivered"
        log.warning("webhook %s attempt %d/%d for event %d: %s", masked, attempt, attempts, event.id, error)
        if last:
            break
        yield ("sleep", policy.delay(attempt), None)
    return "failed"


# --- events a stopped process never sent ------------------------------------------------------------


def pending_events(store: AlertStore, before_ns: int) -> list[tuple[AlertEvent, AlertRule]]:
    """Events still ``pending`` that fired before ``before_ns`` (a crashed process never sent them), with rules.

    An event whose rule is gone is paired with a stand-in rule without a webhook: recorded, delivered nowhere.
    """
    events = store.pending_events(before_ns)
    if not events:
        return []
    rules = {r.id: r for r in store.list_rules(enabled_only=False)}
    out: list[tuple[AlertEvent, AlertRule]] = []
    for event in events:
        rule = rules.get(event.rule_id)
        if rule is None or rule.name != event.rule_name:
            rule = AlertRule(id=event.rule_id, name=event.rule_name, kind="threshold", scope=event.scope,
                             scope_value=event.scope_value, threshold_nano=event.threshold_nano,
                             window_minutes=None, cooldown_minutes=0)
        out.append((dataclasses.replace(event, kind=rule.kind), rule))
    return out


# --- httpx's own log lines ----------------------------------------------------------------------


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


def mask_httpx_log() -> None:
    """Install the URL-masking filter on the ``httpx`` logger (idempotent)."""
    httpx_log = logging.getLogger("httpx")
    if _mask_filter not in httpx_log.filters:
        httpx_log.addFilter(_mask_filter)


def run_sync(steps: Generator[DeliveryOp, Any, str], post: Callable[[str, Any], Attempt],
             record: Callable[[int | None, int | None, str | None, str | None], None],
             sleep: Callable[[float], Any] = time.sleep) -> str:
    """Drive ``delivery_steps`` with blocking callables; returns the final status."""
    reply: Any = None
    while True:
        try:
            kind, arg, extra = steps.send(reply)
        except StopIteration as stop:
            return str(stop.value)
        reply = None
        if kind == "post":
            reply = post(arg, extra)
        elif kind == "record":
            record(*arg)
        else:
            sleep(arg)
