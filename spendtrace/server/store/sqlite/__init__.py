"""Storage and queries: ``SQLiteStorage`` / ``AsyncStorage`` and the README's module-level query functions.

The module functions open the database at ``db_path`` (default: ``configure(db=...)``,
``SPENDTRACE_DB`` or ``cost_data.db``), run one query and close it again; keep a
``SQLiteStorage`` for repeated reads.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from spendtrace.server.store.sqlite._sql import TimeLike
from spendtrace.server.store.sqlite._storage import AsyncStorage, SQLiteStorage

if TYPE_CHECKING:
    from collections.abc import Callable

    from spendtrace.server.store.base import StoreURL
    from spendtrace.server.store.sqlite._alerts import SQLiteAlertStore
    from spendtrace.server.store.sqlite._dashboard import SQLiteDashboard
    from spendtrace.server.store.sqlite._ingest_store import AsyncSQLiteIngestStore, SQLiteIngestStore
    from spendtrace.server.store.sqlite._reconcile import SQLiteReconcileStore

__all__ = [
    "AsyncStorage",
    "SQLiteStorage",
    "get_cost_trend",
    "get_feature_cost_breakdown",
    "get_request_cost",
    "get_request_subtree",
    "get_transaction_subtree",
    "open_sqlite",
    "open_sqlite_alerts",
    "open_sqlite_async",
    "open_sqlite_dashboard",
    "open_sqlite_ingest",
    "open_sqlite_ingest_async",
    "open_sqlite_reconcile",
]

PathArg = str | os.PathLike[str] | None


def get_feature_cost_breakdown(db_path: PathArg = None, **filters: Any) -> list[dict[str, Any]]:
    """Direct vs fully-loaded cost per feature: rows ``{feature, direct_cost, fully_loaded_cost, ...}``.

    ``filters``: ``start``, ``end``, ``feature``, ``user_id``, ``endpoint``, ``limit`` as in
    ``SQLiteStorage.get_feature_cost_breakdown``.
    """
    with SQLiteStorage(db_path) as storage:
        return storage.get_feature_cost_breakdown(**filters)


def get_request_cost(
    db_path: PathArg = None, limit: int = 20, order: str = "recent", **filters: Any
) -> list[dict[str, Any]]:
    """Cost per request, newest first (``order='cost'``: costliest first): ``{request_id, total_cost, ...}``."""
    with SQLiteStorage(db_path) as storage:
        return storage.get_request_cost(limit, order, **filters)


def get_request_subtree(request_id: str, db_path: PathArg = None) -> list[dict[str, Any]]:
    """One request's spans in depth-first order: ``{feature, depth, direct_cost, subtree_cost, usage, ...}``."""
    with SQLiteStorage(db_path) as storage:
        return storage.get_request_subtree(request_id)


def get_transaction_subtree(span_id: str, db_path: PathArg = None) -> list[dict[str, Any]]:
    """The subtree rooted at one span, in depth-first order (the root has depth 0)."""
    with SQLiteStorage(db_path) as storage:
        return storage.get_transaction_subtree(span_id)


def get_cost_trend(
    feature: str | None = None, days: int = 30, db_path: PathArg = None, *, now: TimeLike = None, **filters: Any
) -> list[dict[str, Any]]:
    """Daily cost for the last ``days`` UTC days (today included), oldest first, zero-filled: ``{date, total_cost}``."""
    with SQLiteStorage(db_path) as storage:
        return storage.get_cost_trend(feature, days, now=now, **filters)


def open_sqlite(url: StoreURL, *, readonly: bool = False) -> SQLiteStorage:
    """``open_store`` for ``sqlite://`` URLs and bare paths."""
    return SQLiteStorage(url.path, readonly=readonly)


def open_sqlite_async(url: StoreURL, *, readonly: bool = False) -> AsyncStorage:
    """``open_store_async`` for ``sqlite://`` URLs and bare paths."""
    return AsyncStorage(url.path, readonly=readonly)


def open_sqlite_dashboard(
    url: StoreURL, *, clock: Callable[[], int] | None = None, monotonic: Callable[[], float] | None = None
) -> SQLiteDashboard:
    """``open_dashboard`` for ``sqlite://`` URLs and bare paths (the TUI's reads; not connected yet)."""
    from spendtrace.server.store.sqlite._dashboard import SQLiteDashboard

    return SQLiteDashboard(url.path, clock=clock, monotonic=monotonic)


def open_sqlite_alerts(url: StoreURL, *, readonly: bool = False) -> SQLiteAlertStore:
    """``open_alert_store`` for ``sqlite://`` URLs and bare paths."""
    from spendtrace.server.store.sqlite._alerts import SQLiteAlertStore

    return SQLiteAlertStore(url.path, readonly=readonly)
def open_sqlite_ingest(url: StoreURL, *, readonly: bool = False) -> SQLiteIngestStore:
    """``open_ingest_store`` for ``sqlite://`` URLs and bare paths: one connection of this process."""
    from spendtrace.server.store.sqlite._ingest_store import SQLiteIngestStore

    return SQLiteIngestStore(url.path, readonly=readonly)


async def open_sqlite_ingest_async(url: StoreURL) -> AsyncSQLiteIngestStore:
    """``open_ingest_store_async`` for ``sqlite://`` URLs and bare paths: the writer process is running."""
    from spendtrace.server.store.sqlite._ingest_store import AsyncSQLiteIngestStore

    store = AsyncSQLiteIngestStore(url.path)
    await store.start()
    return store


def open_sqlite_reconcile(url: StoreURL, *, readonly: bool = False) -> SQLiteReconcileStore:
    """``open_reconcile_store`` for ``sqlite://`` URLs and bare paths."""
    from spendtrace.server.store.sqlite._reconcile import SQLiteReconcileStore

    return SQLiteReconcileStore(url.path, readonly=readonly)
