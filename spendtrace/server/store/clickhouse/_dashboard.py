"""``DashboardReads`` on ClickHouse: the TUI's live queries over the rollup views, on a few clients in threads.

The same rows as the SQLite dashboard (``model.dashboard`` shapes them); every rollup read sums
(parts merge lazily). Alert rules and events come from the store's alert tables (``_alerts``).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from spendtrace.errors import StorageError
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
from spendtrace.server.store.clickhouse._client import Conn, connect
from spendtrace.server.store.clickhouse._reads import NEWEST_DAY, ONE_THREAD, page_is_exact, request_rows, since_days
from spendtrace.server.store.clickhouse._store import CHANGE_TOKEN
from spendtrace.server.store.sqlite._sql import Filters

__all__ = ["ClickHouseDashboard"]

_COLUMNS: dict[str, str] = {"feature": "feature", "user": "user_id", "endpoint": "endpoint"}

#: Connections a dashboard keeps: a table's follow-up reads (its page's per-service rows, last hour and
#: fully-loaded cost) run at once, one per connection, and beside the page's ranking; the engine runs
#: queries of separate connections in parallel (chDB too: the Features page of 30 days 52 -> 34 ms at
#: 730,000 spans, same run; the follow-ups beside the ranking took the TUI's Tenants refresh cycle
#: 53, 59 -> 46, 46 ms at 100,000 tenants).
POOL = 5
#: Pages whose values ``dimension`` remembers, to read their follow-ups beside the next ranking.
_SHOWN_PAGES = 16


class ClickHouseDashboard:
    """The dashboard reads of one ClickHouse store (``open_dashboard("chdb:///...")``)."""

    def __init__(
        self, url: str, *, clock: Callable[[], int] | None = None, monotonic: Callable[[], float] | None = None
    ) -> None:
        self.url = url
        self.clock = clock or time.time_ns
        self._conns: list[Conn] = []
        self._free: queue.SimpleQueue[Conn] = queue.SimpleQueue()
        self._alert_lock = threading.Lock()
        self._alert_store: Any = None
        self._ingest_rate = IngestRate(monotonic or time.monotonic)
        #: (dimension, window, limit, offset, search) -> the values that page showed last
        self._shown: dict[tuple[Any, ...], tuple[str, ...]] = {}

    async def open(self) -> ClickHouseDashboard:
        """Connect (an absent store is created empty and migrated by the first connection) and return self."""
        first = await asyncio.to_thread(connect, self.url)
        rest = [await asyncio.to_thread(connect, self.url, readonly=True) for _ in range(POOL - 1)]
        self._conns = [first, *rest]
        self._free = queue.SimpleQueue()  # none of a closed opening's clients
        for conn in self._conns:
            self._free.put(conn)
        return self

    async def close(self) -> None:
        """Close the clients (idempotent); a query under way finishes first (each client's lock)."""
        conns, self._conns = self._conns, []
        with self._alert_lock:
            alerts, self._alert_store = self._alert_store, None
        for conn in conns:
            await asyncio.to_thread(conn.close)
        if alerts is not None:
            await asyncio.to_thread(alerts.close)

    def _tuples(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn = self._free.get()  # blocks this worker thread while every connection is busy
        try:
            return conn.tuples(sql, params)
        finally:
            self._free.put(conn)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        assert self._conns, "open() first"
        return await asyncio.to_thread(self._tuples, sql, params)

    def _now_s(self) -> int:
        return self.clock() // 1_000_000_000

    async def change_token(self) -> int:
        """Moves on every insert, delete or merge of the store's tables."""
        return int((await self._all(CHANGE_TOKEN))[0][0])

    async def overview(self) -> Overview:
        """Totals for the header; the ingest rate is spans stored per second since the last call.

        The all-time sums come from ``dim_all`` per endpoint (one row per endpoint, exact as the day rollups
        under retention and restatement), not from every day row of ``rollup_day``: 2,000 rows, not 680,000.
        """
        now = self._now_s()
        main, events = await asyncio.gather(
            self._all(
                "SELECT t.c, t.s, t.e,"
                " (SELECT sum(cost_nano) FROM rollup_minute WHERE service = '' AND bucket >= %s),"
                " (SELECT sum(items) FROM unpriced_usage), (SELECT count() FROM dead_letters FINAL)"
                " FROM (SELECT sum(cost_nano) AS c, sum(spans) AS s, sum(errors) AS e FROM dim_all"
                " WHERE dim = 'endpoint' AND service = '') AS t",
                (now - HOUR,),
            ),
            asyncio.to_thread(self._alerts, lambda a: a.count_events(), 0),
        )
        ((cost, spans, errors, hour, unpriced, dead),) = main
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

    async def dimension(
        self, dimension: str, window: str = "all", *, limit: int | None = None, offset: int = 0, search: str = ""
    ) -> DimSnapshot:
        """Per-feature / tenant / endpoint spend in ``window``, costliest first, with last-hour rate and sparkline.

        One page of ``limit`` values from ``offset`` (None: all) of those whose name contains ``search``
        (ASCII case folded, as on SQLite); the window's total and value count come with it. The
        per-service, last-hour and fully-loaded figures are read for the page's values only.
        """
        limit, offset = page_args(limit, offset)
        col = _COLUMNS[dimension]
        grain, back = WINDOWS[window]
        now = self._now_s()
        since = window_start(now, grain, back)
        needle = fold(search)
        sargs: list[Any]
        if back:  # a window: its buckets of the grain's rollups, summed per value
            k = f"toString({col})"
            src, sargs, present = f"rollup_{grain} WHERE bucket >= %s", [since], ""
        else:  # all time: ``dim_all``, one row per value (a few per value before parts merge)
            k = "value"
            src, sargs, present = "dim_all WHERE dim = %s", [col], " HAVING spans != 0"
        # one scan: the window's values with their sums, the counts and total over all of them (window
        # functions, before the search and the page cut them: one snapshot, so "others" is exact), then the page
        m = "toUInt8(position(lower(k), %s) > 0)" if needle else "toUInt8(1)"
        grouped = (
            f"SELECT {k} AS k, sum(cost_nano) AS c, sum(calls) AS calls, sum(spans) AS spans, sum(errors) AS errors,"
            " sum(unpriced) AS unpriced, sum(var_nano2) AS var, sum(requests) AS reqs, " + m + " AS m"
            f" FROM {src} AND service = '' GROUP BY k{present}"
        )
        page_sql = (
            "SELECT k, c, calls, spans, errors, unpriced, var, reqs, n, total, matched FROM (SELECT *,"
            f" count() OVER () AS n, sum(c) OVER () AS total, sum(m) OVER () AS matched FROM ({grouped}))"
            " WHERE m = 1 ORDER BY c DESC, k"
        )
        page_args_: list[Any] = [*([needle] if needle else []), *sargs]
        if limit is not None:
            page_sql += " LIMIT %s OFFSET %s"
            page_args_ += [limit, offset]
        elif offset:
            page_sql += " LIMIT 18446744073709551615 OFFSET %s"
            page_args_.append(offset)
        one = "" if back else ONE_THREAD  # dim_all: one row per value, grouped faster on one thread
        only = limit is not None or bool(needle)
        shown = (dimension, window, limit, offset, needle)
        guess = self._shown.get(shown, ()) if only else ()
        # The page's per-service rows, last hour and fully-loaded cost need its values: read them for the values
        # this page had last time beside the ranking (a live page mostly keeps its values), then for any new one.
        early = self._follow_ups(dimension, grain, col, k, src, sargs, back, since, now, guess if only else None)
        full, early_rows = await asyncio.gather(self._all(page_sql + one, page_args_), early)
        if full:
            n_values, total, matched = full[0][8:11]
        else:  # past the last page, or nothing matched: the counts alone
            ((n_values, total, matched),) = await self._all(
                f"SELECT count(), sum(c), sum(m) FROM ({grouped}){one}", [*([needle] if needle else []), *sargs]
            )
        page = [r[:8] for r in full]
        keys = [r[0] for r in page]
        services, minute, loaded = early_rows
        if only:
            self._remember(shown, tuple(keys))
            guessed = set(guess)
            missing = [key for key in keys if key not in guessed]
            if missing:
                more = await self._follow_ups(dimension, grain, col, k, src, sargs, back, since, now, missing)
                services, minute, loaded = services + more[0], minute + more[1], loaded + more[2]
            if guessed - set(keys):  # values that left the page: their rows are not the page's
                kept = set(keys)
                services = [r for r in services if r[0] in kept]
                minute = [r for r in minute if r[0] in kept]
                loaded = [r for r in loaded if r[0] in kept]
        rows = [(r[0], "", *r[1:]) for r in page] + services
        return dim_snapshot(dimension, window, now, rows, minute, loaded, total_nano=int(total or 0),
                            values=int(n_values), matched=int(matched or 0), offset=offset, search=search)  # fmt: skip

    def _remember(self, shown: tuple[Any, ...], keys: tuple[str, ...]) -> None:
        """The values a page showed (``dimension``'s guess for its next refresh); the latest few pages only."""
        self._shown.pop(shown, None)
        self._shown[shown] = keys
        while len(self._shown) > _SHOWN_PAGES:
            del self._shown[next(iter(self._shown))]

    async def _follow_ups(
        self,
        dimension: str,
        grain: str,
        col: str,
        k: str,
        src: str,
        sargs: list[Any],
        back: int,
        since: int,
        now: int,
        keys: Sequence[str] | None,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The per-service rows, last-hour minutes and fully-loaded cost of ``keys`` (None: of every value), at once."""
        if keys is not None and not keys:
            return [], [], []
        inside = f" AND {k} IN %s" if keys is not None else ""
        kin = f" AND toString({col}) IN %s" if keys is not None else ""
        kargs: list[Any] = [tuple(keys)] if keys is not None else []
        reads = [
            self._all(
                f"SELECT {k} AS k, toString(service) AS sv, sum(cost_nano), 0, 0, 0, 0, 0, 0 FROM {src}"
                f" AND service != ''{inside} GROUP BY k, sv",
                [*sargs, *kargs],
            ),
            self._all(
                f"SELECT toString({col}) AS k, bucket, sum(cost_nano) FROM rollup_minute WHERE service = ''"
                f" AND bucket >= %s{kin} GROUP BY k, bucket",
                [now - HOUR + MINUTE, *kargs],
            ),
        ]
        if dimension == "feature":
            if back:
                lin = " AND toString(feature) IN %s" if keys is not None else ""
                lsql = f"SELECT toString(feature) AS f, sum(cost_nano) FROM loaded_{grain} WHERE bucket >= %s"
                largs: list[Any] = [since]
            else:
                lin = " AND value IN %s" if keys is not None else ""
                lsql = "SELECT value AS f, sum(cost_nano) FROM dim_all WHERE dim = 'loaded' AND service = ''"
                largs = []
            reads.append(self._all(f"{lsql}{lin} GROUP BY f", [*largs, *kargs]))
        services, minute, *more = await asyncio.gather(*reads)
        return services, minute, more[0] if more else []

    async def requests(
        self, order: str = "recent", limit: int = 200, *, offset: int = 0, search: str = ""
    ) -> list[RequestRow]:
        """Most recent (``order="recent"``) or most expensive (``"cost"``) requests, one page, optionally searched."""
        lim, offset = page_args(limit, offset)
        if order == "cost":
            sql, params = request_rows(Filters(), lim or MAX_PAGE, "cost", offset, search=fold(search))
            rows = await self._all(sql, params)
        else:
            rows = await self._newest_requests(lim or MAX_PAGE, offset, fold(search))
        return [
            RequestRow(r[0], r[1] or "", r[2] or "", r[3] or "", int(r[4]), int(r[5]), int(r[6]), *map(int, r[7:10]))
            for r in rows
        ]

    async def _newest_requests(self, limit: int, offset: int, search: str) -> list[tuple[Any, ...]]:
        """The newest page from ``request_index``, reading back from the newest day only as far as the page needs.

        Exact by ``page_is_exact``; otherwise read further back.
        """
        newest = int((await self._all(NEWEST_DAY))[0][0] or 0)
        rows: list[tuple[Any, ...]] = []
        for since in since_days(newest):
            sql, params = request_rows(Filters(), limit, "recent", offset, search=search, since_day=since)
            rows = await self._all(sql, params)
            if page_is_exact(len(rows), limit, int(rows[-1][4]) if rows else None, since):
                break
        return rows

    async def request_tree(self, request_id: str) -> list[TreeNode]:
        """The call tree(s) of one request, with subtree costs (empty if the request is unknown)."""
        rows = await self._all(
            "SELECT span_id, parent_id, toString(feature), operation, start_ns, duration_ns, error, error_type,"
            " usage, cost_nano, unpriced, endpoint, user_id FROM spans WHERE request_id = %s"
            " ORDER BY start_ns, span_id",
            (request_id,),
        )
        return build_tree(rows)

    async def trends(self, days: int = 14, *, limit: int | None = None) -> TrendSnapshot:
        """Daily cost per feature for the last ``days`` days (today included); ``limit``: the top features only."""
        first = self._now_s() // DAY * DAY - (days - 1) * DAY
        src = "rollup_day WHERE service = '' AND bucket >= %s"
        if limit is None:
            rows = await self._all(
                f"SELECT toString(feature) AS f, bucket, sum(cost_nano) FROM {src} GROUP BY f, bucket", (first,)
            )
            return trend_snapshot(first, days, rows)
        ranked = await self._all(
            f"SELECT toString(feature) AS f, sum(cost_nano) AS c, count() OVER () FROM {src} GROUP BY f"
            " ORDER BY c DESC, f LIMIT %s",
            (first, int(limit)),
        )
        if not ranked:
            return trend_snapshot(first, days, [])
        rows, totals = await asyncio.gather(
            self._all(
                f"SELECT toString(feature) AS f, bucket, sum(cost_nano) FROM {src} AND toString(feature) IN %s"
                " GROUP BY f, bucket",
                (first, tuple(r[0] for r in ranked)),
            ),
            self._all(f"SELECT bucket, sum(cost_nano) FROM {src} GROUP BY bucket", (first,)),
        )
        return trend_top(first, days, rows, totals, int(ranked[0][2]))

    def _alerts(self, read: Callable[[Any], Any], default: Any) -> Any:
        """``read`` on the store's alert tables (``_alerts``), or ``default`` when they are not there yet.

        One read-only alert store is kept for the dashboard's life (a client per read cost more than the read).
        """
        from spendtrace.server.store.clickhouse._alerts import ClickHouseAlertStore

        with self._alert_lock:
            if self._alert_store is None:
                if not self._conns:
                    return default  # closed
                try:
                    self._alert_store = ClickHouseAlertStore(self.url, readonly=True)
                except StorageError:
                    return default
            store = self._alert_store
        try:
            return read(store)
        except StorageError:  # a store from before schema v5 (no alert tables): nothing to show
            return default

    async def alert_rules(self) -> list[AlertRuleRow]:
        """Every alert rule, by name, webhook URLs masked."""
        from spendtrace.server.model.alerts import mask_url  # webhook URLs carry secrets: never shown in full

        rules = await asyncio.to_thread(self._alerts, lambda a: a.list_rules(enabled_only=False), [])
        return [
            AlertRuleRow(
                r.id,
                r.name,
                r.kind,
                r.scope,
                r.scope_value,
                r.threshold_nano,
                r.window_minutes,
                r.cooldown_minutes,
                mask_url(r.webhook) if r.webhook else "",
                r.enabled,
            )
            for r in sorted(rules, key=lambda r: r.name)
        ]

    async def alert_events(self, limit: int = 200) -> list[AlertEventRow]:
        """The latest fired alerts, newest first."""
        events = await asyncio.to_thread(self._alerts, lambda a: a.latest_events(int(limit)), [])
        return [
            AlertEventRow(
                e.id,
                e.rule_name,
                e.fired_ns,
                e.scope,
                e.scope_value,
                e.value_nano,
                e.threshold_nano,
                e.message,
                e.delivery,
            )
            for e in events
        ]

    async def dead_letters(self, limit: int = 50) -> list[DeadLetterLine]:
        """The latest dead letters, newest first."""
        rows = await self._all(
            "SELECT received_ns, reason FROM dead_letters FINAL ORDER BY received_ns DESC LIMIT %s", (int(limit),)
        )
        return [DeadLetterLine(int(a), str(b)) for a, b in rows]

    async def unpriced(self, limit: int = 50) -> list[UnpricedLine]:
        """Usage that no price covered, most items first."""
        rows = await self._all(
            "SELECT key, toString(service) AS s, toString(feature) AS f, sum(items) AS n FROM unpriced_usage"
            " GROUP BY key, s, f HAVING n > 0 ORDER BY n DESC, key, s, f LIMIT %s",
            (int(limit),),
        )
        return [UnpricedLine(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]
