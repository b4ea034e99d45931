"""``DashboardReads`` on SQLite: the TUI's live queries over the rollups, on two aiosqlite connections.

Every query reads the rollup tables (``_ddl.py``), so a refresh costs the same with 5,000 or
5,000,000 raw spans; raw ``spans`` are read only for one request's tree. aiosqlite runs the SQL on
its own thread, so the UI thread never waits on the database. The change token is SQLite's
``PRAGMA data_version``, which changes only when another connection commits.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendtrace.server.model.dashboard import (
    DAY,
    HOUR,
    MINUTE,
    WINDOWS,
    AlertEventRow,
    AlertRuleRow,
    DeadLetterLine,
    DimSnapshot,
    IngestRate,
    Overview,
    RequestRow,
    TreeNode,
    TrendSnapshot,
    UnpricedLine,
    build_tree,
    dim_snapshot,
    trend_snapshot,
    window_start,
)

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteDashboard"]

#: Dimension name -> rollup column.
_COLUMNS: dict[str, str] = {"feature": "feature", "user": "user_id", "endpoint": "endpoint"}


class SQLiteDashboard:
    """The dashboard reads of one SQLite file (``open_dashboard("sqlite:///...")``).

    ``clock`` gives wall-clock epoch nanoseconds ("now" for windows and sparklines; default
    ``time.time_ns``) and ``monotonic`` times the ingest-rate measurement (default
    ``time.monotonic``); both are injectable for tests.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        clock: Callable[[], int] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.clock = clock or time.time_ns
        self._conn: aiosqlite.Connection | None = None
        self._side: aiosqlite.Connection | None = None
        self._ingest_rate = IngestRate(monotonic or time.monotonic)
        self._dash = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> SQLiteDashboard:
        """Open (creating an empty store if the file does not exist yet) and return self.

        Two read-only connections, each with its own aiosqlite thread: a dimension refresh runs its
        sparkline query on the second while the first sums the window, and SQLite releases the GIL
        while it works, so on two cores the two run side by side.
        """
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await self._connect()  # creates / migrates an empty store if needed
        self._side = await self._connect()
        return self

    async def _connect(self) -> aiosqlite.Connection:
        from spendtrace.server.store.sqlite._db import connect_async

        conn = await connect_async(self.db_path)
        await conn.execute("PRAGMA query_only = 1")
        await conn.execute("PRAGMA busy_timeout = 2000")
        return conn

    async def close(self) -> None:
        """Close the connections (idempotent)."""
        conns, self._conn, self._side = (self._conn, self._side), None, None
        for conn in conns:
            if conn is not None:
                await conn.close()

    async def _all(self, sql: str, params: Iterable[Any] = (), *, side: bool = False) -> list[tuple[Any, ...]]:
        conn = self._side if side else self._conn
        assert conn is not None, "open() first"
        # one hop to aiosqlite's thread and back instead of three (execute, fetchall, close): a live
        # refresh makes about a dozen queries, and on a busy machine each hop costs a fraction of a ms
        # (plain tuples: the connections set no row_factory)
        return list(await conn.execute_fetchall(sql, tuple(params)))  # type: ignore[arg-type]

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> tuple[Any, ...]:
        rows = await self._all(sql, params)
        return rows[0] if rows else ()

    # -- queries -----------------------------------------------------------------------------

    async def change_token(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes whenever another connection commits to the file."""
        (v,) = await self._one("PRAGMA data_version")
        return int(v)

    async def _has_dash(self) -> bool:
        """Whether a writer maintains the ``dash_*`` dashboard rollups in this file (a meta marker).

        Once set the marker stays (writers keep the tables from then on), so a seen marker is not
        asked for again; a file without it is asked each time, as a writer may start on it later.
        """
        if not self._dash:
            self._dash = bool((await self._one("SELECT count(*) FROM meta WHERE key = 'dash_rollups'"))[0])
        return self._dash

    def _now_s(self) -> int:
        return self.clock() // 1_000_000_000

    async def overview(self) -> Overview:
        """Totals for the header; the ingest rate is spans stored per second since the last call."""
        now = self._now_s()
        table = "dash_day WHERE dim = 'feature' AND" if await self._has_dash() else "rollup_day WHERE"
        # one statement, so one trip to the database thread, for every figure of the header
        (cost, spans, errors, hour, unpriced, dead, events) = await self._one(
            "SELECT t.c, t.s, t.e,"
            " (SELECT coalesce(sum(cost_nano),0) FROM rollup_minute WHERE service = '' AND bucket >= ?),"
            " (SELECT coalesce(sum(items),0) FROM unpriced_usage),"
            " (SELECT count(*) FROM dead_letters),"
            " (SELECT count(*) FROM alert_events)"
            " FROM (SELECT coalesce(sum(cost_nano),0) AS c, coalesce(sum(spans),0) AS s,"
            f" coalesce(sum(errors),0) AS e FROM {table} service = '') AS t",
            (now - HOUR,),
        )
        spans = int(spans)
        return Overview(
            total_nano=int(cost),
            last_hour_nano=int(hour),
            spans=spans,
            ingest_per_s=self._ingest_rate(spans),
            unpriced_items=int(unpriced),
            dead_letters=int(dead),
            alert_events=int(events),
            errors=int(errors),
        )

    async def dimension(self, dimension: str, window: str = "all") -> DimSnapshot:
        """Per-feature / tenant / endpoint spend in ``window``, with last-hour rate and sparkline."""
        col = _COLUMNS[dimension]
        grain, back = WINDOWS[window]
        now = self._now_s()
        since = window_start(now, grain, back)
        dash = grain != "minute" and await self._has_dash()

        async def window_rows() -> list[tuple[Any, ...]]:
            if dash:  # one primary-key range per dimension instead of every tenant x endpoint x feature row
                # totals (service '') with every measure, then per-service cost only: most rows are
                # per-service, and summing one column there instead of seven halves the query
                rows = await self._all(
                    "SELECT value, '', sum(cost_nano), sum(calls), sum(spans), sum(errors), sum(unpriced),"
                    f" sum(var_nano2), sum(requests) FROM dash_{grain} WHERE dim = ? AND service = ''"
                    " AND bucket >= ? GROUP BY value",
                    (col, since),
                )
                return rows + await self._all(
                    f"SELECT value, service, sum(cost_nano), 0, 0, 0, 0, 0, 0 FROM dash_{grain}"
                    " WHERE dim = ? AND service > '' AND bucket >= ? GROUP BY service, value",
                    (col, since),
                )
            return await self._all(
                f"SELECT {col}, service, sum(cost_nano), sum(calls), sum(spans), sum(errors), sum(unpriced),"
                f" sum(var_nano2), sum(requests) FROM rollup_{grain} WHERE bucket >= ? GROUP BY {col}, service",
                (since,),
            )

        async def hour_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            minute = await self._all(
                f"SELECT {col}, bucket, sum(cost_nano) FROM rollup_minute WHERE service = '' AND bucket >= ?"
                f" GROUP BY {col}, bucket",
                (now - HOUR + MINUTE,),
                side=True,
            )
            if dimension != "feature":
                return minute, []
            loaded_sql = f"SELECT feature, sum(cost_nano) FROM loaded_{grain} WHERE bucket >= ? GROUP BY feature"
            return minute, await self._all(loaded_sql, (since,), side=True)

        rows, (minute, loaded_rows) = await asyncio.gather(window_rows(), hour_rows())
        return dim_snapshot(dimension, window, now, rows, minute, loaded_rows)

    async def requests(self, order: str = "recent", limit: int = 200) -> list[RequestRow]:
        """Most recent (``order="recent"``) or most expensive (``"cost"``) requests."""
        by = "cost_nano DESC" if order == "cost" else "start_ns DESC"  # each one index walk, no sort
        rows = await self._all(
            "SELECT request_id, endpoint, user_id, root_feature, start_ns, end_ns, cost_nano, spans, errors,"
            f" unpriced FROM requests ORDER BY {by} LIMIT ?",
            (int(limit),),
        )
        return [
            RequestRow(r[0], r[1] or "", r[2] or "", r[3] or "", int(r[4]), int(r[5]), int(r[6]), *map(int, r[7:10]))
            for r in rows
        ]

    async def request_tree(self, request_id: str) -> list[TreeNode]:
        """The call tree(s) of one request, with subtree costs (empty if the request is unknown)."""
        rows = await self._all(
            "SELECT span_id, parent_id, feature, operation, start_ns, duration_ns, error, error_type, usage,"
            " cost_nano, unpriced, endpoint, user_id FROM spans WHERE request_id = ? ORDER BY start_ns, span_id",
            (request_id,),
        )
        return build_tree(rows)

    async def trends(self, days: int = 14) -> TrendSnapshot:
        """Daily cost per feature for the last ``days`` days (today included)."""
        today = self._now_s() // DAY * DAY
        first = today - (days - 1) * DAY
        if await self._has_dash():
            sql = (
                "SELECT value, bucket, sum(cost_nano) FROM dash_day WHERE dim = 'feature' AND service = ''"
                " AND bucket >= ? GROUP BY value, bucket"
            )
        else:
            sql = (
                "SELECT feature, bucket, sum(cost_nano) FROM rollup_day WHERE service = '' AND bucket >= ?"
                " GROUP BY feature, bucket"
            )
        return trend_snapshot(first, days, await self._all(sql, (first,)))

    async def alert_rules(self) -> list[AlertRuleRow]:
        """Every alert rule, by name, webhook URLs masked."""
        rows = await self._all(
            "SELECT id, name, kind, scope, scope_value, threshold_nano, window_minutes, cooldown_minutes,"
            " coalesce(webhook, ''), enabled FROM alert_rules ORDER BY name"
        )
        from spendtrace.server.model.alerts import mask_url  # webhook URLs carry secrets: never shown in full

        return [
            AlertRuleRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]), mask_url(r[8]) if r[8] else "",
                         bool(r[9]))
            for r in rows
        ]

    async def alert_events(self, limit: int = 200) -> list[AlertEventRow]:
        """The latest fired alerts, newest first."""
        rows = await self._all(
            "SELECT id, rule_name, fired_ns, scope, scope_value, value_nano, threshold_nano, message, delivery"
            " FROM alert_events ORDER BY fired_ns DESC, id DESC LIMIT ?",
            (int(limit),),
        )
        return [AlertEventRow(*r) for r in rows]

    async def dead_letters(self, limit: int = 50) -> list[DeadLetterLine]:
        """The latest dead letters, newest first."""
        rows = await self._all(
            "SELECT received_ns, reason FROM dead_letters ORDER BY received_ns DESC LIMIT ?", (int(limit),)
        )
        return [DeadLetterLine(int(a), str(b)) for a, b in rows]

    async def unpriced(self, limit: int = 50) -> list[UnpricedLine]:
        """Usage that no price covered, most items first."""
        rows = await self._all(
            "SELECT key, service, feature, items FROM unpriced_usage WHERE items > 0 ORDER BY items DESC, key LIMIT ?",
            (int(limit),),
        )
        return [UnpricedLine(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]
