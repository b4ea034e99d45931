"""The dashboard queries, each defined once: SQL + bound parameters + a post-processor (``_sql.Query``).

Dashboard aggregates read the ``rollup_*`` / ``loaded_*`` tables (day buckets, with hour and minute
buckets at the edges of a range), so their cost follows the number of rollup rows in range, not the
number of spans (per-request and raw-span queries are in ``_raw``).
Money comes back both as exact integer nano-dollars (``*_nano``) and as float USD for display.
Unpriced usage is counted in ``unpriced_count`` wherever it would change a total.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from spendtrace.server.store.sqlite._raw import span_where
from spendtrace.server.store.sqlite._sql import (
    DAY,
    MINUTE,
    NANO,
    Filters,
    Query,
    Row,
    Segment,
    day_start,
    iso_ns,
    plan_segments,
    rollup_source,
    rollup_union,
    usd,
)

__all__ = [
    "aggregate",
    "aggregate_by_service",
    "aggregate_top_all_time",
    "cost_trend",
    "cost_trend_by_feature",
    "feature_breakdown",
    "feature_timeseries",
    "ingest_stats",
    "spend_rate",
    "total",
]

_SUMS = (
    "SUM(cost_nano) AS cost_nano, SUM(calls) AS calls, SUM(spans) AS spans, SUM(errors) AS errors, "
    "SUM(unpriced) AS unpriced, SUM(var_nano2) AS var_nano2, SUM(requests) AS requests"
)
_COLS = ("cost_nano", "calls", "spans", "errors", "unpriced", "var_nano2", "requests")


def _stderr(var_nano2: float | None, calls: float | None, spans: int | None) -> float | None:
    """Standard error in USD of a sampled estimate; None when every span had weight 1 (no sampling)."""
    if not spans or calls is None or calls <= spans + 1e-9:
        return None
    return math.sqrt(max(var_nano2 or 0.0, 0.0)) / NANO


def _money(prefix: str, nano: int | None) -> dict[str, Any]:
    return {f"{prefix}_cost": usd(nano), f"{prefix}_cost_nano": int(nano or 0)}


# --- aggregates over rollups -------------------------------------------------------------------


def aggregate(dim: str, f: Filters, dash: bool = True) -> Query[list[Row]]:
    """Spend grouped by ``feature``, ``user_id`` or ``endpoint``, most expensive first.

    Totals come from the span-level (``service = ''``) rollup rows, the per-service split from the
    rows with a service name. With a ``service`` filter the money, unpriced counts and standard
    errors are that service's share, and the span / request / error counts are 0 (they belong to
    spans, not to a service). ``transaction_count`` is the number of spans for features and the
    number of requests for users and endpoints (what the README prints beside them); both counts
    are always present as ``span_count`` and ``request_count``.
    """
    assert dim in ("feature", "user_id", "endpoint")
    sql, params = rollup_source(f, group=dim, sums=_COLS, split=False, dash=dash)
    steps: list[tuple[str, tuple[Any, ...]]] = [(sql, tuple(params))]
    if f.service is None:
        ssql, sparams = rollup_source(
            f, group=dim, sums=("cost_nano", "unpriced"), split=True, dash=dash, by_service=True
        )
        steps.append((ssql, tuple(sparams)))
    per_request = dim != "feature"

    def post(results: list[list[Row]]) -> list[Row]:
        services: dict[str, dict[str, int]] = {}
        unpriced: dict[str, dict[str, int]] = {}
        if len(results) > 1:
            for r in results[1]:
                cost, n = int(r["cost_nano"] or 0), int(r["unpriced"] or 0)
                if cost or not n:  # a service seen only unpriced is not "$0": it goes to service_unpriced
                    services.setdefault(r["k"], {})[r["service"]] = cost
                if n:
                    unpriced.setdefault(r["k"], {})[r["service"]] = n
        elif f.service is not None:
            services = {r["k"]: {f.service: int(r["cost_nano"] or 0)} for r in results[0] if r["cost_nano"]}
            unpriced = {r["k"]: {f.service: int(r["unpriced"])} for r in results[0] if r["unpriced"]}
        rows = []
        for r in results[0]:
            svc = dict(sorted(services.get(r["k"], {}).items(), key=lambda kv: (-kv[1], kv[0])))
            spans, requests = int(r["spans"] or 0), int(r["requests"] or 0)
            rows.append(
                {
                    dim: r["k"],
                    "total_cost": usd(r["cost_nano"]),
                    "cost_nano": int(r["cost_nano"] or 0),
                    "transaction_count": requests if per_request else spans,
                    "span_count": spans,
                    "request_count": requests,
                    "calls": float(r["calls"] or 0.0),
                    "service_costs": {k: usd(v) for k, v in svc.items()},
                    "service_costs_nano": svc,
                    "service_unpriced": unpriced.get(r["k"], {}),
                    "unpriced_count": int(r["unpriced"] or 0),
                    "error_count": int(r["errors"] or 0),
                    "stderr": _stderr(r["var_nano2"], r["calls"], spans),
                    "first_seen": iso_ns(r["b0"] * NANO if r["b0"] is not None else None),
                    "last_seen": iso_ns(r["b1"] * NANO if r["b1"] is not None else None),
                }
            )
        rows.sort(key=lambda row: (-row["cost_nano"], row[dim]))
        return rows

    return Query(tuple(steps), post)


def aggregate_top_all_time(dim: str, limit: int) -> Query[list[Row]]:
    """``aggregate(dim, Filters())[:limit]`` from ``dash_all`` (a file that has it): the top ``limit`` values of
    all time through its cost index, their per-service rows and first / last day by key, never every
    day of every value. The rows are ``aggregate``'s, shaped by its own post-processor."""
    assert dim in ("feature", "user_id", "endpoint")
    top = "SELECT value FROM dash_all WHERE dim = ? AND service = '' ORDER BY cost_nano DESC, value LIMIT ?"
    steps = (
        (
            "SELECT value AS k, cost_nano, calls, spans, errors, unpriced, var_nano2, requests FROM dash_all"
            " WHERE dim = ? AND service = '' ORDER BY cost_nano DESC, value LIMIT ?",
            (dim, limit),
        ),
        (
            "SELECT value AS k, service, cost_nano, unpriced FROM dash_all WHERE dim = ? AND service > ''"
            f" AND value IN ({top})",
            (dim, dim, limit),
        ),
        (
            "SELECT value AS k, MIN(bucket) AS b0, MAX(bucket) AS b1 FROM dash_day WHERE dim = ? AND service = ''"
            f" AND value IN ({top}) GROUP BY value",
            (dim, dim, limit),
        ),
    )
    shape = aggregate(dim, Filters()).post

    def post(results: list[list[Row]]) -> list[Row]:
        days = {r["k"]: (r["b0"], r["b1"]) for r in results[2]}
        rows = [{**dict(r), "b0": days.get(r["k"], (None, None))[0], "b1": days.get(r["k"], (None, None))[1]}
                for r in results[0]]  # fmt: skip
        return shape([rows, results[1]])

    return Query(steps, post)


def aggregate_by_service(f: Filters, dash: bool = True) -> Query[list[Row]]:
    """Spend per service (``dynamodb``, ``bedrock`` ...) from the per-service rollup rows, most expensive first."""
    sql, uparams = rollup_source(f, group=None, sums=_COLS, split=f.service is None, dash=dash, by_service=True)

    def post(results: list[list[Row]]) -> list[Row]:
        rows = [
            {
                "service": r["service"],
                "total_cost": usd(r["cost_nano"]),
                "cost_nano": int(r["cost_nano"] or 0),
                "unpriced_count": int(r["unpriced"] or 0),
                "stderr": _stderr(r["var_nano2"], r["calls"], r["spans"]),
            }
            for r in results[0]
        ]
        rows.sort(key=lambda row: (-row["cost_nano"], row["service"]))
        return rows

    return Query(((sql, tuple(uparams)),), post)


def total(f: Filters, dash: bool = True, dash_all: bool = False) -> Query[Row]:
    """One total over everything the filters select (``transaction_count`` counts spans).

    ``dash_all`` (the file has it) and no filter: summed from ``dash_all``'s endpoint rows (each
    dimension's values add up to the total), a few thousand rows instead of every day's.
    """
    uparams: list[Any] = []
    if dash_all and f == Filters():
        sql = f"SELECT {_SUMS} FROM dash_all WHERE dim = 'endpoint' AND service = ''"
    else:
        sql, uparams = rollup_source(f, group=None, sums=_COLS, split=False, dash=dash)

    def post(results: list[list[Row]]) -> Row:
        r = results[0][0]
        spans = int(r["spans"] or 0)
        return {
            "total_cost": usd(r["cost_nano"]),
            "cost_nano": int(r["cost_nano"] or 0),
            "transaction_count": spans,
            "request_count": int(r["requests"] or 0),
            "calls": float(r["calls"] or 0.0),
            "unpriced_count": int(r["unpriced"] or 0),
            "error_count": int(r["errors"] or 0),
            "stderr": _stderr(r["var_nano2"], r["calls"], spans),
        }

    return Query(((sql, tuple(uparams)),), post)


def feature_breakdown(f: Filters, dash: bool = True) -> Query[list[Row]]:
    """Direct vs fully-loaded cost per feature, largest fully-loaded first.

    Reads the rollups and the ``loaded_*`` tables; the loaded rollups have no user or endpoint
    dimension, so with a ``user_id`` or ``endpoint`` filter the numbers come from the raw spans
    (exact for the raw-span retention period).
    """
    if f.user_id is not None or f.endpoint is not None:
        return _breakdown_from_spans(f)
    segs = plan_segments(f.start_ns, f.end_ns)
    d_sql, d_params = rollup_source(f, group="feature", sums=_COLS, split=False, dash=dash, segments=segs)
    lterms, lparams = (["feature = ?"], [f.feature]) if f.feature is not None else ([], [])
    l_union, l_params = rollup_union("feature, cost_nano, calls, spans, var_nano2", "loaded", segs, lterms, lparams)
    steps = (
        (f"SELECT k AS feature, {_SUMS} FROM ({d_sql}) GROUP BY k", tuple(d_params)),
        (
            "SELECT feature, SUM(cost_nano) AS cost_nano, SUM(calls) AS calls, SUM(spans) AS spans, "
            f"SUM(var_nano2) AS var_nano2 FROM ({l_union}) GROUP BY feature",
            tuple(l_params),
        ),
    )
    return Query(steps, _breakdown_post)


def _breakdown_from_spans(f: Filters) -> Query[list[Row]]:
    where, params = span_where(replace(f, feature=None), alias="s")
    steps = []
    for col, sql in (
        (
            "s.feature",
            "SELECT s.feature AS feature, SUM(s.cost_nano) AS cost_nano, SUM(s.weight) AS calls, "
            "COUNT(*) AS spans, SUM(s.unpriced) AS unpriced, SUM(s.var_nano2) AS var_nano2 FROM spans s",
        ),
        (
            "j.value",
            "SELECT j.value AS feature, SUM(s.cost_nano) AS cost_nano, SUM(s.weight) AS calls, "
            "COUNT(*) AS spans, SUM(s.var_nano2) AS var_nano2 FROM spans s, json_each(s.path) j",
        ),
    ):
        terms, p = list(where), list(params)
        if f.feature is not None:  # the filter names the output feature: the span's own, or one on its path
            terms.append(f"{col} = ?")
            p.append(f.feature)
        clause = f" WHERE {' AND '.join(terms)}" if terms else ""
        steps.append((f"{sql}{clause} GROUP BY {col}", tuple(p)))
    return Query(tuple(steps), _breakdown_post)


def _breakdown_post(results: list[list[Row]]) -> list[Row]:
    direct = {r["feature"]: r for r in results[0]}
    loaded = {r["feature"]: r for r in results[1]}
    rows = []
    for feature in direct.keys() | loaded.keys():
        d, ld = direct.get(feature, {}), loaded.get(feature, {})
        spans = int(d.get("spans") or 0)
        rows.append(
            {
                "feature": feature,
                **_money("direct", d.get("cost_nano")),
                **_money("fully_loaded", ld.get("cost_nano")),
                "transaction_count": spans,
                "calls": float(d.get("calls") or 0.0),
                "unpriced_count": int(d.get("unpriced") or 0),
                "direct_stderr": _stderr(d.get("var_nano2"), d.get("calls"), spans),
                "fully_loaded_stderr": _stderr(ld.get("var_nano2"), ld.get("calls"), ld.get("spans")),
            }
        )
    rows.sort(key=lambda r: (-r["fully_loaded_cost_nano"], -r["direct_cost_nano"], r["feature"]))
    return rows


# --- trends and live views ---------------------------------------------------------------------


def _days(now_ns: int, days: int) -> list[int]:
    last = day_start(now_ns)
    return [last - (days - 1 - i) * DAY for i in range(days)]


def _date(bucket: int) -> str:
    return iso_ns(bucket * NANO)[:10]  # type: ignore[index]


def cost_trend(f: Filters, days: int, now_ns: int, dash: bool = True) -> Query[list[Row]]:
    """One row per UTC day for the ``days`` days ending today, oldest first, zero-filled."""
    if days <= 0:
        return Query((), lambda _: [])
    buckets = _days(now_ns, days)
    segs = [Segment("day", buckets[0], buckets[-1] + DAY)]
    sql, params = rollup_source(f, group=None, sums=_COLS, split=False, dash=dash, segments=segs, by_bucket=True)

    def post(results: list[list[Row]]) -> list[Row]:
        by_bucket = {r["bucket"]: r for r in results[0]}
        out = []
        for b in buckets:
            r = by_bucket.get(b, {})
            spans = int(r.get("spans") or 0)
            out.append(
                {
                    "date": _date(b),
                    "total_cost": usd(r.get("cost_nano")),
                    "cost_nano": int(r.get("cost_nano") or 0),
                    "calls": float(r.get("calls") or 0.0),
                    "transaction_count": spans,
                    "unpriced_count": int(r.get("unpriced") or 0),
                    "stderr": _stderr(r.get("var_nano2"), r.get("calls"), spans),
                }
            )
        return out

    return Query(((sql, tuple(params)),), post)


def cost_trend_by_feature(days: int, now_ns: int, dash: bool = True) -> Query[list[Row]]:
    """Per feature, its cost per UTC day (zero-filled, oldest first); features by total, largest first."""
    if days <= 0:
        return Query((), lambda _: [])
    buckets = _days(now_ns, days)
    segs = [Segment("day", buckets[0], buckets[-1] + DAY)]
    sql, params = rollup_source(
        Filters(), group="feature", sums=("cost_nano", "calls"), split=False, dash=dash, segments=segs, by_bucket=True
    )

    def post(results: list[list[Row]]) -> list[Row]:
        series: dict[str, dict[int, Row]] = {}
        for r in results[0]:
            series.setdefault(r["k"], {})[r["bucket"]] = r
        out = []
        for feature, by_bucket in series.items():
            points: list[Row] = [
                {
                    "date": _date(b),
                    "total_cost": usd(by_bucket.get(b, {}).get("cost_nano")),
                    "cost_nano": int(by_bucket.get(b, {}).get("cost_nano") or 0),
                    "calls": float(by_bucket.get(b, {}).get("calls") or 0.0),
                }
                for b in buckets
            ]
            nano = sum(p["cost_nano"] for p in points)
            out.append({"feature": feature, "total_cost": usd(nano), "cost_nano": nano, "points": points})
        out.sort(key=lambda r: (-r["cost_nano"], r["feature"]))
        return out

    return Query(((sql, tuple(params)),), post)


def feature_timeseries(minutes: int, now_ns: int) -> Query[dict[str, list[float]]]:
    """USD per minute per feature for the last ``minutes`` minutes (current one included), oldest first."""
    last = now_ns // NANO // MINUTE * MINUTE
    buckets = [last - (minutes - 1 - i) * MINUTE for i in range(max(minutes, 0))]
    sql = (
        "SELECT bucket, feature, SUM(cost_nano) AS cost_nano FROM rollup_minute "
        "WHERE service = '' AND bucket >= ? AND bucket <= ? GROUP BY bucket, feature"
    )

    def post(results: list[list[Row]]) -> dict[str, list[float]]:
        series: dict[str, dict[int, int]] = {}
        for r in results[0]:
            series.setdefault(r["feature"], {})[r["bucket"]] = int(r["cost_nano"] or 0)
        order = sorted(series, key=lambda k: (-sum(series[k].values()), k))
        return {k: [usd(series[k].get(b, 0)) for b in buckets] for k in order}

    if not buckets:
        return Query((), lambda _: {})
    return Query(((sql, (buckets[0], buckets[-1])),), post)


def spend_rate(f: Filters, minutes: int, now_ns: int) -> Query[Row]:
    """Spend per hour over the last ``minutes`` minutes (minute rollups, the current minute included)."""
    now_s = now_ns / NANO
    lo = int(now_s) // MINUTE * MINUTE - (max(minutes, 1) - 1) * MINUTE
    terms, params = f.dims(service=True)
    sql = f"SELECT {_SUMS} FROM rollup_minute WHERE {' AND '.join([*terms, 'bucket >= ?', 'bucket <= ?'])}"
    elapsed = max(now_s - lo, 1.0)

    def post(results: list[list[Row]]) -> Row:
        r = results[0][0]
        nano = int(r["cost_nano"] or 0)
        return {
            "usd_per_hour": usd(nano) * 3600.0 / elapsed,
            "cost_nano": nano,
            "window_seconds": elapsed,
            "unpriced_count": int(r["unpriced"] or 0),
        }

    return Query(((sql, (*params, lo, int(now_s))),), post)


def ingest_stats(now_ns: int, dash: bool = True) -> Query[Row]:
    """Counters for the live screen: spans started in the last minute, totals, dead letters, unpriced items."""
    day = "dash_day WHERE dim = 'feature' AND service = ''" if dash else "rollup_day WHERE service = ''"
    sql = (
        "SELECT (SELECT COUNT(*) FROM spans WHERE start_ns >= ? AND start_ns <= ?) AS spans_last_minute, "
        f"(SELECT COALESCE(SUM(spans), 0) FROM {day}) AS total_spans, "
        f"(SELECT COALESCE(SUM(requests), 0) FROM {day}) AS total_requests, "
        f"(SELECT COALESCE(SUM(cost_nano), 0) FROM {day}) AS cost_nano, "
        f"(SELECT COALESCE(SUM(unpriced), 0) FROM {day}) AS unpriced_items, "
        "(SELECT COUNT(*) FROM dead_letters) AS dead_letters"
    )

    def post(results: list[list[Row]]) -> Row:
        r = dict(results[0][0])
        r["total_cost"] = usd(r["cost_nano"])
        return r

    return Query(((sql, (now_ns - 60 * NANO, now_ns)),), post)
