"""Public storage names: ``SQLiteStorage`` / ``AsyncStorage`` and the original README's query functions.

Defined in ``spendtrace.server.store``; this module keeps the names where users import them.
"""

from __future__ import annotations

from spendtrace.server.store.base import open_store, open_store_async
from spendtrace.server.store.sqlite import (
    AsyncStorage,
    SQLiteStorage,
    get_cost_trend,
    get_feature_cost_breakdown,
    get_request_cost,
    get_request_subtree,
    get_transaction_subtree,
)

__all__ = [
    "AsyncStorage",
    "SQLiteStorage",
    "get_cost_trend",
    "get_feature_cost_breakdown",
    "get_request_cost",
    "get_request_subtree",
    "get_transaction_subtree",
    "open_store",
    "open_store_async",
]
