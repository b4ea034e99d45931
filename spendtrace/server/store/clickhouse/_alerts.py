"""``ClickHouseAlertStore``: spend from the ClickHouse rollups, alert state in a transactional side store.

The ``AlertStore`` contract needs ``claim_firing`` / ``claim_delivery`` to be one atomic
compare-and-set against every other caller, which ClickHouse does not offer (and must not be
emulated with read-then-insert). So rules, firing state, events and deliveries live in a small
SQLite file beside the chDB data (``<dir>/<database>.alerts.db``, the SQLite backend's alert store:
``BEGIN IMMEDIATE`` makes each claim atomic), and only ``spend`` / ``spend_per_value`` read the
ClickHouse rollups (aggregated: parts merge lazily).

This holds for ``chdb://`` stores, which one process per directory opens anyway. A ClickHouse
*server* shared by workers on several machines needs a side store they all reach (ClickHouse
Keeper, or a transactional database): not built yet, so ``clickhouse://`` alert stores are refused.
"""

from __future__ import annotations

import os
from typing import Any

from spendtrace.errors import ConfigError
from spendtrace.server.model.alerts import Grain
from spendtrace.server.store.clickhouse._client import Conn, connect, parse_url
from spendtrace.server.store.sqlite._alerts import SQLiteAlertStore

__all__ = ["ClickHouseAlertStore", "side_path"]

_TABLES = {"minute": "rollup_minute", "hour": "rollup_hour", "day": "rollup_day"}
_SCOPE_COLUMNS = {"feature": "feature", "user": "user_id", "endpoint": "endpoint"}


def side_path(url: str) -> str:
    """The alert side file of a ``chdb://`` store (``ConfigError`` for a server store)."""
    scheme, kwargs, database = parse_url(url)
    if scheme != "chdb":
        raise ConfigError(
            "alert state on a ClickHouse server needs a shared transactional side store (not built yet); "
            "use a chdb:// store or SQLite for alerts"
        )
    os.makedirs(kwargs["path"], exist_ok=True)
    return os.path.join(kwargs["path"], f"{database}.alerts.db")


class ClickHouseAlertStore(SQLiteAlertStore):
    """Alert rules, state, events and deliveries of a ``chdb://`` store (see the module docstring)."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        super().__init__(side_path(url), readonly=readonly)
        self.url = url
        self._ch: Conn = connect(url, readonly=readonly)

    def __repr__(self) -> str:
        return f"ClickHouseAlertStore({self.url!r})"

    def close(self) -> None:
        """Close the side store and the ClickHouse client."""
        super().close()
        self._ch.close()

    @staticmethod
    def _where(grain: Grain, since_s: int, until_s: int | None) -> tuple[str, list[Any]]:
        table = _TABLES.get(grain)
        if table is None:
            raise ValueError(f"unknown rollup grain {grain!r} (minute, hour or day)")
        params: list[Any] = [since_s]
        where = f"FROM {table} WHERE service = '' AND bucket >= %s"
        if until_s is not None:
            where += " AND bucket < %s"
            params.append(until_s)
        return where, params

    def spend(
        self, grain: Grain, since_s: int, until_s: int | None = None, *, scope: str, scope_value: str = ""
    ) -> int:
        """One sum over the grain's rollup, filtered on the scope's column (none for ``total``)."""
        where, params = self._where(grain, since_s, until_s)
        col = _SCOPE_COLUMNS.get(scope)
        if col is not None:
            where += f" AND {col} = %s"
            params.append(scope_value)
        return int(self._ch.tuples(f"SELECT sum(cost_nano) {where}", params)[0][0] or 0)

    def spend_per_value(self, grain: Grain, since_s: int, until_s: int | None = None, *, scope: str) -> dict[str, int]:
        """One ``GROUP BY`` over the scope's column (one sum under ``""`` for ``total``)."""
        where, params = self._where(grain, since_s, until_s)
        col = _SCOPE_COLUMNS.get(scope)
        if col is None:
            return {"": int(self._ch.tuples(f"SELECT sum(cost_nano) {where}", params)[0][0] or 0)}
        rows = self._ch.tuples(f"SELECT toString({col}) AS v, sum(cost_nano) {where} GROUP BY v", params)
        return {str(v): int(c) for v, c in rows}
