"""Re-pricing stored usage on ClickHouse: delta rows, as restatements do, and an exact undo.

``reprice`` reads the spans of the range, prices them again (``spendtrace.server.ingest.reprice``)
and inserts one delta row (new - old) into every aggregate target the changed spans fed at ingest:
``rollup_*`` (cost, unpriced items, variance; per service and the ``service = ''`` row),
``loaded_*``, ``requests`` and ``unpriced_usage`` (neutral ``first_ns`` / ``last_ns`` where items
are taken back). Delta rows go only where the row's bucket (or request) is still stored, so
nothing reappears that retention removed. The changed spans are rewritten by a synchronous
mutation (which triggers no view). ``reprice_deltas`` and ``reprice_spans`` keep what was done;
``undo_reprice`` inserts the negated deltas and puts back the spans still as the reprice left them.
Not one transaction: the delta rows are inserted table by table (each insert atomic), then the
record. A failure midway is taken back (the tables reached get the negated rows, the spans their old
values) before the error is raised; a crash midway is not (README, Known gaps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import date
from typing import Any

from spendtrace.errors import StorageError
from spendtrace.schema import UsageItem
from spendtrace.server.ingest.reprice import GRAIN_SECONDS, Repricer, SpanChange, StoredSpan
from spendtrace.server.model.reprice import RepriceResult, ServiceChange
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.clickhouse._client import Conn
from spendtrace.server.store.clickhouse._request_index import first_days
from spendtrace.server.store.clickhouse._request_index import insert_deltas as insert_request_deltas
from spendtrace.server.store.sqlite._reprice import check_range
from spendtrace.server.store.sqlite._restate import _epoch_s, _who

__all__ = ["reprice", "undo_reprice"]

_SYNC = {"mutations_sync": 2}
_CHUNK = 2000
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)
_ROLLUP = ("bucket", "feature", "user_id", "endpoint", "service")
#: table -> (key columns, value columns) of its delta rows
_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{f"rollup_{g}": (_ROLLUP, ("cost_nano", "unpriced", "var_nano2")) for g in GRAIN_SECONDS},
    **{f"loaded_{g}": (("bucket", "feature"), ("cost_nano", "var_nano2")) for g in GRAIN_SECONDS},
    "requests": (("request_id",), ("cost_nano", "unpriced", "var_nano2")),
    "unpriced_usage": (
        ("key", "service", "feature"),
        ("items", "count", "input_tokens", "output_tokens", "bytes", "first_ns", "last_ns"),
    ),
}


def _ch_ukey(d: dict[str, Any], item: UsageItem | None) -> str:
    """The key ClickHouse's ``unpriced_usage`` view counts an unpriced item under: its ``key`` field."""
    return str(d["key"])


def _token(rid: int, sign: int, table: str) -> dict[str, str]:
    return {"insert_deduplication_token": f"reprice:{rid}:{sign}:{table}"}


def reprice(
    conn: Conn,
    book: PriceBook,
    *,
    start_date: str | date,
    end_date: str | date,
    features: Sequence[str] | None = None,
    dry_run: bool = False,
    who: str | None = None,
    why: str = "",
    now_ns: int | None = None,
) -> RepriceResult:
    """Price the stored usage of ``[start_date, end_date)`` again with ``book``, by delta rows."""
    start, end, names = check_range(start_date, end_date, features)
    lo_s, hi_s = _epoch_s(start), _epoch_s(end)
    rp = Repricer(book, _ch_ukey)
    sql = (
        "SELECT span_id, request_id, toString(feature), user_id, endpoint, start_ns, duration_ns, weight, path, "
        "usage, cost_nano, unpriced, var_nano2, toString(price_version) FROM spans "
        "WHERE start_ns >= %s AND start_ns < %s"
    )
    params: list[Any] = [lo_s * 1_000_000_000, hi_s * 1_000_000_000]
    if names:
        sql += " AND feature IN %s"
        params.append(names)
    changes: list[tuple[SpanChange, str]] = []
    for row in conn.tuples(sql, params):
        ch = rp.add(StoredSpan(*row[:13]))
        if ch is not None:
            changes.append((ch, str(row[13])))
    if dry_run:
        return _result(None, start, end, names, book, rp, True)
    rid = _next_id(conn)
    deltas = _present_deltas(conn, rp, lo_s, hi_s)
    done: dict[str, list[tuple[list[Any], list[Any]]]] = {}
    try:
        _apply(conn, rid, book, changes, deltas, done)
    except Exception as exc:
        _take_back(conn, rid, changes, done, exc)
        raise StorageError(f"reprice {rid} failed and what it had written was taken back: {exc}") from exc
    result = _result(rid, start, end, names, book, rp, False)
    delta_day = sum(v[0] for k, v in deltas.get("rollup_day", []) if k[4] == "")
    _record(
        conn, rid, time.time_ns() if now_ns is None else now_ns, _who(who), why, start.isoformat(), end.isoformat(),
        json.dumps(list(names)), json.dumps(result.detail(), sort_keys=True), None, delta_day, rp.changed,
    )  # fmt: skip
    return result


def _next_id(conn: Conn) -> int:
    """An id no restatement and no earlier reprice attempt used: a failed attempt leaves no record, but its
    ``reprice_*`` rows and the deduplication tokens of its inserts (``reprice:<id>:...``) would otherwise be
    taken by the next reprice, whose delta rows the engine would then drop as duplicates."""
    row = conn.tuples(
        "SELECT greatest((SELECT max(id) FROM restatements), (SELECT max(restatement_id) FROM reprice_deltas), "
        "(SELECT max(restatement_id) FROM reprice_spans))"
    )
    return int(row[0][0] or 0) + 1


def _apply(
    conn: Conn,
    rid: int,
    book: PriceBook,
    changes: list[tuple[SpanChange, str]],
    deltas: dict[str, list[tuple[list[Any], list[Any]]]],
    done: dict[str, list[tuple[list[Any], list[Any]]]],
) -> None:
    """Write reprice ``rid``: its span records, the spans, its delta rows (each table into ``done`` once in)."""
    if changes:
        conn.insert(
            "reprice_spans",
            [[rid] * len(changes), *([getattr(c, f) for c, _ in changes] for f in ("span_id", "start_ns",
             "old_usage", "old_cost_nano", "old_unpriced", "old_var_nano2")), [v for _, v in changes],
             *([getattr(c, f) for c, _ in changes] for f in ("new_usage", "new_cost_nano", "new_unpriced",
             "new_var_nano2"))],
            ("restatement_id", "span_id", "start_ns", "old_usage", "old_cost_nano", "old_unpriced", "old_var_nano2",
             "old_price_version", "new_usage", "new_cost_nano", "new_unpriced", "new_var_nano2"),
        )  # fmt: skip
        _rewrite_spans(conn, [(c.span_id, c.start_ns, c.new_usage, c.new_cost_nano, c.new_unpriced,
                               c.new_var_nano2, book.version) for c, _ in changes])  # fmt: skip
    kept = [(t, json.dumps(k), json.dumps(v)) for t, rows in deltas.items() for k, v in rows]
    conn.insert(
        "reprice_deltas",
        [[rid] * len(kept), *([r[i] for r in kept] for i in range(3))],
        ("restatement_id", "tbl", "row_key", "vals"),
    )
    _insert_deltas(conn, rid, deltas, 1, done)
    if book.version not in conn.books:
        conn.insert(
            "price_versions",
            [[book.version], [time.time_ns()], [book.name], [book.to_json()]],
            ("version", "created_ns", "source", "book"),
        )
        conn.books.add(book.version)


def _take_back(
    conn: Conn,
    rid: int,
    changes: list[tuple[SpanChange, str]],
    done: dict[str, list[tuple[list[Any], list[Any]]]],
    cause: BaseException,
) -> None:
    """Undo what a failed reprice wrote (ClickHouse has no transaction): the delta rows of the tables it reached,
    negated, and the spans put back where they are still as it left them. Raises if that fails too."""
    try:
        _insert_deltas(conn, rid, done, -1)
        if changes:
            _rewrite_spans(conn, [(c.span_id, c.start_ns, c.old_usage, c.old_cost_nano, c.old_unpriced,
                                   c.old_var_nano2, version) for c, version in changes])  # fmt: skip
    except Exception as exc:
        raise StorageError(
            f"reprice {rid} failed ({cause}) and taking back what it wrote failed too ({exc}): the rollups hold a "
            f"partial reprice; its delta rows are in reprice_deltas (restatement_id = {rid})"
        ) from exc


def _result(
    rid: int | None, start: date, end: date, names: tuple[str, ...], book: PriceBook, rp: Repricer, dry_run: bool
) -> RepriceResult:
    return RepriceResult(
        id=rid, start_date=start.isoformat(), end_date=end.isoformat(), features=names, price_version=book.version,
        spans_seen=rp.spans_seen, spans_changed=rp.changed,
        services=tuple(ServiceChange(*row) for row in rp.service_changes()), dry_run=dry_run,
    )  # fmt: skip


def _present_deltas(conn: Conn, rp: Repricer, lo_s: int, hi_s: int) -> dict[str, list[tuple[list[Any], list[Any]]]]:
    """The gathered deltas whose rows are still stored (bucket, request or unpriced key), by table."""
    out: dict[str, list[tuple[list[Any], list[Any]]]] = {}
    for grain in GRAIN_SECONDS:
        dims = set(
            conn.tuples(
                f"SELECT DISTINCT bucket, toString(feature), user_id, toString(endpoint) FROM rollup_{grain} "
                "WHERE service = '' AND bucket >= %s AND bucket < %s",
                (lo_s, hi_s),
            )
        )
        out[f"rollup_{grain}"] = [
            (list(k), list(v)) for k, v in rp.rollups[grain].items() if k[:4] in dims and any(v)
        ]
        buckets = set(
            conn.tuples(
                f"SELECT DISTINCT bucket, toString(feature) FROM loaded_{grain} WHERE bucket >= %s AND bucket < %s",
                (lo_s, hi_s),
            )
        )
        out[f"loaded_{grain}"] = [(list(k), list(v)) for k, v in rp.loaded[grain].items() if k in buckets and any(v)]
    ids = sorted(r for r, v in rp.requests.items() if any(v))
    present = first_days(conn, ids)  # the requests still stored
    out["requests"] = [([r], list(rp.requests[r])) for r in ids if r in present]
    stored = {
        (str(k), str(s), str(f))
        for k, s, f in conn.tuples(
            "SELECT key, toString(service), toString(feature) FROM unpriced_usage GROUP BY key, service, feature "
            "HAVING sum(items) > 0"
        )
    }
    out["unpriced_usage"] = [
        (list(k), [*v[:5], _I64_MAX if v[5] is None else v[5], _I64_MIN if v[6] is None else v[6]])
        for k, v in rp.unpriced.items()
        if (v[0] > 0 and v[5] is not None) or (k in stored and any(v[:5]))
    ]
    return out


def _insert_deltas(
    conn: Conn,
    rid: int,
    deltas: dict[str, list[tuple[list[Any], list[Any]]]],
    sign: int,
    done: dict[str, list[tuple[list[Any], list[Any]]]] | None = None,
) -> None:
    """Insert ``sign`` times each table's delta rows (one insert per table, deduplicated by its token)."""
    for table, rows in deltas.items():
        if not rows:
            continue
        keys, values = _SHAPES[table]
        columns: list[list[Any]] = [[k[i] for k, _ in rows] for i in range(len(keys))]
        for i, name in enumerate(values):
            if name == "first_ns":  # min / max columns: an undo inserts the neutral value
                columns.append([v[i] if sign > 0 else _I64_MAX for _, v in rows])
            elif name == "last_ns":
                columns.append([v[i] if sign > 0 else _I64_MIN for _, v in rows])
            else:
                columns.append([sign * v[i] for _, v in rows])
        if table == "requests":  # min / max columns of the request: neutral
            columns += [[_I64_MAX] * len(rows), [_I64_MIN] * len(rows)]
            names: tuple[str, ...] = (*keys, *values, "start_ns", "end_ns")
        else:
            names = (*keys, *values)
        conn.insert(table, columns, names, _token(rid, sign, table))
        if table == "requests":  # and the time-ordered copy, under each request's day
            ids = [k[0] for k, _ in rows]
            days = first_days(conn, ids)
            index_rows = [(k[0], sign * v[0], sign * v[1], sign * float(v[2])) for k, v in rows if k[0] in days]
            insert_request_deltas(conn, index_rows, days, _token(rid, sign, "request_index"))
        if done is not None:
            done[table] = rows


def _rewrite_spans(conn: Conn, rows: list[tuple[str, int, str, int, int, float, str]]) -> None:
    """Set (usage, cost_nano, unpriced, var_nano2, price_version) of the spans (span_id, start_ns, ...)."""
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        ids = [r[0] for r in chunk]
        conn.command(
            "ALTER TABLE spans UPDATE usage = transform(span_id, %s, %s, usage), "
            # the casts: values all above 2**32 bind as Array(UInt64), which transform() cannot mix with Int64
            "cost_nano = transform(span_id, %s, CAST(%s AS Array(Int64)), cost_nano), "
            "unpriced = transform(span_id, %s, CAST(%s AS Array(Int64)), unpriced), "
            "var_nano2 = transform(span_id, %s, %s, var_nano2), "
            "price_version = transform(span_id, %s, %s, toString(price_version)) "
            "WHERE start_ns >= %s AND start_ns <= %s AND span_id IN %s",
            (
                ids, [r[2] for r in chunk], ids, [r[3] for r in chunk], ids, [r[4] for r in chunk],
                ids, [float(r[5]) for r in chunk], ids, [r[6] for r in chunk],
                min(r[1] for r in chunk), max(r[1] for r in chunk), tuple(ids),
            ),
            settings=_SYNC,
        )  # fmt: skip


def _record(
    conn: Conn,
    rid: int,
    created_ns: int,
    who: str,
    why: str,
    start: str,
    end: str,
    features_json: str,
    detail_json: str,
    undone_ns: int | None,
    delta_day: int,
    spans_changed: int,
) -> None:
    values: list[Any] = [rid, created_ns, who, why, start, end, None, "{}", undone_ns, spans_changed, delta_day,
                         time.time_ns(), "reprice", features_json, detail_json]  # fmt: skip
    names = ("id", "created_ns", "who", "why", "start_date", "end_date", "factor", "factors", "undone_ns",
             "spans_changed", "delta_nano", "version", "kind", "features", "detail")  # fmt: skip
    conn.insert("restatements", [[v] for v in values], names)


def undo_reprice(conn: Conn, r: dict[str, Any], now_ns: int | None = None) -> int:
    """Insert the negation of every delta row reprice ``r`` (its ``restatements`` row) inserted; returns rows.

    Spans still as the reprice left them get their old values back; the caller checked the order of undos.
    """
    rid = int(r["id"])
    deltas: dict[str, list[tuple[list[Any], list[Any]]]] = {}
    for tbl, key, vals in conn.tuples(
        "SELECT tbl, row_key, vals FROM reprice_deltas WHERE restatement_id = %s", (rid,)
    ):
        if tbl not in _SHAPES:
            raise StorageError(f"reprice {rid} names an unknown table {tbl!r}")
        deltas.setdefault(tbl, []).append((json.loads(key), json.loads(vals)))
    for tbl, taken in list(deltas.items()):  # buckets retention deleted since have nothing left to take back
        if tbl.startswith(("rollup_", "loaded_")):
            floor = conn.tuples(f"SELECT minOrNull(bucket) FROM {tbl}")[0][0]
            deltas[tbl] = [d for d in taken if floor is not None and d[0][0] >= floor]
        elif tbl == "requests":
            present = first_days(conn, [k[0] for k, _ in taken])
            deltas[tbl] = [d for d in taken if d[0][0] in present]
    _insert_deltas(conn, rid, deltas, -1)
    spans = conn.tuples(
        "SELECT r.span_id, r.start_ns, r.old_usage, r.old_cost_nano, r.old_unpriced, r.old_var_nano2, "
        "r.old_price_version FROM reprice_spans AS r INNER JOIN spans AS s ON s.span_id = r.span_id "
        "AND s.start_ns = r.start_ns WHERE r.restatement_id = %s AND s.cost_nano = r.new_cost_nano "
        "AND s.usage = r.new_usage",
        (rid,),
    )
    _rewrite_spans(conn, [(a, b, c, d, e, f, g) for a, b, c, d, e, f, g in spans])
    _record(
        conn, rid, int(r["created_ns"]), str(r["who"]), str(r["why"]), str(r["start_date"]), str(r["end_date"]),
        str(r["features"]), str(r["detail"]), time.time_ns() if now_ns is None else now_ns, int(r["delta_nano"]),
        int(r["spans_changed"]),
    )  # fmt: skip
    return sum(len(v) for v in deltas.values()) + len(spans)
