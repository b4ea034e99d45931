"""spendtrace: which features, tenants and requests spend your cloud and LLM money.

This module is the public API: every name in ``__all__`` may be imported from here. The
recording API is imported eagerly (it is the hot path and is small); storage, pricing,
reconciliation and alerts load on first use, so ``import spendtrace`` stays cheap for apps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from spendtrace.errors import (
    ConfigError,
    PricingError,
    SchemaVersionError,
    SpendtraceError,
    StorageError,
)
from spendtrace.schema import UNATTRIBUTED, Span, UsageItem

__version__ = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ below.
_LAZY: dict[str, str] = {
    # recording (spendtrace/_scope.py, spendtrace/_sampling.py)
    "add_api_call": "spendtrace._scope",
    "cost_track": "spendtrace._scope",
    "create_task_with_context": "spendtrace._scope",
    "current_request_id": "spendtrace._scope",
    "current_span_id": "spendtrace._scope",
    "run_in_context": "spendtrace._scope",
    "track": "spendtrace._scope",
    "track_request": "spendtrace._scope",
    "wrap_with_context": "spendtrace._scope",
    "get_global_sample_rate": "spendtrace._sampling",
    "set_global_sample_rate": "spendtrace._sampling",
    # export (spendtrace/export/, spendtrace/_config.py)
    "CircuitBreaker": "spendtrace.export",
    "InMemoryExporter": "spendtrace.export",
    "KafkaExporter": "spendtrace.export",
    "LocalStoreExporter": "spendtrace.export",
    "set_circuit_breaker": "spendtrace.export",
    "ExporterStats": "spendtrace._config",
    "FlushResult": "spendtrace._config",
    "configure": "spendtrace._config",
    "flush": "spendtrace._config",
    "get_stats": "spendtrace._config",
    "shutdown": "spendtrace._config",
    # auto-instrumentation (spendtrace/instrument/)
    "auto_instrument": "spendtrace.instrument",
    "uninstrument": "spendtrace.instrument",
    # pricing (spendtrace/pricing/)
    "AWSCostModel": "spendtrace.pricing",
    "PriceBook": "spendtrace.pricing",
    "PriceEntry": "spendtrace.pricing",
    "get_tracker": "spendtrace.pricing",
    # storage and queries (spendtrace/storage/)
    "SQLiteStorage": "spendtrace.storage",
    "get_cost_trend": "spendtrace.storage",
    "get_feature_cost_breakdown": "spendtrace.storage",
    "get_request_cost": "spendtrace.storage",
    "get_request_subtree": "spendtrace.storage",
    "get_transaction_subtree": "spendtrace.storage",
    # reconciliation (spendtrace/reconcile.py)
    "ReconciliationReport": "spendtrace.reconcile",
    "reconcile": "spendtrace.reconcile",
    # alerts (spendtrace/alerts.py)
    "AlertRule": "spendtrace.alerts",
    "list_alerts": "spendtrace.alerts",
    "remove_alert": "spendtrace.alerts",
    "set_alert": "spendtrace.alerts",
}

__all__ = sorted(
    [
        "UNATTRIBUTED",
        "ConfigError",
        "PricingError",
        "SchemaVersionError",
        "Span",
        "SpendtraceError",
        "StorageError",
        "UsageItem",
        *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spendtrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # let type checkers and IDEs see the lazy names
    from spendtrace._config import ExporterStats, FlushResult, configure, flush, get_stats, shutdown
    from spendtrace._sampling import get_global_sample_rate, set_global_sample_rate
    from spendtrace._scope import (
        add_api_call,
        cost_track,
        create_task_with_context,
        current_request_id,
        current_span_id,
        run_in_context,
        track,
        track_request,
        wrap_with_context,
    )
    from spendtrace.alerts import AlertRule, list_alerts, remove_alert, set_alert
    from spendtrace.export import (
        CircuitBreaker,
        InMemoryExporter,
        KafkaExporter,
        LocalStoreExporter,
        set_circuit_breaker,
    )
    from spendtrace.instrument import auto_instrument, uninstrument
    from spendtrace.pricing import AWSCostModel, PriceBook, PriceEntry, get_tracker
    from spendtrace.reconcile import ReconciliationReport, reconcile
    from spendtrace.storage import (
        SQLiteStorage,
        get_cost_trend,
        get_feature_cost_breakdown,
        get_request_cost,
        get_request_subtree,
        get_transaction_subtree,
    )
