"""Public alert names: rules for features, tenants, endpoints or total spend, budgets and rate alerts.

``set_alert`` / ``set_budget`` / ``set_rate_alert`` store a rule in the database; the workers (or,
without Kafka, the app's exporter thread) evaluate the rules. Defined in ``spendtrace.server.alerts``.
"""

from __future__ import annotations

from spendtrace.server.alerts.rules import (
    BUDGET_PERIODS,
    AlertRule,
    list_alerts,
    mask_url,
    remove_alert,
    set_alert,
    set_budget,
    set_rate_alert,
    validate_webhook,
)

__all__ = [
    "BUDGET_PERIODS",
    "AlertRule",
    "list_alerts",
    "mask_url",
    "remove_alert",
    "set_alert",
    "set_budget",
    "set_rate_alert",
    "validate_webhook",
]
