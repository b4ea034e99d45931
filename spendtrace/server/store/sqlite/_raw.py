"""Queries over the raw tables: spans (filters, paging, request trees), requests, dead letters, unpriced usage.

Same shape as ``_queries``: SQL + bound parameters + a post-processor (``_sql.Query``), run by
both storages. These read through the ``spans`` / ``requests`` indexes, so they are exact to the
nanosecond and cover the raw-span retention period (30 days by default).
"""

from __future__ import annotations

import json
import math
from typing import Any

from spendtrace.errors import ConfigError
from spendtrace.server.store.sqlite._sql import NANO, Filters, Query, Row, iso_ns, usd

__all__ = ["dead_letters", "request_costs", "span_where", "subtree", "transactions", "unpriced_usage"]


# --- raw spans and requests --------------------------------------------------------------------


def span_where(f: Filters, alias: str = "") -> tuple[list[str], list[Any]]:
    """WHERE terms on the raw ``spans`` table (exact to the nanosecond)."""
    p = f"{alias}." if alias else ""
    terms: list[str] = []
    params: list[Any] = []
    if f.start_ns is not None:
        terms.append(f"{p}start_ns >= ?")
        params.append(f.start_ns)
    if f.end_ns is not None:
        terms.append(f"{p}start_ns < ?")
        params.append(f.end_ns)
    for col, val in (("feature", f.feature), ("user_id", f.user_id), ("endpoint", f.endpoint)):
        if val is not None:
            terms.append(f"COALESCE({p}{col}, '') = ?")
            params.append(val)
    if f.service is not None:
        terms.append(f"EXISTS (SELECT 1 FROM json_each({p}usage) u WHERE json_extract(u.value, '$.service') = ?)")
        params.append(f.service)
    return terms, params


_SPAN_COLS = (
    "span_id, parent_id, request_id, feature, operation, endpoint, user_id, start_ns, duration_ns, cpu_ns, "
    "error, error_type, weight, path, usage, cost_nano, unpriced, var_nano2, price_version"
)


def _span_row(r: Row) -> Row:
    usage = json.loads(r["usage"]) if r["usage"] else []
    for item in usage:
        if isinstance(item, dict) and "cost_nano" in item:
            item.setdefault("cost", usd(item["cost_nano"]))
    return {
        "span_id": r["span_id"],
        "parent_id": r["parent_id"],
        "request_id": r["request_id"],
        "feature": r["feature"],
        "operation": r["operation"],
        "endpoint": r["endpoint"],
        "user_id": r["user_id"],
        "start_ns": r["start_ns"],
        "start": iso_ns(r["start_ns"]),
        "duration_ms": r["duration_ns"] / 1e6,
        "cpu_ms": r["cpu_ns"] / 1e6,
        "error": bool(r["error"]),
        "error_type": r["error_type"],
        "weight": r["weight"],
        "path": json.loads(r["path"]) if r["path"] else [],
        "usage": usage,
        "total_cost": usd(r["cost_nano"]),
        "cost_nano": int(r["cost_nano"]),
        "unpriced_count": int(r["unpriced"]),
        "price_version": r["price_version"],
    }


def transactions(f: Filters, limit: int, offset: int, request_id: str | None = None) -> Query[list[Row]]:
    """Raw spans, newest first (ties broken by span_id, so pages are stable), with paging."""
    terms, params = span_where(f)
    if request_id is not None:
        terms.append("request_id = ?")
        params.append(request_id)
    clause = f" WHERE {' AND '.join(terms)}" if terms else ""
    sql = f"SELECT {_SPAN_COLS} FROM spans{clause} ORDER BY start_ns DESC, span_id DESC LIMIT ? OFFSET ?"
    return Query(((sql, (*params, int(limit), int(offset))),), lambda res: [_span_row(r) for r in res[0]])


def request_costs(f: Filters, limit: int, order: str, offset: int = 0) -> Query[list[Row]]:
    """One row per request (``requests`` table): newest first, or most expensive first with ``order='cost'``.

    The ``feature`` filter matches the request's root feature.
    """
    if order not in ("recent", "cost"):
        raise ConfigError(f"order must be 'recent' or 'cost', not {order!r}")
    terms: list[str] = []
    params: list[Any] = []
    if f.start_ns is not None:
        terms.append("start_ns >= ?")
        params.append(f.start_ns)
    if f.end_ns is not None:
        terms.append("start_ns < ?")
        params.append(f.end_ns)
    for col, val in (("root_feature", f.feature), ("user_id", f.user_id), ("endpoint", f.endpoint)):
        if val is not None:
            terms.append(f"COALESCE({col}, '') = ?")
            params.append(val)
    clause = f" WHERE {' AND '.join(terms)}" if terms else ""
    by = "start_ns DESC, request_id DESC" if order == "recent" else "cost_nano DESC, request_id"
    sql = (
        "SELECT request_id, endpoint, user_id, root_feature, start_ns, end_ns, cost_nano, spans, errors, "
        f"unpriced, var_nano2 FROM requests{clause} ORDER BY {by} LIMIT ? OFFSET ?"
    )

    def post(results: list[list[Row]]) -> list[Row]:
        return [
            {
                "request_id": r["request_id"],
                "endpoint": r["endpoint"],
                "user_id": r["user_id"],
                "root_feature": r["root_feature"],
                "total_cost": usd(r["cost_nano"]),
                "cost_nano": int(r["cost_nano"]),
                "tx_count": int(r["spans"]),
                "error_count": int(r["errors"]),
                "unpriced_count": int(r["unpriced"]),
                "start": iso_ns(r["start_ns"]),
                "start_ns": r["start_ns"],
                "end_ns": r["end_ns"],
                "duration_ms": (r["end_ns"] - r["start_ns"]) / 1e6,
                "stderr": math.sqrt(r["var_nano2"]) / NANO if r["var_nano2"] else None,
            }
            for r in results[0]
        ]

    return Query(((sql, (*params, int(limit), int(offset))),), post)


def subtree(*, request_id: str | None = None, span_id: str | None = None) -> Query[list[Row]]:
    """The spans of one request as a tree in depth-first order (children by start time).

    With ``span_id``, only the subtree rooted at that span (depth counted from it). Spans whose
    parent is not stored (yet) are shown as roots, so a partial request is still visible.
    """
    if span_id is not None:
        sql = f"SELECT {_SPAN_COLS} FROM spans WHERE request_id = (SELECT request_id FROM spans WHERE span_id = ?)"
        params: tuple[Any, ...] = (span_id,)
    else:
        sql = f"SELECT {_SPAN_COLS} FROM spans WHERE request_id = ?"
        params = (request_id,)

    def post(results: list[list[Row]]) -> list[Row]:
        spans = {r["span_id"]: _span_row(r) for r in results[0]}
        children: dict[str | None, list[str]] = {}
        for sid, s in spans.items():
            parent = s["parent_id"] if s["parent_id"] in spans else None
            children.setdefault(parent, []).append(sid)
        for kids in children.values():
            kids.sort(key=lambda k: (spans[k]["start_ns"], k))
        roots = [span_id] if span_id is not None and span_id in spans else children.get(None, [])
        out: list[Row] = []
        # iterative DFS (a deep request must not hit the recursion limit); subtree sums after
        stack = [(sid, 0) for sid in reversed(roots)]
        while stack:
            sid, depth = stack.pop()
            node = spans[sid]
            node["depth"] = depth
            node["direct_cost"], node["direct_cost_nano"] = node["total_cost"], node["cost_nano"]
            node["children"] = len(children.get(sid, []))
            out.append(node)
            stack.extend((k, depth + 1) for k in reversed(children.get(sid, [])))
        for node in reversed(out):
            kids = children.get(node["span_id"], [])
            node["subtree_cost_nano"] = node["cost_nano"] + sum(spans[k]["subtree_cost_nano"] for k in kids)
            node["subtree_unpriced"] = node["unpriced_count"] + sum(spans[k]["subtree_unpriced"] for k in kids)
            node["subtree_cost"] = usd(node["subtree_cost_nano"])
        return out

    return Query(((sql, params),), post)


# --- operational tables ------------------------------------------------------------------------


def dead_letters(limit: int) -> Query[list[Row]]:
    """The newest dead letters with their reason (values cut to 200 bytes)."""
    sql = (
        'SELECT id, received_ns, topic, partition, "offset", key, length(value) AS size, '
        "substr(value, 1, 200) AS preview, reason FROM dead_letters ORDER BY id DESC LIMIT ?"
    )

    def post(results: list[list[Row]]) -> list[Row]:
        out = []
        for r in results[0]:
            row = dict(r)
            row["received"] = iso_ns(r["received_ns"])
            for k in ("key", "preview"):
                v = row[k]
                row[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
            out.append(row)
        return out

    return Query(((sql, (int(limit),)),), post)


def unpriced_usage() -> Query[list[Row]]:
    """Usage that no price covered, per key / service / feature, most items first (rows a reprice emptied left out)."""
    sql = (
        "SELECT key, service, feature, items, count, input_tokens, output_tokens, bytes, first_ns, last_ns "
        "FROM unpriced_usage WHERE items > 0 ORDER BY items DESC, key, service, feature"
    )

    def post(results: list[list[Row]]) -> list[Row]:
        return [{**r, "first_seen": iso_ns(r["first_ns"]), "last_seen": iso_ns(r["last_ns"])} for r in results[0]]

    return Query(((sql, ()),), post)
