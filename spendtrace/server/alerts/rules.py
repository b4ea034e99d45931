"""Spend alert rules: thresholds over rolling windows, period budgets and spike (rate) rules.

Rules live in the ``alert_rules`` table, so any process (an app, the CLI, a notebook) can add
one and every consumer worker picks it up on its next batch without a restart. This module
only defines and stores rules. They are evaluated after each committed batch by whoever writes
it: the consumer workers (``consumers.alerting``, ``consumers.webhooks``) with Kafka, or the
app's own local SQLite exporter without it (``spendtrace.server.alerts.local``); both use the same
evaluation (``spendtrace.server.alerts.evaluate``) and webhook delivery (``spendtrace.server.alerts.delivery``),
and the store's ``claim_firing`` decides each firing atomically, so a rule fires once per cooldown
whoever evaluates. Rules are kept through the storage interface's ``AlertStore``
(``spendtrace.server.store.base.open_alert_store``); money is stored as integer nano-dollars.

Rule kinds (``AlertRule.kind``):

- ``threshold``: spend of the scope over the last ``window_minutes`` (whole minute buckets,
  the current one included) is above ``threshold``; fires at most once per ``cooldown_minutes``.
- ``budget``: spend since the start of the current UTC period (day, ISO week from Monday, or
  calendar month) reached each chosen percentage of ``threshold``; each percentage fires once
  per period, and a new period starts clean.
- ``rate``: spend over the last 60 minutes is at least ``factor`` times the trailing average
  for that hour of day: the mean over the previous ``lookback_days`` days of the hourly
  rollup bucket at the same clock hour (days with no data count as zero). It needs a
  non-zero baseline and at least ``min_spend`` in the last hour, so a first-ever cent or a
  brand-new feature does not page anyone (threshold rules cover those).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from spendtrace.server.alerts.targets import allow_private_from_env, target_refusal
from spendtrace.server.model.alerts import NANO, AlertRule, mask_url
from spendtrace.server.store.base import AlertStore, open_alert_store
from spendtrace.settings import default_db_path

__all__ = [
    "BUDGET_PERIODS",
    "NANO",
    "AlertRule",
    "list_alerts",
    "mask_url",
    "open_rules_store",
    "remove_alert",
    "set_alert",
    "set_budget",
    "set_rate_alert",
    "validate_webhook",
]

BUDGET_PERIODS = ("day", "week", "month")
_MAX_USD = 1e9  # nano-dollars stay well inside 64 bits
_MAX_MINUTES = 60 * 24 * 366  # windows and cooldowns: at most a year
WebhookFormat = Literal["slack", "pagerduty"]


# --- webhook URLs -------------------------------------------------------------------------


def validate_webhook(url: str, *, allow_private: bool = False) -> str:
    """Return ``url`` if it is an absolute http(s) URL to a host webhooks may reach; raise ``ValueError`` otherwise.

    Link-local and cloud metadata hosts are always refused; loopback and private ones unless
    ``allow_private`` (see ``spendtrace.server.alerts.targets``). Every rule's webhook goes through here.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("webhook URL must be a non-empty string")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"webhook URL must use http or https, not {parts.scheme or 'no scheme'!r}")
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
    except ValueError as exc:
        raise ValueError(f"webhook URL is malformed: {exc}") from None
    if not host:
        raise ValueError("webhook URL has no host")
    reason = target_refusal(url, allow_private=allow_private)
    if reason is not None:
        raise ValueError(f"webhook target refused: {reason}")
    return url.strip()


# --- storage ---------------------------------------------------------------------------------


def open_rules_store(db_path: str | os.PathLike[str] | None = None) -> AlertStore:
    """The ``AlertStore`` at ``db_path`` (a store URL or a SQLite path; default: the process's database)."""
    return open_alert_store(db_path if db_path is not None else default_db_path())


def _scope_of(
    feature: str | None, user_id: str | None, endpoint: str | None, total: bool
) -> tuple[str, str]:
    chosen = [(s, v) for s, v in (("feature", feature), ("user", user_id), ("endpoint", endpoint)) if v is not None]
    if total:
        if chosen:
            raise ValueError("total=True cannot be combined with feature, user_id or endpoint")
        return "total", ""
    if len(chosen) != 1:
        raise ValueError("give exactly one of feature=, user_id=, endpoint= (or total=True)")
    scope, value = chosen[0]
    if not value:
        raise ValueError(f"{scope} must not be empty")
    return scope, value


def _to_nano(usd: float, what: str) -> int:
    try:
        value = float(usd)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of USD, got {usd!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{what} must be a positive number of USD, got {usd!r}")
    if value > _MAX_USD:
        raise ValueError(f"{what} must be at most {_MAX_USD:,.0f} USD, got {usd!r}")
    return round(value * NANO)


def _check_delivery(
    webhook: str | None, webhook_format: str, routing_key: str | None, params: dict[str, Any], allow_private: bool
) -> str | None:
    if webhook_format not in ("slack", "pagerduty"):
        raise ValueError(f"webhook_format must be 'slack' or 'pagerduty', not {webhook_format!r}")
    if webhook_format == "pagerduty":
        if not routing_key:
            raise ValueError("a PagerDuty webhook needs routing_key=")
        params["routing_key"] = routing_key
        webhook = webhook or "https://events.pagerduty.com/v2/enqueue"
    if webhook is None:
        return None
    allow = allow_private or allow_private_from_env()
    hook = validate_webhook(webhook, allow_private=allow)
    if allow:
        params["allow_private_webhook"] = True  # delivery re-checks the resolved address with the same allowance
    return hook


def _upsert(
    db_path: str | os.PathLike[str] | None,
    *,
    name: str,
    kind: str,
    scope: str,
    scope_value: str,
    threshold_nano: int,
    window_minutes: int | None,
    cooldown_minutes: int,
    params: dict[str, Any],
    webhook: str | None,
    webhook_format: str,
    now_ns: int | None,
) -> AlertRule:
    if not name or len(name) > 200:
        raise ValueError("alert name must be 1..200 characters")
    if not 0 <= cooldown_minutes <= _MAX_MINUTES:
        raise ValueError(f"cooldown_minutes must be in 0..{_MAX_MINUTES}, got {cooldown_minutes}")
    store = open_rules_store(db_path)
    try:
        return store.save_rule(
            name=name, kind=kind, scope=scope, scope_value=scope_value, threshold_nano=threshold_nano,
            window_minutes=window_minutes, cooldown_minutes=cooldown_minutes, params=params, webhook=webhook,
            webhook_format=webhook_format, now_ns=time.time_ns() if now_ns is None else now_ns,
        )
    finally:
        store.close()


def set_alert(
    feature: str | None = None,
    threshold: float | None = None,
    window_hours: float = 24,
    webhook: str | None = None,
    cooldown_minutes: int = 60,
    *,
    name: str | None = None,
    user_id: str | None = None,
    endpoint: str | None = None,
    total: bool = False,
    db_path: str | os.PathLike[str] | None = None,
    webhook_format: WebhookFormat = "slack",
    routing_key: str | None = None,
    allow_private: bool = False,
    now_ns: int | None = None,
) -> AlertRule:
    """Add (or replace, by ``name``) a rule that fires when rolling spend goes over ``threshold`` USD.

    The scope is one of ``feature``, ``user_id`` (a tenant), ``endpoint``, or ``total=True``.
    ``window_hours`` is the rolling window (whole minutes, at least one); the rule fires at most
    once per ``cooldown_minutes`` however many processes evaluate it: the consumer workers with
    Kafka, or, without Kafka, the app's own local-store exporter after each batch it writes.
    ``webhook`` is any http(s) URL that takes a POST: Slack-compatible ``{"text": ...}`` by
    default, or PagerDuty Events v2 with ``webhook_format="pagerduty"`` and a ``routing_key``.
    Without a webhook the event is still recorded (and, by the workers, published to the alerts
    topic). The webhook may not point at link-local or cloud metadata addresses, nor at loopback or
    private ones unless ``allow_private=True`` (or ``SPENDTRACE_ALLOW_PRIVATE_WEBHOOKS=1``); a DNS
    name is checked again, resolved, at each delivery. Raises ``ValueError`` on a bad argument.
    """
    scope, value = _scope_of(feature, user_id, endpoint, total)
    if threshold is None:
        raise ValueError("threshold= (USD) is required")
    nano = _to_nano(threshold, "threshold")
    hours = float(window_hours)
    if not math.isfinite(hours) or not 1 <= round(hours * 60) <= _MAX_MINUTES:
        raise ValueError(f"window_hours must cover one minute to a year, got {window_hours!r}")
    window = round(hours * 60)
    params: dict[str, Any] = {}
    hook = _check_delivery(webhook, webhook_format, routing_key, params, allow_private)
    rule_name = name or f"{scope}:{value or '*'}>{threshold:g}/{window_hours:g}h"
    return _upsert(
        db_path, name=rule_name, kind="threshold", scope=scope, scope_value=value, threshold_nano=nano,
        window_minutes=window, cooldown_minutes=int(cooldown_minutes), params=params, webhook=hook,
        webhook_format=webhook_format, now_ns=now_ns,
    )


def set_budget(
    amount: float,
    period: Literal["day", "week", "month"] = "month",
    *,
    feature: str | None = None,
    user_id: str | None = None,
    endpoint: str | None = None,
    total: bool = False,
    percentages: tuple[float, ...] | list[float] = (50, 80, 100),
    webhook: str | None = None,
    name: str | None = None,
    db_path: str | os.PathLike[str] | None = None,
    webhook_format: WebhookFormat = "slack",
    routing_key: str | None = None,
    allow_private: bool = False,
    now_ns: int | None = None,
) -> AlertRule:
    """Add (or replace) a budget of ``amount`` USD per UTC ``period`` with warnings at ``percentages``.

    Each percentage fires once per period (when spend since the period's start reaches it);
    the next period starts clean. Weeks start on Monday 00:00 UTC.
    """
    scope, value = _scope_of(feature, user_id, endpoint, total)
    if period not in BUDGET_PERIODS:
        raise ValueError(f"period must be one of {BUDGET_PERIODS}, not {period!r}")
    pcts = sorted({float(p) for p in percentages})
    if not pcts or any(not 0 < p <= 1000 for p in pcts):
        raise ValueError("percentages must be numbers in (0, 1000]")
    params: dict[str, Any] = {"period": period, "percentages": [int(p) if p.is_integer() else p for p in pcts]}
    hook = _check_delivery(webhook, webhook_format, routing_key, params, allow_private)
    rule_name = name or f"budget:{scope}:{value or '*'}:{amount:g}/{period}"
    return _upsert(
        db_path, name=rule_name, kind="budget", scope=scope, scope_value=value,
        threshold_nano=_to_nano(amount, "amount"), window_minutes=None, cooldown_minutes=0, params=params,
        webhook=hook, webhook_format=webhook_format, now_ns=now_ns,
    )


def set_rate_alert(
    factor: float = 3.0,
    *,
    feature: str | None = None,
    user_id: str | None = None,
    endpoint: str | None = None,
    total: bool = False,
    min_spend: float = 1.0,
    lookback_days: int = 7,
    cooldown_minutes: int = 60,
    webhook: str | None = None,
    name: str | None = None,
    db_path: str | os.PathLike[str] | None = None,
    webhook_format: WebhookFormat = "slack",
    routing_key: str | None = None,
    allow_private: bool = False,
    now_ns: int | None = None,
) -> AlertRule:
    """Add (or replace) a spike rule: last hour's spend >= ``factor`` x the trailing average for that hour.

    ``min_spend`` (USD) is the least last-hour spend worth an alert; see the module docstring
    for the exact baseline.
    """
    scope, value = _scope_of(feature, user_id, endpoint, total)
    if not 1.0 < float(factor) <= 1e6:
        raise ValueError(f"factor must be > 1 and at most 1e6, got {factor!r}")
    if not 1 <= int(lookback_days) <= 60:
        raise ValueError("lookback_days must be in 1..60")
    params: dict[str, Any] = {
        "factor": float(factor),
        "lookback_days": int(lookback_days),
        "min_spend_nano": _to_nano(min_spend, "min_spend"),
    }
    hook = _check_delivery(webhook, webhook_format, routing_key, params, allow_private)
    rule_name = name or f"rate:{scope}:{value or '*'}:x{factor:g}"
    return _upsert(
        db_path, name=rule_name, kind="rate", scope=scope, scope_value=value,
        threshold_nano=params["min_spend_nano"], window_minutes=60, cooldown_minutes=int(cooldown_minutes),
        params=params, webhook=hook, webhook_format=webhook_format, now_ns=now_ns,
    )


def list_alerts(db_path: str | os.PathLike[str] | None = None) -> list[AlertRule]:
    """Every stored rule, enabled or not, ordered by id (print ``rule.masked_webhook``, not ``webhook``)."""
    store = open_rules_store(db_path)
    try:
        return store.list_rules(enabled_only=False)
    finally:
        store.close()


def remove_alert(name_or_id: str | int, db_path: str | os.PathLike[str] | None = None) -> bool:
    """Delete a rule (by name, or by id) and its firing state; return whether it existed.

    Past events stay in the store as history.
    """
    store = open_rules_store(db_path)
    try:
        return store.remove_rule(name_or_id)
    finally:
        store.close()
