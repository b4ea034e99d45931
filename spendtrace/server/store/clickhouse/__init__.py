"""The ClickHouse backend (the ``clickhouse`` extra): ``chdb:///dir``, ``clickhouse://``, ``clickhouses://`` URLs.

Through ``clickhouse-connect``: a ClickHouse server over HTTP(S), or the same engine in this process
(chDB) with the same client API, so both run the same code. Schema in ``_ddl``, the effectively-once
write path in ``_ingest``, reads in ``_reads`` / ``_store``, retention and restatement in ``_admin``,
alert state in ``_alerts`` and reconciliation records in ``_reconcile`` (both through ``_claims``).
Apps reach it through ``spendtrace.server.store.base.open_store``; nothing imports it directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendtrace.server.store.clickhouse._store import AsyncClickHouseStore, ClickHouseStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from spendtrace.server.store.base import StoreURL
    from spendtrace.server.store.clickhouse._alerts import ClickHouseAlertStore
    from spendtrace.server.store.clickhouse._dashboard import ClickHouseDashboard
    from spendtrace.server.store.clickhouse._ingest_store import AsyncClickHouseIngestStore, ClickHouseIngestStore
    from spendtrace.server.store.clickhouse._reconcile import ClickHouseReconcileStore

__all__ = [
    "AsyncClickHouseStore",
    "ClickHouseStore",
    "open_clickhouse",
    "open_clickhouse_alerts",
    "open_clickhouse_async",
    "open_clickhouse_dashboard",
    "open_clickhouse_ingest",
    "open_clickhouse_ingest_async",
    "open_clickhouse_reconcile",
]


def open_clickhouse(url: StoreURL, *, readonly: bool = False) -> ClickHouseStore:
    """``open_store`` for ``chdb://``, ``clickhouse://`` and ``clickhouses://`` URLs."""
    return ClickHouseStore(url.raw, readonly=readonly)


def open_clickhouse_async(url: StoreURL, *, readonly: bool = False) -> AsyncClickHouseStore:
    """``open_store_async`` for the ClickHouse URLs."""
    return AsyncClickHouseStore(url.raw, readonly=readonly)


def open_clickhouse_alerts(url: StoreURL, *, readonly: bool = False) -> ClickHouseAlertStore:
    """``open_alert_store`` for the ClickHouse URLs (alert state in the store's own tables: see ``_alerts``)."""
    from spendtrace.server.store.clickhouse._alerts import ClickHouseAlertStore

    return ClickHouseAlertStore(url.raw, readonly=readonly)


def open_clickhouse_dashboard(
    url: StoreURL, *, clock: Callable[[], int] | None = None, monotonic: Callable[[], float] | None = None
) -> ClickHouseDashboard:
    """``open_dashboard`` for the ClickHouse URLs (the TUI's reads; not connected yet)."""
    from spendtrace.server.store.clickhouse._dashboard import ClickHouseDashboard

    return ClickHouseDashboard(url.raw, clock=clock, monotonic=monotonic)


def open_clickhouse_ingest(url: StoreURL, *, readonly: bool = False) -> ClickHouseIngestStore:
    """``open_ingest_store`` for the ClickHouse URLs (see ``_ingest_store`` for how a batch is applied)."""
    from spendtrace.server.store.clickhouse._ingest_store import ClickHouseIngestStore

    return ClickHouseIngestStore(url.raw, readonly=readonly)


async def open_clickhouse_ingest_async(url: StoreURL) -> AsyncClickHouseIngestStore:
    """``open_ingest_store_async`` for the ClickHouse URLs: connected and migrated when this returns."""
    from spendtrace.server.store.clickhouse._ingest_store import AsyncClickHouseIngestStore

    return await AsyncClickHouseIngestStore.open(url.raw)


def open_clickhouse_reconcile(url: StoreURL, *, readonly: bool = False) -> ClickHouseReconcileStore:
    """``open_reconcile_store`` for the ClickHouse URLs (see ``_reconcile``)."""
    from spendtrace.server.store.clickhouse._reconcile import ClickHouseReconcileStore

    return ClickHouseReconcileStore(url.raw, readonly=readonly)
