"""The read queries in ClickHouse SQL; each returns a ``Query`` whose rows the SQLite query layer shapes.

The result shapes (dict keys, USD beside nano-dollars, zero-filled trends, trees) are defined once, by
the post-processors of ``spendtrace.server.store.sqlite._queries`` / ``_raw``, which are pure Python
over named result rows: here only the SQL differs, producing the columns those post-processors read.

Rollup targets merge lazily, so every rollup read aggregates: ``sum`` of the money and counts
of the head-span request counts, over the union of the day / hour / minute buckets that cover
the range (``plan_segments``), grouped by the dimension asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from spendtrace.server.store.sqlite import _queries as sq
from spendtrace.server.store.sqlite import _raw as sraw
from spendtrace.server.store.sqlite._sql import (
    DAY,
    MINUTE,
    NANO,
    Filters,
    Query,
    Row,
    Segment,
    day_start,
    plan_segments,
)

__all__ = [
    "ONE_THREAD",
    "aggregate",
    "aggregate_by_service",
    "aggregate_top_all_time",
    "cost_trend",
    "cost_trend_by_feature",
    "dead_letters",
    "feature_breakdown",
    "feature_timeseries",
    "ingest_stats",
    "request_costs",
    "request_rows",
    "spend_rate",
    "subtree",
    "total",
    "transactions",
    "unpriced_usage",
]

#: ``dim_all`` reads run on one thread: the table is one row per value (a few before parts merge), 69,000
#: rows for 60,787 tenants, and one thread groups them in about half the time of the default pool on the
#: benchmark's two shared cores (all-time Tenants page 46 -> 19 ms, the top 100 tenants 29 -> 12 ms, same run).
ONE_THREAD = " SETTINGS max_threads = 1"

_DIMS = ("feature", "user_id", "endpoint")
_SUMS = {
    "cost_nano": "sum(cost_nano)",
    "calls": "sum(calls)",
    "spans": "sum(spans)",
    "errors": "sum(errors)",
    "unpriced": "sum(unpriced)",
    "var_nano2": "sum(var_nano2)",
    "requests": "sum(requests)",
}
_ALL = tuple(_SUMS)
_Steps = tuple[tuple[str, tuple[Any, ...]], ...]


def _segment_where(seg: Segment) -> tuple[list[str], list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    if seg.lo is not None:
        terms.append("bucket >= %s")
        params.append(seg.lo)
    if seg.hi is not None:
        terms.append("bucket < %s")
        params.append(seg.hi)
    return terms, params


def rollup_source(
    f: Filters,
    *,
    group: str | None,
    sums: Sequence[str],
    split: bool,
    segments: Sequence[Segment] | None = None,
    by_service: bool = False,
    by_bucket: bool = False,
    table: str = "rollup",
) -> tuple[str, list[Any]]:
    """``k [, service] [, bucket], b0, b1, <sums>`` over ``f``'s range, like the SQLite ``rollup_source``.

    ``k`` is the ``group`` dimension's value ('' with no group). Rows are the span-level
    (``service = ''``) ones, or a ``service`` filter's, or with ``split`` every per-service row.
    """
    segs = plan_segments(f.start_ns, f.end_ns) if segments is None else segments
    parts: list[str] = []
    params: list[Any] = []
    for seg in segs or [Segment("day", 0, 0)]:
        terms, seg_params = _segment_where(seg)
        if table == "rollup":
            if split:
                terms.append("service != ''")
            else:
                terms.append("service = %s")
                seg_params.append(f.service or "")
            for col in _DIMS:
                val = getattr(f, col)
                if val is not None:
                    terms.append(f"{col} = %s")
                    seg_params.append(val)
        elif f.feature is not None:
            terms.append("feature = %s")
            seg_params.append(f.feature)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        parts.append(f"SELECT * FROM {table}_{seg.grain}{where}")
        params += seg_params
    keys = (["service"] if by_service else []) + (["bucket"] if by_bucket else [])
    select = [f"{group or chr(39) * 2} AS k", *keys, "min(bucket) AS b0", "max(bucket) AS b1"]
    select += [f"{_SUMS[c]} AS {c}" for c in sums]
    grouping = ["k", *keys] if group else keys
    tail = f" GROUP BY {', '.join(grouping)}" if grouping else ""
    return f"SELECT {', '.join(select)} FROM ({' UNION ALL '.join(parts)}){tail}", params


def _swap(query: Query[Any], steps: Sequence[tuple[str, Sequence[Any]]]) -> Query[Any]:
    """``query`` (a SQLite query) with its SQL replaced by ``steps``: the same post-processor."""
    assert len(steps) == len(query.steps), "one ClickHouse statement per SQLite statement"
    return Query(tuple((sql, tuple(p)) for sql, p in steps), query.post)


def aggregate(dim: str, f: Filters) -> Query[list[Row]]:
    """``_queries.aggregate`` on ClickHouse."""
    steps = [rollup_source(f, group=dim, sums=_ALL, split=False)]
    if f.service is None:
        steps.append(rollup_source(f, group=dim, sums=("cost_nano", "unpriced"), split=True, by_service=True))
    return _swap(sq.aggregate(dim, f, dash=False), steps)


def aggregate_top_all_time(dim: str, limit: int, keys: Sequence[str] = ()) -> Query[list[Row]]:
    """``_queries.aggregate_top_all_time`` on ClickHouse: the top ``limit`` values of all time from ``dim_all``.

    Step 1 ranks them; steps 2 and 3 (their per-service rows from ``dim_all``, their first and last day
    from ``dim_days``) read ``keys``, the values step 1 returned: the caller runs step 1 first and
    builds the query again with them, so the ranking is not computed three times. The rows are
    ``aggregate``'s, shaped by its own post-processor.
    """
    assert dim in _DIMS
    sums = ", ".join(f"{expr} AS {c}" for c, expr in _SUMS.items())
    steps = (
        (
            f"SELECT value AS k, {sums} FROM dim_all WHERE dim = %s AND service = '' GROUP BY k HAVING spans != 0"
            f" ORDER BY cost_nano DESC, k LIMIT %s{ONE_THREAD}",
            (dim, limit),
        ),
        (
            "SELECT value AS k, toString(service) AS service, sum(cost_nano) AS cost_nano, sum(unpriced) AS unpriced"
            f" FROM dim_all WHERE dim = %s AND service != '' AND value IN %s GROUP BY k, service{ONE_THREAD}",
            (dim, tuple(keys)),
        ),
        (  # from dim_days by key; days before the day rollups' first are ones retention is deleting
            "SELECT value AS k, min(bucket) AS b0, max(bucket) AS b1 FROM dim_days WHERE dim = %s AND value IN %s"
            " AND bucket >= (SELECT min(bucket) FROM rollup_day) GROUP BY k",
            (dim, tuple(keys)),
        ),
    )
    return _swap(sq.aggregate_top_all_time(dim, limit), steps)


def aggregate_by_service(f: Filters) -> Query[list[Row]]:
    """``_queries.aggregate_by_service`` on ClickHouse."""
    step = rollup_source(f, group=None, sums=_ALL, split=f.service is None, by_service=True)
    return _swap(sq.aggregate_by_service(f, dash=False), [step])


def total(f: Filters) -> Query[Row]:
    """``_queries.total`` on ClickHouse."""
    return _swap(sq.total(f, dash=False), [rollup_source(f, group=None, sums=_ALL, split=False)])


def feature_breakdown(f: Filters) -> Query[list[Row]]:
    """``_queries.feature_breakdown`` on ClickHouse (raw spans with a user or endpoint filter)."""
    if f.user_id is not None or f.endpoint is not None:
        return _breakdown_from_spans(f)
    segs = plan_segments(f.start_ns, f.end_ns)
    d_sql, d_params = rollup_source(f, group="feature", sums=_ALL, split=False, segments=segs)
    l_sql, l_params = rollup_source(
        replace(f, user_id=None, endpoint=None, service=None),
        group="feature",
        sums=("cost_nano", "calls", "spans", "var_nano2"),
        split=False,
        segments=segs,
        table="loaded",
    )
    steps = [
        (f"SELECT k AS feature, * EXCEPT (k) FROM ({d_sql})", d_params),
        (f"SELECT k AS feature, * EXCEPT (k) FROM ({l_sql})", l_params),
    ]
    return _swap(sq.feature_breakdown(f, dash=False), steps)


def _span_where(f: Filters) -> tuple[list[str], list[Any]]:
    """WHERE terms on ``spans`` (exact to the nanosecond), as ``_raw.span_where``."""
    terms: list[str] = []
    params: list[Any] = []
    if f.start_ns is not None:
        terms.append("start_ns >= %s")
        params.append(f.start_ns)
    if f.end_ns is not None:
        terms.append("start_ns < %s")
        params.append(f.end_ns)
    for col in _DIMS:
        val = getattr(f, col)
        if val is not None:
            terms.append(f"ifNull({col}, '') = %s")
            params.append(val)
    if f.service is not None:
        terms.append("has(JSONExtract(usage, 'Array(Tuple(service String))').1, %s)")
        params.append(f.service)
    return terms, params


def _breakdown_from_spans(f: Filters) -> Query[list[Row]]:
    where, params = _span_where(replace(f, feature=None))
    steps = []
    for col, source in (
        (
            "toString(feature)",
            "SELECT toString(feature) AS feature, sum(cost_nano) AS cost_nano, sum(weight) AS calls, "
            "count() AS spans, sum(unpriced) AS unpriced, sum(var_nano2) AS var_nano2 FROM spans",
        ),
        (
            "f",
            "SELECT f AS feature, sum(cost_nano) AS cost_nano, sum(weight) AS calls, count() AS spans, "
            "sum(var_nano2) AS var_nano2 FROM spans ARRAY JOIN JSONExtract(path, 'Array(String)') AS f",
        ),
    ):
        terms, p = list(where), list(params)
        if f.feature is not None:
            terms.append(f"{col} = %s")
            p.append(f.feature)
        clause = f" WHERE {' AND '.join(terms)}" if terms else ""
        steps.append((f"{source}{clause} GROUP BY feature", p))
    return _swap(sq.feature_breakdown(f, dash=False), steps)


def _day_segment(days: int, now_ns: int) -> list[Segment]:
    last = day_start(now_ns)
    return [Segment("day", last - (days - 1) * DAY, last + DAY)]


def cost_trend(f: Filters, days: int, now_ns: int) -> Query[list[Row]]:
    """``_queries.cost_trend`` on ClickHouse."""
    query = sq.cost_trend(f, days, now_ns, dash=False)
    if days <= 0:
        return query
    segs = _day_segment(days, now_ns)
    return _swap(query, [rollup_source(f, group=None, sums=_ALL, split=False, segments=segs, by_bucket=True)])


def cost_trend_by_feature(days: int, now_ns: int) -> Query[list[Row]]:
    """``_queries.cost_trend_by_feature`` on ClickHouse."""
    query = sq.cost_trend_by_feature(days, now_ns, dash=False)
    if days <= 0:
        return query
    segs = _day_segment(days, now_ns)
    step = rollup_source(
        Filters(), group="feature", sums=("cost_nano", "calls"), split=False, segments=segs, by_bucket=True
    )
    return _swap(query, [step])


def feature_timeseries(minutes: int, now_ns: int) -> Query[dict[str, list[float]]]:
    """``_queries.feature_timeseries`` on ClickHouse."""
    query = sq.feature_timeseries(minutes, now_ns)
    if not query.steps:
        return query
    lo, hi = query.steps[0][1]
    sql = (
        "SELECT bucket, toString(feature) AS feature, sum(cost_nano) AS cost_nano FROM rollup_minute "
        "WHERE service = '' AND bucket >= %s AND bucket <= %s GROUP BY bucket, feature"
    )
    return _swap(query, [(sql, (lo, hi))])


def spend_rate(f: Filters, minutes: int, now_ns: int) -> Query[Row]:
    """``_queries.spend_rate`` on ClickHouse."""
    now_s = now_ns // NANO
    lo = now_s // MINUTE * MINUTE - (max(minutes, 1) - 1) * MINUTE
    seg = Segment("minute", lo, now_s + 1)
    step = rollup_source(f, group=None, sums=_ALL, split=False, segments=[seg])
    return _swap(sq.spend_rate(f, minutes, now_ns), [step])


def ingest_stats(now_ns: int) -> Query[Row]:
    """``_queries.ingest_stats`` on ClickHouse."""
    day = "FROM rollup_day WHERE service = ''"
    sql = (
        "SELECT (SELECT count() FROM spans WHERE start_ns >= %s AND start_ns <= %s) AS spans_last_minute, "
        f"(SELECT sum(spans) {day}) AS total_spans, (SELECT sum(requests) {day}) AS total_requests, "
        f"(SELECT sum(cost_nano) {day}) AS cost_nano, (SELECT sum(unpriced) {day}) AS unpriced_items, "
        "(SELECT count() FROM dead_letters FINAL) AS dead_letters"
    )
    return _swap(sq.ingest_stats(now_ns, dash=False), [(sql, (now_ns - 60 * NANO, now_ns))])


# --- raw spans, requests, operational tables ---------------------------------------------------

_SPAN_COLS = (
    "span_id, parent_id, request_id, toString(feature) AS feature, operation, endpoint, user_id, start_ns, "
    "duration_ns, cpu_ns, error, error_type, weight, path, usage, cost_nano, unpriced, var_nano2, "
    "toString(price_version) AS price_version"
)


def transactions(f: Filters, limit: int, offset: int, request_id: str | None = None) -> Query[list[Row]]:
    """``_raw.transactions`` on ClickHouse."""
    terms, params = _span_where(f)
    if request_id is not None:
        terms.append("request_id = %s")
        params.append(request_id)
    clause = f" WHERE {' AND '.join(terms)}" if terms else ""
    sql = f"SELECT {_SPAN_COLS} FROM spans{clause} ORDER BY start_ns DESC, span_id DESC LIMIT %s OFFSET %s"
    return _swap(sraw.transactions(f, limit, offset, request_id), [(sql, (*params, int(limit), int(offset)))])


#: a request's merged columns, read ``FROM requests FINAL`` (every row of a request merged into one at read)
_REQUEST_MERGED = (
    "request_id, coalesce(root_endpoint, endpoint) AS ep, coalesce(root_user_id, user_id) AS us, root_feature AS rf, "
    "start_ns AS t0, end_ns AS t1, cost_nano AS c, spans AS n, errors AS e, unpriced AS u, var_nano2 AS v"
)
_REQUEST_OUT = (
    "request_id, ep AS endpoint, us AS user_id, rf AS root_feature, t0 AS start_ns, t1 AS end_ns, c AS cost_nano, "
    "n AS spans, e AS errors, u AS unpriced, v AS var_nano2"
)


def request_rows(
    f: Filters, limit: int, order: str, offset: int = 0, *, search: str = "", since_day: int | None = None
) -> tuple[str, list[Any]]:
    """The page of merged ``requests`` rows (``_REQUEST_OUT``), newest or costliest first.

    ``search`` (already ASCII-lowered): only requests whose id, endpoint, tenant or root feature (what a
    row shows, as on SQLite) contains it. ``since_day``: read ``request_index`` instead, only the requests
    first stored on that day (epoch seconds) or later, a key range (``_dashboard``'s newest page).

    One scan of ``requests FINAL``: the table is an AggregatingMergeTree keyed by request id (one partition),
    so ``FINAL`` merges each request's rows with the columns' own functions (sum, min, max, any) as
    ``GROUP BY request_id`` would, but streaming over the sorted parts instead of hashing every request:
    6 ms instead of 37 for the costliest 200 of 190,000 requests; filters and the search are ``WHERE``
    terms on the merged values (never moved to PREWHERE under FINAL).
    """
    terms: list[str] = []
    params: list[Any] = []
    table = "requests"
    if since_day is not None:
        table = "request_index"
        terms.append("request_day >= %s")
        params.append(since_day)
    if f.start_ns is not None:
        terms.append("t0 >= %s")
        params.append(f.start_ns)
    if f.end_ns is not None:
        terms.append("t0 < %s")
        params.append(f.end_ns)
    for expr, val in (("rf", f.feature), ("us", f.user_id), ("ep", f.endpoint)):
        if val is not None:
            terms.append(f"ifNull({expr}, '') = %s")
            params.append(val)
    if search:
        shown = ("request_id", "ep", "us", "rf")
        terms.append("(" + " OR ".join(f"position(lower(ifNull({e}, '')), %s) > 0" for e in shown) + ")")
        params += [search] * len(shown)
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    by, outer = (
        ("t0 DESC, request_id DESC", "start_ns DESC, request_id DESC")
        if order == "recent"
        else ("c DESC, request_id", "cost_nano DESC, request_id")
    )
    sql = (
        f"SELECT {_REQUEST_OUT} FROM (SELECT {_REQUEST_MERGED} FROM {table} FINAL{where} ORDER BY {by}"
        f" LIMIT %s OFFSET %s) ORDER BY {outer}"
    )
    return sql, [*params, int(limit), int(offset)]


#: The newest day any request was first stored on (``request_index``'s key; its partitions' bounds).
NEWEST_DAY = "SELECT max(request_day) FROM request_index"
#: Days before the newest that a newest-requests read covers, widening until the page is exact (None: all).
BACK_DAYS: tuple[int | None, ...] = (1, 7, 49, None)


def since_days(newest_day: int) -> list[int | None]:
    """The ``since_day`` of each newest-requests read in turn: back from ``newest_day`` by ``BACK_DAYS``."""
    return [None if back is None else newest_day - back * 86_400 for back in BACK_DAYS]


def page_is_exact(rows: int, limit: int, last_start_ns: int | None, since_day: int | None) -> bool:
    """Whether a page of the newest requests read from ``since_day`` on is the page of all requests.

    A request's ``request_day`` is the day of a span no earlier than its first start, so every request that
    started on or after the day D has its ``request_day`` on or after D and was read: once the page is full
    and its last row started on or after ``since_day``, no request left unread ranks above any row of it.
    """
    if since_day is None:
        return True
    return rows == limit and last_start_ns is not None and last_start_ns >= since_day * 1_000_000_000


def request_costs(
    f: Filters, limit: int, order: str, offset: int = 0, *, since_day: int | None = None
) -> Query[list[Row]]:
    """``_raw.request_costs`` on ClickHouse (``request_rows``; ``since_day``: from ``request_index``)."""
    query = sraw.request_costs(f, limit, order, offset)  # validates ``order``
    return _swap(query, [request_rows(f, limit, order, offset, since_day=since_day)])


def subtree(*, request_id: str | None = None, span_id: str | None = None) -> Query[list[Row]]:
    """``_raw.subtree`` on ClickHouse (the ``request_id`` bloom index finds the request's granules)."""
    query = sraw.subtree(request_id=request_id, span_id=span_id)
    if span_id is not None:
        sql = (
            f"SELECT {_SPAN_COLS} FROM spans WHERE request_id IN "
            "(SELECT request_id FROM spans WHERE span_id = %s LIMIT 1)"
        )
        return _swap(query, [(sql, (span_id,))])
    return _swap(query, [(f"SELECT {_SPAN_COLS} FROM spans WHERE request_id = %s", (request_id,))])


def dead_letters(limit: int) -> Query[list[Row]]:
    """``_raw.dead_letters`` on ClickHouse (``id`` is the row's place in arrival order)."""
    sql = (
        "SELECT toInt64(received_ns) AS id, received_ns, topic, partition, offset, key, length(value) AS size, "
        "substring(value, 1, 200) AS preview, reason FROM dead_letters FINAL "
        "ORDER BY received_ns DESC, topic, partition, offset DESC LIMIT %s"
    )
    return _swap(sraw.dead_letters(limit), [(sql, (int(limit),))])


def unpriced_usage() -> Query[list[Row]]:
    """``_raw.unpriced_usage`` on ClickHouse."""
    sql = (
        "SELECT key, toString(service) AS service, toString(feature) AS feature, sum(items) AS items, "
        "sum(count) AS count, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
        "sum(bytes) AS bytes, min(first_ns) AS first_ns, max(last_ns) AS last_ns FROM unpriced_usage "
        "GROUP BY key, service, feature HAVING items > 0 ORDER BY items DESC, key, service, feature"
    )
    return _swap(sraw.unpriced_usage(), [(sql, ())])
