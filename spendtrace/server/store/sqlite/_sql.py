"""Building blocks of the query layer: the ``Query`` value, time parsing, rollup bucket plans, filters.

A query is data (SQL statements with their bound parameters, plus a pure function that turns the
fetched rows into the result), so the sync (sqlite3) and async (aiosqlite) runners execute the
very same SQL. User-supplied names only ever travel as bound parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

from spendtrace.errors import ConfigError
from spendtrace.server.model import Row, TimeLike

__all__ = [
    "DAY",
    "HOUR",
    "MINUTE",
    "NANO",
    "Filters",
    "Query",
    "Row",
    "Segment",
    "TimeLike",
    "coarsen",
    "dash_dim",
    "day_start",
    "iso_ns",
    "plan_segments",
    "rollup_source",
    "rollup_union",
    "to_ns",
    "usd",
]

T = TypeVar("T")

NANO = 1_000_000_000
MINUTE, HOUR, DAY = 60, 3600, 86400


@dataclass(frozen=True)
class Query(Generic[T]):
    """SQL statements run in order inside one read snapshot, and the function that shapes their rows."""

    steps: tuple[tuple[str, tuple[Any, ...]], ...]
    post: Callable[[list[list[Row]]], T]


def usd(nano: int | float | None) -> float:
    """Nano-dollars to a float of USD, for display and JSON only."""
    return (nano or 0) / NANO


_I64_MAX = 2**63 - 1
_I64_MIN = -(2**63)


def to_ns(value: TimeLike, *, what: str = "time") -> int | None:
    """A time filter as epoch ns: 'YYYY-MM-DD' / ISO strings, date, datetime (naive = UTC), or epoch ns."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a date, datetime or epoch ns, got {value!r}")
    if isinstance(value, int | float):
        if value != value:  # NaN
            raise ConfigError(f"{what}: {value!r} is not a time")
        # SQLite binds 64-bit integers: a bound past either end means "unbounded" on that side
        return _I64_MAX if value >= _I64_MAX else _I64_MIN if value <= _I64_MIN else int(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return to_ns(int(dt.timestamp()) * NANO + dt.microsecond * 1000, what=what)
    if isinstance(value, date):
        return to_ns(int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()) * NANO, what=what)
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return to_ns(date.fromisoformat(text))
            return to_ns(datetime.fromisoformat(text))
        except ValueError:
            raise ConfigError(f"{what}: {value!r} is not a date (YYYY-MM-DD) or ISO datetime") from None
    raise ConfigError(f"{what}: expected a date, datetime or epoch ns, got {type(value).__name__}")


def iso_ns(ns: int | None) -> str | None:
    """Epoch ns as an ISO-8601 UTC string (second precision), or None."""
    if ns is None:
        return None
    return datetime.fromtimestamp(ns // NANO, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def day_start(ns: int) -> int:
    """Epoch seconds of the UTC midnight at or before ``ns``."""
    return (ns // NANO) // DAY * DAY


@dataclass(frozen=True)
class Segment:
    """Buckets ``lo <= bucket < hi`` (epoch seconds; None = unbounded) of one rollup granularity."""

    grain: str  # "minute" | "hour" | "day"
    lo: int | None
    hi: int | None


def _ceil(x: int, step: int) -> int:
    return -((-x) // step) * step


def plan_segments(start_ns: int | None, end_ns: int | None) -> list[Segment]:
    """Cover [start, end) with the fewest rollup buckets: whole days, then hours, then minutes at the edges.

    Rollups have minute resolution, so a minute bucket counts when its start lies in [start, end):
    exact when start and end fall on whole minutes (dates always do).
    """
    s = None if start_ns is None else _ceil(math.ceil(start_ns / NANO), MINUTE)
    e = None if end_ns is None else _ceil(math.ceil(end_ns / NANO), MINUTE)
    if s is not None and e is not None and s >= e:
        return []
    d_lo = None if s is None else _ceil(s, DAY)
    d_hi = None if e is None else e // DAY * DAY
    if d_lo is None or d_hi is None or d_lo < d_hi:
        segs = [Segment("day", d_lo, d_hi)]
        if s is not None and d_lo is not None:
            segs += _hours_and_minutes(s, d_lo)
        if e is not None and d_hi is not None:
            segs += _hours_and_minutes(d_hi, e)
        return [g for g in segs if g.lo is None or g.hi is None or g.lo < g.hi]
    assert s is not None and e is not None
    return _hours_and_minutes(s, e)


def _hours_and_minutes(s: int, e: int) -> list[Segment]:
    """Cover [s, e) (whole minutes, less than a day or so) with hours in the middle and minutes at the ends."""
    h_lo, h_hi = _ceil(s, HOUR), e // HOUR * HOUR
    if h_lo < h_hi:
        segs = [Segment("hour", h_lo, h_hi), Segment("minute", s, h_lo), Segment("minute", h_hi, e)]
    else:
        segs = [Segment("minute", s, e)]
    return [g for g in segs if g.lo is not None and g.hi is not None and g.lo < g.hi]


@dataclass(frozen=True)
class Filters:
    """The optional filters every aggregate query takes; names are bound as parameters, never spliced."""

    start_ns: int | None = None
    end_ns: int | None = None
    feature: str | None = None
    user_id: str | None = None
    endpoint: str | None = None
    service: str | None = None

    @classmethod
    def of(
        cls,
        start: TimeLike = None,
        end: TimeLike = None,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
    ) -> Filters:
        """Parse the user-facing filter arguments."""
        return cls(to_ns(start, what="start"), to_ns(end, what="end"), feature, user_id, endpoint, service)

    def dims(self, *, service: bool) -> tuple[list[str], list[Any]]:
        """WHERE terms and parameters for the dimension columns of a rollup table."""
        terms: list[str] = []
        params: list[Any] = []
        for col, val in (("feature", self.feature), ("user_id", self.user_id), ("endpoint", self.endpoint)):
            if val is not None:
                terms.append(f"{col} = ?")
                params.append(val)
        if service:
            terms.append("service = ?")
            params.append(self.service or "")
        return terms, params


def rollup_union(
    select: str,
    table: str,
    segments: Sequence[Segment],
    terms: Sequence[str],
    params: Sequence[Any],
    group: str = "",
) -> tuple[str, list[Any]]:
    """``select`` (a column list) from ``{table}_{grain}`` for each segment, glued with UNION ALL.

    ``table`` is ``rollup`` or ``loaded``; ``terms``/``params`` are extra WHERE conditions and
    ``group`` an optional GROUP BY list for each part. With no segments (an empty time range) the
    result is a query returning no rows.
    """
    parts: list[str] = []
    out: list[Any] = []
    for seg in segments or [Segment("day", 0, 0)]:
        where = list(terms)
        seg_params: list[Any] = list(params)
        if seg.lo is not None:
            where.append("bucket >= ?")
            seg_params.append(seg.lo)
        if seg.hi is not None:
            where.append("bucket < ?")
            seg_params.append(seg.hi)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        grouping = f" GROUP BY {group}" if group else ""
        parts.append(f"SELECT {select} FROM {table}_{seg.grain}{clause}{grouping}")
        out += seg_params
    return " UNION ALL ".join(parts), out


_DIMS = ("feature", "user_id", "endpoint")


def dash_dim(f: Filters, group: str | None) -> str | None:
    """The ``dash_*`` dimension that can answer a query grouped by ``group`` under ``f``'s name filters, if any.

    Dashboard rollups keep one dimension at a time, so they serve a query whose grouping and name
    filters all concern the same dimension (or a total with at most one name filter).
    """
    named = [d for d in _DIMS if getattr(f, d) is not None]
    if group is not None:
        return group if all(d == group for d in named) else None
    if len(named) > 1:
        return None
    return named[0] if named else "feature"


#: The service names present, by a loose index scan (one primary-key seek per service) of dash_day.
_SERVICES = (
    "WITH RECURSIVE sv(s) AS (SELECT MIN(service) FROM dash_day WHERE dim = 'endpoint' AND service > '' "
    "UNION ALL SELECT (SELECT MIN(service) FROM dash_day WHERE dim = 'endpoint' AND service > sv.s) "
    "FROM sv WHERE sv.s IS NOT NULL) SELECT s FROM sv WHERE s IS NOT NULL"
)


def rollup_source(
    f: Filters,
    *,
    group: str | None,
    sums: Sequence[str],
    split: bool,
    dash: bool,
    segments: Sequence[Segment] | None = None,
    by_service: bool = False,
    by_bucket: bool = False,
) -> tuple[str, list[Any]]:
    """One query summing the rollup rows of ``f``'s time range: ``k [, service] [, bucket], b0, b1, <sums>``.

    ``k`` is the ``group`` dimension's value ('' with no group), ``b0``/``b1`` the first and last
    bucket, and rows are grouped by ``k`` (and ``service`` / ``bucket`` when asked). Each time
    segment is summed on its own (on ``dash_*`` along the primary key, with no sort) and the few
    rows per segment are summed again; a single segment is the whole query. Rows are the
    span-level (``service = ''``) ones, or a ``service`` filter's, or with ``split`` every
    per-service row. Hour and day buckets come from ``dash_*`` when ``dash`` is true and one
    dimension serves the query, minutes from ``rollup_minute``.
    """
    segs = plan_segments(f.start_ns, f.end_ns) if segments is None else segments
    ddim = dash_dim(f, group) if dash else None
    agg = ", ".join(f"SUM({c}) AS {c}" for c in sums)
    parts: list[str] = []
    params: list[Any] = []
    for seg in segs or [Segment("day", 0, 0)]:
        terms: list[str] = []
        seg_params: list[Any] = []
        if ddim is not None and seg.grain != "minute":
            table, key = f"dash_{seg.grain}", ("value" if group else "''")
            terms.append("dim = ?")
            seg_params.append(ddim)
            names = [("value", getattr(f, ddim))]
            bounded = seg.lo is not None or seg.hi is not None  # then seek per service: a range would scan
            services = f"service IN ({_SERVICES})" if bounded else "service > ''"
        else:
            table, key = f"rollup_{seg.grain}", (group or "''")
            names = [(d, getattr(f, d)) for d in _DIMS]
            services = "service > ''"
        if split:
            terms.append(services)
        else:
            terms.append("service = ?")
            seg_params.append(f.service or "")
        for col, val in names:
            if val is not None:
                terms.append(f"{col} = ?")
                seg_params.append(val)
        if seg.lo is not None:
            terms.append("bucket >= ?")
            seg_params.append(seg.lo)
        if seg.hi is not None:
            terms.append("bucket < ?")
            seg_params.append(seg.hi)
        keys = ["service"] if by_service else []
        if group:
            keys.append(key)
        if by_bucket:
            keys.append("bucket")
        extra = (["service"] if by_service else []) + (["bucket"] if by_bucket else [])
        select = ", ".join([f"{key} AS k", *extra, "MIN(bucket) AS b0", "MAX(bucket) AS b1", agg])
        grouping = f" GROUP BY {', '.join(keys)}" if keys else ""
        parts.append(f"SELECT {select} FROM {table} WHERE {' AND '.join(terms)}{grouping}")
        params += seg_params
    if len(parts) == 1:
        return parts[0], params
    outer_keys = ["k"] + (["service"] if by_service else []) + (["bucket"] if by_bucket else [])
    outer = ", ".join([*outer_keys, "MIN(b0) AS b0", "MAX(b1) AS b1", agg])
    regroup = f" GROUP BY {', '.join(outer_keys)}" if group or by_service or by_bucket else ""
    return f"SELECT {outer} FROM ({' UNION ALL '.join(parts)}){regroup}", params


def coarsen(f: Filters, minute_floor: int | None, hour_floor: int | None) -> Filters:
    """Round bounds older than the oldest stored minute (hour) rollup down to their hour (day).

    Retention keeps minute rollups for days and hour rollups for a year, so an old bound has hour
    (then day) resolution; rounding each bound on its own keeps [a, b) + [b, c) = [a, c).
    """

    def fix(ns: int | None) -> int | None:
        if ns is None:
            return None
        s = _ceil(math.ceil(ns / NANO), MINUTE)
        if minute_floor is None or s < minute_floor:
            s = s // HOUR * HOUR
        if hour_floor is None or s < hour_floor:
            s = s // DAY * DAY
        return min(max(s * NANO, _I64_MIN), _I64_MAX)  # a bound rounded past either end stays unbounded

    return replace(f, start_ns=fix(f.start_ns), end_ns=fix(f.end_ns))
