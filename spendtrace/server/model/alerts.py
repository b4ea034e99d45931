"""Alert types the ``AlertStore`` takes and returns: a stored rule, a fired event, and URL masking.

Below the storage interface so the store, the evaluator, the delivery code and the apps share one
definition of each. Money is integer nano-dollars; webhook URLs are secrets, so everything that
prints or serialises a rule masks them (``mask_url``) unless asked not to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

from spendtrace.server.model.money import minutes_text, usd_text

__all__ = ["NANO", "AlertEvent", "AlertRule", "Grain", "Scope", "mask_url", "scope_label", "scope_text"]

NANO = 1_000_000_000
#: What a rule watches: one feature, one tenant (``user``), one endpoint, or total spend.
Scope = Literal["feature", "user", "endpoint", "total"]
#: A rollup grain: buckets of one minute, hour or day.
Grain = Literal["minute", "hour", "day"]
_SCOPE_COLUMNS = {"feature": "feature", "user": "user_id", "endpoint": "endpoint"}
#: The word people read for a stored scope kind: the ``user`` dimension is shown as the tenant.
_SCOPE_LABELS = {"user": "tenant"}


def scope_label(scope: str) -> str:
    """The scope kind as people read it: ``tenant`` for the stored ``user``, the others as stored."""
    return _SCOPE_LABELS.get(scope, scope)


def scope_text(scope: str, value: str) -> str:
    """What a rule watches, for messages and listings: ``tenant 'acme'``, ``feature 'search'``, ``total spend``."""
    return "total spend" if scope == "total" else f"{scope_label(scope)} {value!r}"


def _mask_token(token: str) -> str:
    if len(token) <= 4:
        return "***"
    return token[:2] + "***"


def mask_url(url: str) -> str:
    """Hide what may be a secret in a webhook URL: credentials, query values, and path tokens.

    The scheme, host and the first path segment stay readable so a person can still tell
    hooks apart (``https://hooks.slack.com/services/T0***/B0***/xy***``).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username or parts.password:
        host = f"***@{host}"
    segments = parts.path.split("/")
    masked_path = "/".join(
        seg if i <= 1 or len(seg) <= 3 else _mask_token(seg) for i, seg in enumerate(segments)
    )
    query = "&".join(
        (kv.split("=", 1)[0] + "=***") if "=" in kv else _mask_token(kv) for kv in parts.query.split("&") if kv
    )
    return urlunsplit(SplitResult(parts.scheme, host, masked_path, query, ""))


@dataclass(frozen=True)
class AlertRule:
    """One stored alert rule (``spendtrace.server.alerts.rules`` says what each kind means).

    ``updated_ns`` is the rule's version: the store raises it on every change, and a firing is
    only recorded for the version it was evaluated against.
    """

    id: int
    name: str
    kind: str
    scope: str
    scope_value: str
    threshold_nano: int | None
    window_minutes: int | None
    cooldown_minutes: int
    params: Mapping[str, Any] = field(default_factory=dict)
    webhook: str | None = None
    webhook_format: str = "slack"
    enabled: bool = True
    created_ns: int = 0
    updated_ns: int = 0

    @property
    def threshold(self) -> float | None:
        """The threshold (or budget amount) in USD."""
        return None if self.threshold_nano is None else self.threshold_nano / NANO

    @property
    def scope_column(self) -> str | None:
        """The span field the scope filters on (``None`` for total spend)."""
        return _SCOPE_COLUMNS.get(self.scope)

    @property
    def routing_key(self) -> str | None:
        """The PagerDuty routing key, for ``webhook_format == "pagerduty"``."""
        key = self.params.get("routing_key")
        return str(key) if key else None

    @property
    def masked_webhook(self) -> str:
        """The webhook URL with its secrets hidden, safe to print or log."""
        return mask_url(self.webhook) if self.webhook else ""

    def describe(self) -> str:
        """One human line: what the rule watches and when it fires (no secrets)."""
        who = scope_text(self.scope, self.scope_value)
        usd = usd_text(self.threshold_nano) if self.threshold_nano is not None else "?"
        if self.kind == "budget":
            pcts = "/".join(str(p) for p in self.params.get("percentages", []))
            return f"{who}: {self.params.get('period')} budget {usd}, warn at {pcts}%"
        if self.kind == "rate":
            return (
                f"{who}: last hour >= {self.params.get('factor')}x the {self.params.get('lookback_days', 7)}-day "
                f"average for that hour (min {usd_text(int(self.params.get('min_spend_nano', 0)))})"
            )
        window, cooldown = minutes_text(self.window_minutes), minutes_text(self.cooldown_minutes)
        return f"{who}: > {usd} over {window}, cooldown {cooldown}"

    def to_dict(self, *, mask: bool = True) -> dict[str, Any]:
        """A JSON-ready view; the webhook is masked unless ``mask=False``."""
        params = dict(self.params)
        if mask and "routing_key" in params:
            params["routing_key"] = _mask_token(str(params["routing_key"]))
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "scope": self.scope,
            "scope_value": self.scope_value,
            "threshold_usd": self.threshold,
            "window_minutes": self.window_minutes,
            "cooldown_minutes": self.cooldown_minutes,
            "params": params,
            "webhook": self.masked_webhook if mask else self.webhook,
            "webhook_format": self.webhook_format,
            "enabled": self.enabled,
            "description": self.describe(),
        }


@dataclass(frozen=True)
class AlertEvent:
    """One fired alert, as the store records it and the alerts topic carries it.

    ``kind`` and ``state_key`` are known when the event fires (the store does not keep them: an
    event read back has them empty, or ``kind`` from its rule). ``delivery`` is the webhook
    status as last read from the store (``pending``, ``sending``, ``delivered``, ``failed``,
    ``none``), ``None`` on an event just fired; it changes after the firing, so ``to_dict`` (the
    alerts topic's message, a PagerDuty event's details) leaves it out.
    """

    id: int
    rule_id: int
    rule_name: str
    kind: str
    fired_ns: int
    scope: str
    scope_value: str
    value_nano: int
    threshold_nano: int | None
    state_key: str
    message: str
    delivery: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the firing with dollar amounts beside the nano-dollar ones (no ``delivery``)."""
        d = asdict(self)
        del d["delivery"]
        d["value_usd"] = self.value_nano / NANO
        d["threshold_usd"] = None if self.threshold_nano is None else self.threshold_nano / NANO
        return d

    def to_json(self) -> bytes:
        """The ``spendtrace.alerts`` message value."""
        return json.dumps(self.to_dict(), sort_keys=True).encode()
