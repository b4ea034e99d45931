"""The dashboard's snapshots: what ``DashboardReads`` (``spendtrace.server.store.base``) returns to the TUI.

Immutable values the screens only render, and the pure helpers that shape query rows into them, so
every backend returns the same thing for the same data: ``dim_snapshot`` (a dimension table with its
last-hour rate and sparkline), ``trend_snapshot``, ``build_tree`` (a request's call tree with subtree
costs) and ``parse_usage``. No I/O and no database driver here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "DAY",
    "DIMENSIONS",
    "HOUR",
    "MAX_PAGE",
    "MINUTE",
    "SPARK_BINS",
    "WINDOWS",
    "AlertEventRow",
    "AlertRuleRow",
    "DeadLetterLine",
    "DimRow",
    "DimSnapshot",
    "Overview",
    "RequestRow",
    "TreeNode",
    "TrendSnapshot",
    "UnpricedLine",
    "UsageLine",
    "build_tree",
    "dim_snapshot",
    "fold",
    "page_args",
    "parse_usage",
    "trend_snapshot",
    "trend_top",
    "window_start",
]

MINUTE = 60
HOUR = 3600
DAY = 86400
#: Buckets in the "last hour" sparkline (3 minutes each).
SPARK_BINS = 20

#: The dimensions a dashboard table can show: feature, tenant (``user``) or endpoint.
DIMENSIONS: tuple[str, ...] = ("feature", "user", "endpoint")

#: Time window name -> (rollup grain, seconds back from now; 0 = all time).
WINDOWS: dict[str, tuple[str, int]] = {
    "1h": ("minute", HOUR),
    "24h": ("hour", DAY),
    "7d": ("day", 7 * DAY),
    "30d": ("day", 30 * DAY),
    "all": ("day", 0),
}


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
    """A dimension table (one page of it, costliest first) plus the service columns it needs.

    ``total_nano`` is the whole window's spend and ``values`` how many values spent in it, so what
    the page leaves out is exact: ``others_nano`` over ``others_values`` values. ``matched`` counts
    the values matching ``search`` (all of them without one); the page starts at ``offset`` of those.
    """

    dimension: str
    window: str
    rows: tuple[DimRow, ...]
    services: tuple[str, ...]
    total_nano: int
    values: int = 0
    matched: int = 0
    offset: int = 0
    search: str = ""

    @property
    def others_nano(self) -> int:
        """Spend in the window of every value not on this page (exact: the window total minus the page)."""
        return self.total_nano - sum(r.cost_nano for r in self.rows)

    @property
    def others_values(self) -> int:
        """How many values of the window are not on this page."""
        return self.values - len(self.rows)


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
    endpoint: str = ""
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class TrendSnapshot:
    """Daily cost per feature over ``days`` days ending today (UTC)."""

    days: tuple[int, ...]  # bucket epoch seconds, oldest first
    features: tuple[str, ...]  # by total, largest first
    cost: dict[str, tuple[int, ...]]  # feature -> cost per day
    others: tuple[int, ...] = ()  # cost per day of the features left out of ``features`` (a ``limit``)
    others_features: int = 0  # how many features that is


@dataclass(frozen=True, slots=True)
class AlertRuleRow:
    """One alert rule, as listed; ``webhook`` is masked (its tokens are secrets)."""

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
class AlertEventRow:
    """One fired alert, as listed."""

    id: int
    rule_name: str
    fired_ns: int
    scope: str
    scope_value: str
    value_nano: int
    threshold_nano: int | None
    message: str
    delivery: str


class UnpricedLine(NamedTuple):
    """Usage no price covered: the key, its service, the feature that used it and how many items."""

    key: str
    service: str
    feature: str
    items: int


class DeadLetterLine(NamedTuple):
    """A message the workers could not store: when it arrived and why."""

    received_ns: int
    reason: str


def window_start(now: int, grain: str, back: int) -> int:
    """First bucket (epoch s) of a window of ``back`` seconds ending now, aligned to the grain."""
    if not back:
        return 0
    size = {"minute": MINUTE, "hour": HOUR, "day": DAY}[grain]
    return (now - back) // size * size + size


class IngestRate:
    """Spans stored per second between two readings of the span count (the header's ingest rate)."""

    __slots__ = ("_last", "_monotonic")

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._last: tuple[float, int] | None = None

    def __call__(self, spans: int) -> float | None:
        """The rate since the previous call (``None`` on the first, or when no time passed)."""
        t = self._monotonic()
        last, self._last = self._last, (t, spans)
        if last is None or t <= last[0]:
            return None
        return max(0.0, (spans - last[1]) / (t - last[0]))


#: ``str.lower`` for ASCII letters only: what SQLite's ``lower()`` and ClickHouse's ``lower()`` do, so a
#: search matches the same values on every backend.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
#: The most rows a dashboard read returns in one page.
MAX_PAGE = 1000


def fold(text: str) -> str:
    """``text`` with ASCII letters lowered: the form a server-side search compares (a case-insensitive substring)."""
    return text.translate(_ASCII_LOWER)


def page_args(limit: int | None, offset: int) -> tuple[int | None, int]:
    """Check a page request: ``limit`` in 1..``MAX_PAGE`` (or None: every row), ``offset`` >= 0."""
    if limit is not None and not 1 <= int(limit) <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if int(offset) < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    return (None if limit is None else int(limit)), int(offset)


def dim_snapshot(
    dimension: str,
    window: str,
    now: int,
    rows: Iterable[Sequence[Any]],
    minute: Iterable[Sequence[Any]],
    loaded_rows: Iterable[Sequence[Any]],
    *,
    total_nano: int | None = None,
    values: int | None = None,
    matched: int | None = None,
    offset: int = 0,
    search: str = "",
) -> DimSnapshot:
    """Shape a dimension's query rows into its table.

    ``rows``: (key, service, cost_nano, calls, spans, errors, unpriced, var_nano2, requests) over the
    window, service '' for the key's totals and a service name for its per-service cost; ``minute``:
    (key, bucket epoch s, cost_nano) of the last hour's totals; ``loaded_rows``: (feature, fully-loaded
    cost_nano) over the window (features only). ``now`` is epoch seconds. When ``rows`` are one page,
    ``total_nano``, ``values`` and ``matched`` describe the whole window (default: the rows themselves).
    Keys found only in ``minute`` or ``loaded_rows`` (not on the page) are left out.
    """
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
        total_nano=sum(r.cost_nano for r in out) if total_nano is None else int(total_nano),
        values=len(out) if values is None else int(values),
        matched=len(out) if matched is None else int(matched),
        offset=offset,
        search=search,
    )


def trend_snapshot(first: int, days: int, rows: Iterable[Sequence[Any]], limit: int | None = None) -> TrendSnapshot:
    """Shape (feature, day bucket epoch s, cost_nano) rows into ``days`` daily columns from ``first``.

    With ``limit``, only the ``limit`` costliest features keep their own series; the rest are summed per day
    into ``others`` (so a chart of 10,000 features is 20 lines and an exact remainder).
    """
    buckets = tuple(first + i * DAY for i in range(days))
    cost: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    for feature, bucket, c in rows:
        idx = (int(bucket) - first) // DAY
        if 0 <= idx < days:
            cost[feature][idx] += int(c)
    features = sorted(cost, key=lambda f: (-sum(cost[f]), f))
    rest = features[limit:] if limit is not None else []
    others = tuple(sum(cost[f][i] for f in rest) for i in range(days)) if rest else ()
    features = features[:limit] if limit is not None else features
    return TrendSnapshot(days=buckets, features=tuple(features), cost={f: tuple(cost[f]) for f in features},
                         others=others, others_features=len(rest))  # fmt: skip


def trend_top(
    first: int,
    days: int,
    rows: Iterable[Sequence[Any]],
    day_totals: Iterable[Sequence[Any]],
    n_features: int,
) -> TrendSnapshot:
    """``trend_snapshot`` of the top features only, read as such: ``rows`` (feature, bucket, cost_nano) of
    those features, ``day_totals`` (bucket, cost_nano) of every feature, ``n_features`` how many there are.

    ``others`` is each day's total minus the top features' (exact), so a backend reads per-day rows of
    twenty features and one total per day instead of every feature's every day.
    """
    snap = trend_snapshot(first, days, rows)
    left = max(0, int(n_features) - len(snap.features))
    if not left:
        return snap
    totals = [0] * days
    for bucket, c in day_totals:
        idx = (int(bucket) - first) // DAY
        if 0 <= idx < days:
            totals[idx] += int(c)
    others = tuple(t - sum(snap.cost[f][i] for f in snap.features) for i, t in enumerate(totals))
    return TrendSnapshot(snap.days, snap.features, snap.cost, others=others, others_features=left)


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


def build_tree(rows: Iterable[Sequence[Any]]) -> list[TreeNode]:
    """Link spans (span_id, parent_id, feature, operation, start_ns, duration_ns, error, error_type,
    usage, cost_nano, unpriced[, endpoint, user_id]) into trees and add up subtree costs; orphans become roots."""
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
            endpoint=(r[11] or "") if len(r) > 11 else "",
            user_id=(r[12] or "") if len(r) > 12 else "",
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
