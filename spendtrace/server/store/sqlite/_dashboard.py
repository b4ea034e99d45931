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
    MAX_PAGE,
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
    fold,
    page_args,
    trend_snapshot,
    trend_top,
    window_start,
)
from spendtrace.server.store.sqlite._dash import ALL_MARKER
from spendtrace.server.store.sqlite._ddl import BLOCK_ORIGIN
from spendtrace.server.store.sqlite._sql import _SERVICES

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteDashboard"]

#: Dimension name -> rollup column.
_COLUMNS: dict[str, str] = {"feature": "feature", "user": "user_id", "endpoint": "endpoint"}
#: A search needle this long or longer can use the trigram index of names (FTS5 matches 3+ characters).
_TRIGRAM = 3
#: At most this many names containing the needle: read them through the trigram index (a few microseconds
#: each); more: scan the cost index (about 0.6 us a name, and its page stops at the first ``limit`` matches).
_FEW = 2000


def _day_window(col: str, first: int, now: int) -> tuple[str, list[Any]]:
    """SQL of ``(value, cost_nano)`` rows whose sum per value is its cost over the days from ``first`` on, and its
    parameters: the whole 28-day blocks and weeks of ``dash_block`` that fit between ``first`` and the end of
    today, and the ``dash_day`` rows of the days around them (from the ``dash_day_cost`` index), so a 90-day
    ranking sums about a third of the rows one day row per value and day would be.
    """
    end = now // DAY * DAY + DAY
    week, block = 7 * DAY, 28 * DAY
    s7, e7 = first + (BLOCK_ORIGIN - first) % week, end - (end - BLOCK_ORIGIN) % week
    days = "SELECT value, cost_nano FROM dash_day INDEXED BY dash_day_cost WHERE dim = ? AND service = ''"
    if s7 >= e7:
        return f"{days} AND bucket >= ?", [col, first]
    s28, e28 = first + (BLOCK_ORIGIN - first) % block, end - (end - BLOCK_ORIGIN) % block
    blocks = "SELECT value, cost_nano FROM dash_block WHERE dim = ? AND days = ? AND bucket >= ? AND bucket < ?"
    parts: list[tuple[str, list[Any]]] = []
    if s28 < e28:  # 28-day blocks are four of the weeks: weeks before and after them
        parts.append((blocks, [col, 28, s28, e28]))
        weeks = [(s7, s28), (e28, e7)]
    else:
        weeks = [(s7, e7)]
    parts += [(blocks, [col, 7, lo, hi]) for lo, hi in weeks if lo < hi]
    if first < s7:
        parts.append((f"{days} AND bucket >= ? AND bucket < ?", [col, first, s7]))
    parts.append((f"{days} AND bucket >= ?", [col, e7]))  # this week so far (and any day after today)
    return " UNION ALL ".join(sql for sql, _ in parts), [a for _, args in parts for a in args]


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
        self._dash_all = False

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
        if await self._has_dash_all():  # every day summed already; any one dimension's values add up to the total
            table = "dash_all WHERE dim = 'endpoint' AND"
        elif await self._has_dash():
            table = "dash_day WHERE dim = 'feature' AND"
        else:
            table = "rollup_day WHERE"
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

    async def _has_dash_all(self) -> bool:
        """Whether ``dash_all`` (the dash rollups summed over every day, kept by triggers) is filled in this file."""
        if not self._dash_all:
            self._dash_all = bool((await self._one(f"SELECT count(*) FROM meta WHERE key = '{ALL_MARKER}'"))[0])
        return self._dash_all

    async def dimension(
        self, dimension: str, window: str = "all", *, limit: int | None = None, offset: int = 0, search: str = ""
    ) -> DimSnapshot:
        """Per-feature / tenant / endpoint spend in ``window``, costliest first, with last-hour rate and sparkline.

        One page of ``limit`` values from ``offset`` (None: all) of those whose name contains ``search``
        (ASCII case folded); the window's total and value count come with it, so "others" is exact. Only
        the page's values are read for the per-service, last-hour and fully-loaded figures. On files with
        the dash rollups: "all" reads ``dash_all`` through its cost index (a search of 3+ characters that
        few names contain, through the trigram index of names), other windows one pass over their rows of
        ``dash_*`` (page, value count, total and matches together); the last hour reads ``rollup_minute``.
        """
        limit, offset = page_args(limit, offset)
        col = _COLUMNS[dimension]
        grain, back = WINDOWS[window]
        now = self._now_s()
        since = window_start(now, grain, back)
        dash = grain != "minute" and await self._has_dash()
        needle = fold(search)
        sums = "cost_nano, calls, spans, errors, unpriced, var_nano2, requests"
        if dash and back == 0 and await self._has_dash_all():
            key, src = "value", "dash_all WHERE dim = ?"
            args: list[Any] = [col]
            page_sql = f"SELECT value, {sums} FROM dash_all WHERE dim = ? AND service = ''"
            summary = "SELECT count(*), coalesce(sum(cost_nano), 0), {m} FROM dash_all WHERE dim = ? AND service = ''"
            grouped = False
        else:
            key = "value" if dash else col
            src = f"dash_{grain} WHERE dim = ? AND bucket >= ?" if dash else f"rollup_{grain} WHERE bucket >= ?"
            args = [col, since] if dash else [since]  # fmt: skip
            page_sql = (
                f"SELECT {key}, " + ", ".join(f"sum({c})" for c in sums.split(", "))
                + f" FROM {src} AND service = ''"
            )
            summary = (
                "SELECT count(*), coalesce(sum(c), 0), {m} FROM"
                f" (SELECT {key} AS k, sum(cost_nano) AS c FROM {src} AND service = '' GROUP BY {key})"
            )
            grouped = True
        where, wargs = ("", []) if not needle else (f" AND instr(lower({key}), ?) > 0", [needle])
        order = " GROUP BY " + key + " ORDER BY sum(cost_nano) DESC, " + key if grouped else (
            " ORDER BY cost_nano DESC, value"
        )
        counted: tuple[Any, ...] | None = None  # (values, total, matched) when the page's read gave them
        # (FTS5 reads its query as a C string: a NUL would end it, so such a needle scans)
        fts = None if grouped or len(needle) < _TRIGRAM or "\x00" in needle else await self._few_names(needle)
        if fts is not None:
            # all time, searched for 3+ characters that few names contain: those names from the trigram index,
            # checked with the same fold as the scan (the index folds more than ASCII: a superset), then their
            # dash_all rows; the value count and total of all time from the cost index
            hits = (
                "(SELECT rowid AS id FROM dash_names_fts WHERE dash_names_fts MATCH ?) AS f"
                " CROSS JOIN dash_names AS n ON n.id = f.id CROSS JOIN dash_all AS a ON a.dim = n.dim"
                " AND a.service = '' AND a.value = n.value WHERE n.dim = ? AND instr(lower(n.value), ?) > 0"
            )
            hargs = [fts, col, needle]
            page = await self._all(
                f"SELECT a.value, {', '.join('a.' + c for c in sums.split(', '))} FROM {hits}"
                " ORDER BY a.cost_nano DESC, a.value LIMIT ? OFFSET ?",
                [*hargs, -1 if limit is None else limit, offset],
            )
            counted = await self._one(
                "SELECT count(*), coalesce(sum(cost_nano), 0),"
                f" (SELECT count(*) FROM {hits}) FROM dash_all WHERE dim = ? AND service = ''",
                [*hargs, col],
            )
        elif grouped and dash and limit is not None:
            # one pass over the window: each value's cost (a short window from the dash_day_cost index, which
            # holds value and cost per day), the value count, total and matches over all of them (window
            # functions, before the search and the page cut them), then the page's other sums by key
            # (a window of days from the blocks of dash_block and the edge days)
            if grain == "day":
                ranked_src, rargs = _day_window(col, since, now)
            else:
                ranked_src, rargs = f"SELECT value, cost_nano FROM {src} AND service = ''", args
            m = "instr(lower(value), ?) > 0" if needle else "1"
            ranked = await self._all(
                "SELECT k, c, n, total, matched FROM (SELECT k, c, m, count(*) OVER () AS n, sum(c) OVER () AS total,"
                f" sum(m) OVER () AS matched FROM (SELECT value AS k, sum(cost_nano) AS c, {m} AS m FROM ({ranked_src})"
                " GROUP BY value)) WHERE m ORDER BY c DESC, k LIMIT ? OFFSET ?",
                [*wargs, *rargs, limit, offset],
            )
            if ranked:
                counted = ranked[0][2:5]
            sums_of = {}
            if ranked:
                sums_of = {r[0]: r for r in await self._all(
                    f"{page_sql} AND value IN ({','.join('?' * len(ranked))}) GROUP BY value",
                    [*args, *(r[0] for r in ranked)],
                )}  # fmt: skip
            page = [sums_of[r[0]] for r in ranked]
        else:
            page = await self._all(
                page_sql + where + order + " LIMIT ? OFFSET ?", [*args, *wargs, -1 if limit is None else limit, offset]
            )
        if counted is not None:
            n_values, total, matched = counted
        elif not needle:
            n_values, total, matched = await self._one(summary.format(m="count(*)"), args)
        else:
            kk = "value" if not grouped else "k"
            n_values, total, matched = await self._one(
                summary.format(m=f"coalesce(sum(instr(lower({kk}), ?) > 0), 0)"), [needle, *args]
            )
        keys = [r[0] for r in page]
        only = limit is not None or bool(needle)  # a page: read the other figures of its values only
        if only and not keys:
            return dim_snapshot(dimension, window, now, [], [], [], total_nano=int(total), values=int(n_values),
                                matched=int(matched), offset=offset, search=search)  # fmt: skip
        marks = ",".join("?" * len(keys))

        async def service_rows() -> list[tuple[Any, ...]]:
            cost = "cost_nano" if not grouped else "sum(cost_nano)"
            tail = "" if not grouped else f" GROUP BY service, {key}"
            if not only:
                return await self._all(
                    f"SELECT {key}, service, {cost}, 0, 0, 0, 0, 0, 0 FROM {src} AND service > ''{tail}", args
                )
            svc = ""
            if dash and grouped:  # name the services, so the (dim, service, value ...) key is sought, not scanned
                names = [r[0] for r in await self._all(_SERVICES)]
                if not names:
                    return []
                svc = f" AND service IN ({','.join('?' * len(names))})"
                args2 = [*args, *names, *keys]
            else:
                args2 = [*args, *keys]
            return await self._all(
                f"SELECT {key}, service, {cost}, 0, 0, 0, 0, 0, 0 FROM {src} AND service > ''{svc}"
                f" AND {key} IN ({marks}){tail}",
                args2,
            )

        async def hour_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            inside = f" AND {col} IN ({marks})" if only else ""
            minute = await self._all(
                f"SELECT {col}, bucket, sum(cost_nano) FROM rollup_minute WHERE service = '' AND bucket >= ?{inside}"
                f" GROUP BY {col}, bucket",
                [now - HOUR + MINUTE, *(keys if only else ())],
                side=True,
            )
            if dimension != "feature":
                return minute, []
            inside = f" AND feature IN ({marks})" if only else ""
            loaded_sql = f"SELECT feature, sum(cost_nano) FROM loaded_{grain} WHERE bucket >= ?{inside} GROUP BY 1"
            return minute, await self._all(loaded_sql, [since, *(keys if only else ())], side=True)

        services, (minute, loaded_rows) = await asyncio.gather(service_rows(), hour_rows())
        rows = [(r[0], "", *r[1:]) for r in page] + services
        return dim_snapshot(dimension, window, now, rows, minute, loaded_rows, total_nano=int(total),
                            values=int(n_values), matched=int(matched), offset=offset, search=search)  # fmt: skip

    async def _few_names(self, needle: str) -> str | None:
        """The trigram query for ``needle`` when at most ``_FEW`` names (of any dimension) contain it, else None.

        A needle most names contain is cheaper to find by scanning the cost index, which also stops after a page.
        """
        query = '"' + needle.replace('"', '""') + '"'
        (n,) = await self._one(
            "SELECT count(*) FROM (SELECT 1 FROM dash_names_fts WHERE dash_names_fts MATCH ? LIMIT ?)",
            (query, _FEW + 1),
        )
        return query if n <= _FEW else None

    async def requests(
        self, order: str = "recent", limit: int = 200, *, offset: int = 0, search: str = ""
    ) -> list[RequestRow]:
        """Most recent (``order="recent"``) or most expensive (``"cost"``) requests, one page, optionally searched."""
        lim, offset = page_args(limit, offset)
        by = "cost_nano DESC" if order == "cost" else "start_ns DESC"  # each one index walk, no sort
        needle = fold(search)
        where = ""
        if needle:  # walks the same index, keeping the matches: stops after a page of them
            shown = ("request_id", "endpoint", "user_id", "root_feature")
            where = " WHERE " + " OR ".join(f"instr(lower(coalesce({c}, '')), ?1) > 0" for c in shown)
        rows = await self._all(
            "SELECT request_id, endpoint, user_id, root_feature, start_ns, end_ns, cost_nano, spans, errors,"
            f" unpriced FROM requests{where} ORDER BY {by} LIMIT ?2 OFFSET ?3",
            (needle, lim or MAX_PAGE, offset),
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

    async def trends(self, days: int = 14, *, limit: int | None = None) -> TrendSnapshot:
        """Daily cost per feature for the last ``days`` days (today included); ``limit``: the top features only.

        With ``limit``, three reads: the ranking (whole weeks and 28-day blocks from ``dash_block``, the
        edge days from the ``dash_day_cost`` index), the top features' days (by key) and one total per day.
        """
        today = self._now_s() // DAY * DAY
        first = today - (days - 1) * DAY
        if await self._has_dash():
            key, src = "value", "dash_day WHERE dim = 'feature' AND service = '' AND bucket >= ?"
            # a day's total is the sum of any one dimension's values that day: the endpoints' rows are fewest
            daily = "dash_day WHERE dim = 'endpoint' AND service = '' AND bucket >= ?"
        else:
            key, src = "feature", "rollup_day WHERE service = '' AND bucket >= ?"
            daily = src
        if limit is None:
            sql = f"SELECT {key}, bucket, sum(cost_nano) FROM {src} GROUP BY {key}, bucket"
            return trend_snapshot(first, days, await self._all(sql, (first,)))
        if key == "value":  # the range's whole weeks and 28-day blocks from dash_block, its edge days from dash_day
            rank_src, rargs = _day_window("feature", first, self._now_s())
        else:
            rank_src, rargs = f"SELECT feature AS value, cost_nano FROM {src}", [first]
        ranked = await self._all(
            f"SELECT value, sum(cost_nano) AS c, count(*) OVER () FROM ({rank_src}) GROUP BY value"
            " ORDER BY c DESC, value LIMIT ?",
            (*rargs, int(limit)),
        )
        if not ranked:
            return trend_snapshot(first, days, [])
        names = [r[0] for r in ranked]
        rows, totals = await asyncio.gather(
            self._all(
                f"SELECT {key}, bucket, sum(cost_nano) FROM {src} AND {key} IN ({','.join('?' * len(names))})"
                f" GROUP BY {key}, bucket",
                (first, *names),
            ),
            self._all(f"SELECT bucket, sum(cost_nano) FROM {daily} GROUP BY bucket", (first,), side=True),
        )
        return trend_top(first, days, rows, totals, int(ranked[0][2]))

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
