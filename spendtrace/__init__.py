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
    # recording (spendtrace/sdk/scope.py, context.py, sampling.py)
    "add_api_call": "spendtrace.sdk.scope",
    "cost_track": "spendtrace.sdk.scope",
    "create_task_with_context": "spendtrace.sdk.context",
    "current_request_id": "spendtrace.sdk.context",
    "current_span_id": "spendtrace.sdk.context",
    "run_in_context": "spendtrace.sdk.context",
    "track": "spendtrace.sdk.scope",
    "track_request": "spendtrace.sdk.scope",
    "wrap_with_context": "spendtrace.sdk.context",
    "get_global_sample_rate": "spendtrace.sdk.sampling",
    "set_global_sample_rate": "spendtrace.sdk.sampling",
    "otel_baggage_propagator": "spendtrace.sdk.otel",
    "otel_span_processor": "spendtrace.sdk.otel",
    # export (spendtrace/sdk/export/, spendtrace/sdk/config.py; the local store exporter is server-side)
    "CircuitBreaker": "spendtrace.sdk.export",
    "InMemoryExporter": "spendtrace.sdk.export",
    "KafkaExporter": "spendtrace.sdk.export",
    "LocalStoreExporter": "spendtrace.server.local_export",
    "set_circuit_breaker": "spendtrace.sdk.export",
    "ExporterStats": "spendtrace.sdk.config",
    "FlushResult": "spendtrace.sdk.config",
    "configure": "spendtrace.sdk.config",
    "flush": "spendtrace.sdk.config",
    "get_stats": "spendtrace.sdk.config",
    "shutdown": "spendtrace.sdk.config",
    # auto-instrumentation (spendtrace/sdk/instrument/)
    "auto_instrument": "spendtrace.sdk.instrument",
    "uninstrument": "spendtrace.sdk.instrument",
    # pricing (spendtrace/server/pricing/)
    "AWSCostModel": "spendtrace.server.pricing",
    "PriceBook": "spendtrace.server.pricing",
    "PriceEntry": "spendtrace.server.pricing",
    "get_tracker": "spendtrace.server.pricing",
    # storage and queries (spendtrace/server/store/)
    "SQLiteStorage": "spendtrace.server.store.sqlite",
    "get_cost_trend": "spendtrace.server.store.sqlite",
    "get_feature_cost_breakdown": "spendtrace.server.store.sqlite",
    "get_request_cost": "spendtrace.server.store.sqlite",
    "get_request_subtree": "spendtrace.server.store.sqlite",
    "get_transaction_subtree": "spendtrace.server.store.sqlite",
    "open_store": "spendtrace.server.store.base",
    "open_store_async": "spendtrace.server.store.base",
    # reconciliation (spendtrace/server/reconcile/)
    "ReconciliationReport": "spendtrace.server.reconcile.report",
    "reconcile": "spendtrace.server.reconcile.report",
    # repricing stored usage (spendtrace/server/repricing.py)
    "RepriceResult": "spendtrace.server.repricing",
    "reprice": "spendtrace.server.repricing",
    "undo_reprice": "spendtrace.server.repricing",
    # alerts (spendtrace/server/alerts/)
    "AlertRule": "spendtrace.server.alerts.rules",
    "list_alerts": "spendtrace.server.alerts.rules",
    "remove_alert": "spendtrace.server.alerts.rules",
    "set_alert": "spendtrace.server.alerts.rules",
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
    from spendtrace.sdk.config import ExporterStats as ExporterStats
    from spendtrace.sdk.config import FlushResult as FlushResult
    from spendtrace.sdk.config import configure as configure
    from spendtrace.sdk.config import flush as flush
    from spendtrace.sdk.config import get_stats as get_stats
    from spendtrace.sdk.config import shutdown as shutdown
    from spendtrace.sdk.context import create_task_with_context as create_task_with_context
    from spendtrace.sdk.context import current_request_id as current_request_id
    from spendtrace.sdk.context import current_span_id as current_span_id
    from spendtrace.sdk.context import run_in_context as run_in_context
    from spendtrace.sdk.context import wrap_with_context as wrap_with_context
    from spendtrace.sdk.export import CircuitBreaker as CircuitBreaker
    from spendtrace.sdk.export import InMemoryExporter as InMemoryExporter
    from spendtrace.sdk.export import KafkaExporter as KafkaExporter
    from spendtrace.sdk.export import set_circuit_breaker as set_circuit_breaker
    from spendtrace.sdk.instrument import auto_instrument as auto_instrument
    from spendtrace.sdk.instrument import uninstrument as uninstrument
    from spendtrace.sdk.otel import otel_baggage_propagator as otel_baggage_propagator
    from spendtrace.sdk.otel import otel_span_processor as otel_span_processor
    from spendtrace.sdk.sampling import get_global_sample_rate as get_global_sample_rate
    from spendtrace.sdk.sampling import set_global_sample_rate as set_global_sample_rate
    from spendtrace.sdk.scope import add_api_call as add_api_call
    from spendtrace.sdk.scope import cost_track as cost_track
    from spendtrace.sdk.scope import track as track
    from spendtrace.sdk.scope import track_request as track_request
    from spendtrace.server.alerts.rules import AlertRule as AlertRule
    from spendtrace.server.alerts.rules import list_alerts as list_alerts
    from spendtrace.server.alerts.rules import remove_alert as remove_alert
    from spendtrace.server.alerts.rules import set_alert as set_alert
    from spendtrace.server.local_export import LocalStoreExporter as LocalStoreExporter
    from spendtrace.server.pricing import AWSCostModel as AWSCostModel
    from spendtrace.server.pricing import PriceBook as PriceBook
    from spendtrace.server.pricing import PriceEntry as PriceEntry
    from spendtrace.server.pricing import get_tracker as get_tracker
    from spendtrace.server.reconcile.report import ReconciliationReport as ReconciliationReport
    from spendtrace.server.reconcile.report import reconcile as reconcile
    from spendtrace.server.repricing import RepriceResult as RepriceResult
    from spendtrace.server.repricing import reprice as reprice
    from spendtrace.server.repricing import undo_reprice as undo_reprice
    from spendtrace.server.store.base import open_store as open_store
    from spendtrace.server.store.base import open_store_async as open_store_async
    from spendtrace.server.store.sqlite import SQLiteStorage as SQLiteStorage
    from spendtrace.server.store.sqlite import get_cost_trend as get_cost_trend
    from spendtrace.server.store.sqlite import get_feature_cost_breakdown as get_feature_cost_breakdown
    from spendtrace.server.store.sqlite import get_request_cost as get_request_cost
    from spendtrace.server.store.sqlite import get_request_subtree as get_request_subtree
    from spendtrace.server.store.sqlite import get_transaction_subtree as get_transaction_subtree
