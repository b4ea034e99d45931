"""Read-side data access for the TUI: async queries over the SQLite store, returning plain snapshots.

No textual import here (STYLE.md): the screens ask this module for immutable snapshots and only
render them. Every query reads the rollup tables (``spendtrace/storage/_ddl.py``), so a refresh
costs the same with 5,000 or 5,000,000 raw spans; raw ``spans`` are read only for one request's
tree. aiosqlite runs the SQL on its own thread, so the UI thread never waits on the database.
``data_version`` (SQLite's ``PRAGMA data_version``) changes only when another connection commits,
which is how the app refreshes only when something changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DIMENSIONS",
    "WINDOWS",
    "AlertEvent",
    "AlertRuleRow",
    "DimRow",
    "DimSnapshot",
    "Overview",
    "RequestRow",
    "Store",
    "TreeNode",
    "TrendSnapshot",
    "UsageLine",
]

MINUTE = 60
HOUR = 3600
DAY = 86400
#: Buckets in the "last hour" sparkline (3 minutes each).
SPARK_BINS = 20

#: Dimension name -> rollup column.
DIMENSIONS: dict[str, str] = {"feature": "feature", "user": "user_id", "endpoint": "endpoint"}

#: Time window name -> (rollup grain, seconds back from now; 0 = all time).
WINDOWS: dict[str, tuple[str, int]] = {
    "1h": ("minute", HOUR),
    "24h": ("hour", DAY),
    "7d": ("day", 7 * DAY),
    "30d": ("day", 30 * DAY),
    "all": ("day", 0),
}

Clock = Callable[[], int]


@dataclass(frozen=True, slots=True)
class DimRow:
    """One feature, tenant or endpoint: spend in the window, last-hour rate and sparkline."""

    key: str
    cost_nano: int
    loaded_nano: int | None  # fully-loaded cost (features only)
    rate_nano_h: int  # spend in the last hour
    calls: float
    spans: int
    errors: int
    unpriced: int
    var_nano2: float
    requests: int
    services: dict[str, int]
    spark: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DimSnapshot:
    """A dimension table plus the service columns it needs."""

    dimension: str
    window: str
    rows: tuple[DimRow, ...]
    services: tuple[str, ...]
    total_nano: int


@dataclass(frozen=True, slots=True)
class Overview:
    """Header figures: totals, spend rate, ingest rate and what is being left out."""

    total_nano: int
    last_hour_nano: int
    spans: int
    ingest_per_s: float | None
    unpriced_items: int
    dead_letters: int
    alert_events: int
    errors: int


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One request of the requests table."""

    request_id: str
    endpoint: str
    user_id: str
    root_feature: str
    start_ns: int
    end_ns: int
    cost_nano: int
    spans: int
    errors: int
    unpriced: int


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One usage item of a span, as priced at ingest."""

    key: str
    service: str
    units: str
    cost_nano: int
    priced: bool


@dataclass(slots=True)
class TreeNode:
    """One span in a request's call tree with its direct and subtree cost."""

    span_id: str
    parent_id: str | None
    feature: str
    operation: str
    depth: int
    start_ns: int
    duration_ns: int
    error: bool
    error_type: str
    direct_nano: int
    subtree_nano: int
    unpriced: int
    usage: list[UsageLine]
    children: list[TreeNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TrendSnapshot:
    """Daily cost per feature over ``days`` days ending today (UTC)."""

    days: tuple[int, ...]  # bucket epoch seconds, oldest first
    features: tuple[str, ...]  # by total, largest first
    cost: dict[str, tuple[int, ...]]  # feature -> cost per day


@dataclass(frozen=True, slots=True)
class AlertRuleRow:
    """One alert rule."""

    id: int
    name: str
    kind: str
    scope: str
    scope_value: str
    threshold_nano: int | None
    window_minutes: int | None
    cooldown_minutes: int
    webhook: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One fired alert."""

    id: int
    rule_name: str
    fired_ns: int
    scope: str
    scope_value: str
    value_nano: int
    threshold_nano: int | None
    message: str
    delivery: str


def _wall_ns() -> int:
    return time.time_ns()


def _units(item: dict[str, Any]) -> str:
    parts = []
    if item.get("count"):
        c = float(item["count"])
        parts.append(f"×{c:g}")
    for name, short in (
        ("input_tokens", "in"),
        ("output_tokens", "out"),
        ("cache_read_tokens", "cache-r"),
        ("cache_write_tokens", "cache-w"),
        ("cache_write_1h_tokens", "cache-w1h"),
    ):
        if item.get(name):
            parts.append(f"{int(item[name]):,} {short}")
    if item.get("bytes"):
        parts.append(f"{int(item['bytes']):,} B")
    if item.get("gb_seconds"):
        parts.append(f"{float(item['gb_seconds']):g} GB-s")
    return " ".join(parts)


_USAGE_FIELDS = (
    "key",
    "service",
    "count",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "bytes",
    "gb_seconds",
)


def parse_usage(raw: str | None) -> list[UsageLine]:
    """The ``spans.usage`` JSON as display lines; tolerant of dict or array-like items."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    out = []
    for it in items if isinstance(items, list) else []:
        if isinstance(it, list):  # array_like UsageItem, possibly followed by pricing fields
            it = dict(zip(_USAGE_FIELDS, it, strict=False))
        if not isinstance(it, dict):
            continue
        cost = it.get("cost_nano", 0) or 0
        priced = bool(it.get("priced", cost > 0 or "cost_nano" in it))
        out.append(
            UsageLine(
                key=str(it.get("key", "?")),
                service=str(it.get("service", "") or ""),
                units=_units(it),
                cost_nano=int(cost),
                priced=priced,
            )
        )
    return out


def build_tree(rows: Iterable[sqlite3.Row | tuple[Any, ...]]) -> list[TreeNode]:
    """Link spans (span_id, parent_id, feature, operation, start_ns, duration_ns, error, error_type,
    usage, cost_nano, unpriced) into trees and add up subtree costs; orphans become roots."""
    nodes: dict[str, TreeNode] = {}
    order: list[TreeNode] = []
    for r in rows:
        n = TreeNode(
            span_id=r[0],
            parent_id=r[1],
            feature=r[2],
            operation=r[3] or "",
            depth=0,
            start_ns=r[4],
            duration_ns=r[5],
            error=bool(r[6]),
            error_type=r[7] or "",
            direct_nano=int(r[9]),
            subtree_nano=0,
            unpriced=int(r[10]),
            usage=parse_usage(r[8]),
        )
        nodes[n.span_id] = n
        order.append(n)
    roots = []
    for n in order:
        parent = nodes.get(n.parent_id) if n.parent_id else None
        if parent is None or parent is n:
            roots.append(n)
        else:
            parent.children.append(n)

    def walk(node: TreeNode, depth: int) -> int:
        node.depth = depth
        node.subtree_nano = node.direct_nano + sum(walk(c, depth + 1) for c in node.children)
        return node.subtree_nano

    for root in roots:
        walk(root, 0)
    return roots


class Store:
    """An async read connection to one spendtrace database, with the TUI's queries.

    ``clock`` gives wall-clock epoch nanoseconds ("now" for windows and sparklines) and
    ``monotonic`` times the ingest-rate measurement; both are injectable for tests.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        clock: Clock = _wall_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db_path = Path(db_path)
        self.clock = clock
        self._monotonic = monotonic
        self._conn: Any = None
        self._side: Any = None
        self._last_spans: tuple[float, int] | None = None
        self._dash = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> Store:
        """Open (creating an empty store if the file does not exist yet) and return self.

        Two read-only connections, each with its own aiosqlite thread: a dimension refresh runs its
        sparkline query on the second while the first sums the window, and SQLite releases the GIL
        while it works, so on two cores the two run side by side.
        """
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await self._connect()  # creates / migrates an empty store if needed
        self._side = await self._connect()
        return self

    async def _connect(self) -> Any:
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
        assert conn is not None, "Store.open() first"
        # one hop to aiosqlite's thread and back instead of three (execute, fetchall, close): a live
        # refresh makes about a dozen queries, and on a busy machine each hop costs a fraction of a ms
        return list(await conn.execute_fetchall(sql, tuple(params)))

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> tuple[Any, ...]:
        rows = await self._all(sql, params)
        return rows[0] if rows else ()

    # -- queries -----------------------------------------------------------------------------

    async def data_version(self) -> int:
        """A number that changes whenever another connection commits to the database."""
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
        t = self._monotonic()
        rate = None
        if self._last_spans is not None and t > self._last_spans[0]:
            rate = max(0.0, (spans - self._last_spans[1]) / (t - self._last_spans[0]))
        self._last_spans = (t, spans)
        return Overview(
            total_nano=int(cost),
            last_hour_nano=int(hour),
            spans=spans,
            ingest_per_s=rate,
            unpriced_items=int(unpriced),
            dead_letters=int(dead),
            alert_events=int(events),
            errors=int(errors),
        )

    async def dimension(self, dimension: str, window: str = "all") -> DimSnapshot:
        """Per-feature / tenant / endpoint spend in ``window``, with last-hour rate and sparkline."""
        col = DIMENSIONS[dimension]
        grain, back = WINDOWS[window]
        now = self._now_s()
        since = _window_start(now, grain, back)
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
        loaded = {f: int(c) for f, c in loaded_rows}
        totals: dict[str, list[Any]] = {}
        services: dict[str, dict[str, int]] = defaultdict(dict)
        for key, svc, cost, calls, spans, errs, unp, var, reqs in rows:
            if svc == "":
                totals[key] = [int(cost), float(calls), int(spans), int(errs), int(unp), float(var), int(reqs)]
            else:
                services[key][svc] = int(cost)
        hour_cost: dict[str, int] = defaultdict(int)
        spark: dict[str, list[int]] = defaultdict(lambda: [0] * SPARK_BINS)
        first = now - HOUR + MINUTE
        for key, bucket, cost in minute:
            hour_cost[key] += int(cost)
            idx = min(SPARK_BINS - 1, max(0, int((bucket - first) * SPARK_BINS // HOUR)))
            spark[key][idx] += int(cost)
        out = []
        for key in set(totals) | set(services):
            t = totals.get(key, [0, 0.0, 0, 0, 0, 0.0, 0])
            out.append(
                DimRow(
                    key=key,
                    cost_nano=t[0],
                    loaded_nano=loaded.get(key, t[0]) if dimension == "feature" else None,
                    rate_nano_h=hour_cost.get(key, 0),
                    calls=t[1],
                    spans=t[2],
                    errors=t[3],
                    unpriced=t[4],
                    var_nano2=t[5],
                    requests=t[6],
                    services=dict(services.get(key, {})),
                    spark=tuple(spark[key]) if key in spark else (0,) * SPARK_BINS,
                )
            )
        out.sort(key=lambda r: (-r.cost_nano, r.key))
        all_services = sorted({s for d in services.values() for s in d})
        return DimSnapshot(
            dimension=dimension,
            window=window,
            rows=tuple(out),
            services=tuple(all_services),
            total_nano=sum(r.cost_nano for r in out),
        )

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
            " cost_nano, unpriced FROM spans WHERE request_id = ? ORDER BY start_ns, span_id",
            (request_id,),
        )
        return build_tree(rows)

    async def trends(self, days: int = 14) -> TrendSnapshot:
        """Daily cost per feature for the last ``days`` days (today included)."""
        today = self._now_s() // DAY * DAY
        first = today - (days - 1) * DAY
        buckets = tuple(first + i * DAY for i in range(days))
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
        rows = await self._all(sql, (first,))
        cost: dict[str, list[int]] = defaultdict(lambda: [0] * days)
        for feature, bucket, c in rows:
            idx = (int(bucket) - first) // DAY
            if 0 <= idx < days:
                cost[feature][idx] += int(c)
        features = sorted(cost, key=lambda f: (-sum(cost[f]), f))
        return TrendSnapshot(days=buckets, features=tuple(features), cost={f: tuple(cost[f]) for f in features})

    async def alert_rules(self) -> list[AlertRuleRow]:
        """Every alert rule, by name."""
        rows = await self._all(
            "SELECT id, name, kind, scope, scope_value, threshold_nano, window_minutes, cooldown_minutes,"
            " coalesce(webhook, ''), enabled FROM alert_rules ORDER BY name"
        )
        from spendtrace.server.alerts.rules import mask_url  # webhook URLs carry secrets: never shown in full

        return [
            AlertRuleRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]), mask_url(r[8]) if r[8] else "",
                         bool(r[9]))
            for r in rows
        ]

    async def alert_events(self, limit: int = 200) -> list[AlertEvent]:
        """The latest fired alerts, newest first."""
        rows = await self._all(
            "SELECT id, rule_name, fired_ns, scope, scope_value, value_nano, threshold_nano, message, delivery"
            " FROM alert_events ORDER BY fired_ns DESC, id DESC LIMIT ?",
            (int(limit),),
        )
        return [AlertEvent(*r) for r in rows]

    async def dead_letters(self, limit: int = 50) -> list[tuple[int, str]]:
        """(received_ns, reason) of the latest dead letters."""
        rows = await self._all(
            "SELECT received_ns, reason FROM dead_letters ORDER BY received_ns DESC LIMIT ?", (int(limit),)
        )
        return [(int(a), str(b)) for a, b in rows]

    async def unpriced(self, limit: int = 50) -> list[tuple[str, str, str, int]]:
        """(key, service, feature, items) of usage that no price covered, most items first."""
        rows = await self._all(
            "SELECT key, service, feature, items FROM unpriced_usage ORDER BY items DESC, key LIMIT ?", (int(limit),)
        )
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]


def _window_start(now: int, grain: str, back: int) -> int:
    """First bucket (epoch s) of a window of ``back`` seconds ending now, aligned to the grain."""
    if not back:
        return 0
    size = {"minute": MINUTE, "hour": HOUR, "day": DAY}[grain]
    return (now - back) // size * size + size
