"""Retention and restatement on ClickHouse: deletes by time, and exact delta rows for restatements.

Retention: the policy lives in ``meta`` (the SQLite backend's keys and defaults); ``apply_retention``
drops the partitions of raw spans and of each grain's rollups that aged out whole, then deletes the
older rows of the partition that straddles the cutoff (``ALTER TABLE ... DELETE``, synchronous);
``requests`` and dead letters by delete.

Restatement: the rollup targets and ``requests`` aggregate by ``sum``, so a restatement never rewrites
a row: it reads each grain's rows in range (aggregated: parts merge lazily), computes the new values
exactly as the SQLite backend does (each service row scaled by its factor, ``round(Fraction(f) * x)``
ties to even; the ``service = ''`` row by the sum of its service rows' changes; ``loaded_*`` by the
bucket's ratio), and inserts one **delta row** (new - old) per changed row, remembered in
``restatement_deltas``. Undo inserts the negated deltas: every total is back to the nano-dollar.
Raw spans are rewritten in place (a synchronous mutation per chunk; their old values kept in
``restatement_spans``) and ``requests`` gets delta rows of its spans' changes, as on SQLite.
"""

from __future__ import annotations

import getpass
import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import date
from fractions import Fraction
from typing import Any

from spendtrace.errors import ConfigError, StorageError
from spendtrace.server.model.reconcile import AWS_SERVICES, check_calibration
from spendtrace.server.store.clickhouse._client import Conn
from spendtrace.server.store.clickhouse._cutoff import record_applied_cutoff
from spendtrace.server.store.clickhouse._ddl import DIM_ALL_SELECT, DIM_LOADED_SELECT
from spendtrace.server.store.clickhouse._request_index import first_days
from spendtrace.server.store.clickhouse._request_index import insert_deltas as insert_request_deltas
from spendtrace.server.store.sqlite._restate import _ONE, _check_factor, _day, _epoch_s, _scale
from spendtrace.server.store.sqlite._retention import RetentionPolicy

__all__ = [
    "apply_retention",
    "get_retention",
    "restate_historical_costs",
    "retire_all",
    "set_retention",
    "undo_restatement",
]

_GRAINS = ("minute", "hour", "day")
_DAY_NS = 86_400 * 1_000_000_000
_KEYS = {name: f"retention.{name}" for name in RetentionPolicy.__dataclass_fields__}
_SYNC = {"mutations_sync": 2}


def _token(rid: int, sign: int, table: str) -> dict[str, str]:
    """Insert settings for one table's delta rows of restatement ``rid`` (``sign`` -1: its undo).

    The targets deduplicate every insert (``non_replicated_deduplication_window``; ``insert_deduplicate
    = 0`` does not turn that off for non-replicated tables), and a restatement repeated after its undo
    inserts the very same block: a token of its own keeps it, and still drops a retried insert.
    """
    return {"insert_deduplication_token": f"restatement:{rid}:{sign}:{table}"}


_ROLLUP_KEY = ("bucket", "feature", "user_id", "endpoint", "service")
_DELTA_TABLES = frozenset(f"{t}_{g}" for t in ("rollup", "loaded") for g in _GRAINS)


def set_retention(
    conn: Conn,
    raw_data_days: int = 30,
    hourly_rollups_days: int = 365,
    daily_rollups_days: int = 1825,
    *,
    minute_rollups_days: int = 2,
) -> RetentionPolicy:
    """Store the retention policy in ``meta`` (validated)."""
    policy = RetentionPolicy(raw_data_days, minute_rollups_days, hourly_rollups_days, daily_rollups_days)
    now = time.time_ns()
    items = [(_KEYS[name], str(value)) for name, value in asdict(policy).items()]
    conn.insert(
        "meta", [[k for k, _ in items], [v for _, v in items], [now] * len(items)], ("key", "value", "updated_ns")
    )
    return policy


def get_retention(conn: Conn) -> RetentionPolicy:
    """The stored policy (defaults for anything never set)."""
    rows = conn.tuples(
        "SELECT key, argMax(value, updated_ns) FROM meta WHERE startsWith(key, 'retention.') GROUP BY key"
    )
    stored = dict(rows)
    return RetentionPolicy(**{name: int(stored[key]) for name, key in _KEYS.items() if key in stored})


def _delete(conn: Conn, table: str, where: str, params: tuple[Any, ...]) -> int:
    n = int(conn.tuples(f"SELECT count() FROM {table} WHERE {where}", params)[0][0])
    if n:
        conn.command(f"ALTER TABLE {table} DELETE WHERE {where}", params, settings=_SYNC)
    return n


#: how each table is partitioned (``_ddl``): the span of time one partition value covers
_PARTITIONS = {
    "spans": "month",
    "rollup_minute": "day",
    "loaded_minute": "day",
    "rollup_hour": "month",
    "loaded_hour": "month",
    "rollup_day": "year",
    "loaded_day": "year",
    "dim_days": "year",
}


def _partition_end(value: str, span: str) -> int:
    """Epoch seconds where the partition ``value`` (``YYYYMM``, ``YYYYMMDD`` or ``YYYY``) ends."""
    if span == "year":
        end = date(int(value) + 1, 1, 1)
    elif span == "month":
        y, m = int(value[:4]), int(value[4:6])
        end = date(y + m // 12, m % 12 + 1, 1)
    else:
        end = date.fromordinal(date(int(value[:4]), int(value[4:6]), int(value[6:8])).toordinal() + 1)
    return _epoch_s(end)


def _drop_partitions(conn: Conn, table: str, cutoff_s: int) -> int:
    """Drop the partitions of ``table`` that lie wholly before ``cutoff_s`` (cheap: no part is rewritten)."""
    rows = conn.tuples(
        "SELECT partition_id, partition, sum(rows) FROM system.parts WHERE database = currentDatabase() "
        "AND table = %s AND active GROUP BY partition_id, partition",
        (table,),
    )
    dropped = 0
    for pid, value, n in rows:
        if _partition_end(str(value).strip("'"), _PARTITIONS[table]) <= cutoff_s:
            conn.command(f"ALTER TABLE {table} DROP PARTITION ID %s", (pid,), settings=_SYNC)
            dropped += int(n)
    return dropped


def _expire(conn: Conn, table: str, column: str, cutoff: int, cutoff_s: int) -> int:
    """Whole partitions first, then the rows before ``cutoff`` left in the boundary partition."""
    return _drop_partitions(conn, table, cutoff_s) + _delete(conn, table, f"{column} < %s", (cutoff,))


_RETIRE_KEY = "dim_all.retire"
_DIM_COLUMNS = ("dim", "service", "value", "cost_nano", "calls", "spans", "errors", "unpriced", "var_nano2", "requests")


def _retire_range(conn: Conn, lo_s: int, hi_s: int) -> int:
    """Insert into ``dim_all`` the negation of the day rows of buckets ``[lo_s, hi_s)``; returns the rows inserted.

    The token is the range's: a retirement redone after a crash (same range, day rows not deleted yet) is dropped.
    """
    where = "WHERE bucket >= %s AND bucket < %s "
    rows = conn.tuples(DIM_ALL_SELECT.format(where=where), (lo_s, hi_s))
    rows += conn.tuples(DIM_LOADED_SELECT.format(where=where), (lo_s, hi_s))
    if rows:
        columns: list[list[Any]] = [[r[i] for r in rows] for i in range(3)]
        columns += [[-r[i] for r in rows] for i in range(3, len(_DIM_COLUMNS))]
        conn.insert("dim_all", columns, _DIM_COLUMNS, {"insert_deduplication_token": f"retire:{lo_s}:{hi_s}"})
    return len(rows)


def _set_retire(conn: Conn, lo_s: int, hi_s: int, state: str) -> None:
    conn.insert("meta", [[_RETIRE_KEY], [f"{lo_s}:{hi_s}:{state}"], [time.time_ns()]], ("key", "value", "updated_ns"))


def retire_all(conn: Conn, cutoff_s: int) -> int:
    """Take the day buckets before ``cutoff_s`` out of ``dim_all``, before retention deletes them from the day tables.

    ``dim_all`` is fed by views on ``rollup_day`` / ``loaded_day``, and a delete triggers no view: so the
    rows about to go are negated there first. ``meta`` remembers the range retired (``begun`` before the
    insert, ``done`` after); a range begun and not done is redone first under the same token, so a crash
    anywhere negates each bucket once. Returns the rows inserted.
    """
    rows = conn.tuples("SELECT argMax(value, updated_ns) FROM meta WHERE key = %s", (_RETIRE_KEY,))
    state = str(rows[0][0]) if rows and rows[0][0] else "0:0:done"
    lo, hi, how = state.split(":")
    floor, inserted = int(hi), 0
    if how != "done":
        inserted += _retire_range(conn, int(lo), int(hi))
        _set_retire(conn, int(lo), int(hi), "done")
    if cutoff_s <= floor:
        return inserted
    found = conn.tuples("SELECT count() FROM rollup_day WHERE bucket >= %s AND bucket < %s", (floor, cutoff_s))
    found_loaded = conn.tuples("SELECT count() FROM loaded_day WHERE bucket >= %s AND bucket < %s", (floor, cutoff_s))
    if not found[0][0] and not found_loaded[0][0]:
        return inserted
    _set_retire(conn, floor, cutoff_s, "begun")
    inserted += _retire_range(conn, floor, cutoff_s)
    _set_retire(conn, floor, cutoff_s, "done")
    return inserted


def apply_retention(conn: Conn, now_ns: int | None = None) -> int:
    """Delete every row older than the stored policy allows; returns the rows deleted.

    Partitions wholly older than a cutoff are dropped; the rows before it in the partition that
    straddles it go by a synchronous ``ALTER TABLE ... DELETE`` (which rewrites only the parts holding
    such rows). ``requests`` (not partitioned by time) and ``dead_letters`` go by delete alone.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    policy = get_retention(conn)
    raw = now_ns - policy.raw_data_days * _DAY_NS
    record_applied_cutoff(conn, raw)
    deleted = _expire(conn, "spans", "start_ns", raw, raw // 1_000_000_000)
    aged = "request_id IN (SELECT request_id FROM requests GROUP BY request_id HAVING min(start_ns) < %s)"
    _delete(conn, "request_index", aged, (raw,))  # first: interrupted here, the next round finds them again
    deleted += _delete(conn, "requests", aged, (raw,))
    deleted += _delete(conn, "dead_letters", "received_ns < %s", (raw,))
    for grain, days in zip(
        _GRAINS, (policy.minute_rollups_days, policy.hourly_rollups_days, policy.daily_rollups_days), strict=True
    ):
        cutoff_s = (now_ns - days * _DAY_NS) // 1_000_000_000
        if grain == "day":
            retire_all(conn, cutoff_s)
        deleted += _expire(conn, f"rollup_{grain}", "bucket", cutoff_s, cutoff_s)
        deleted += _expire(conn, f"loaded_{grain}", "bucket", cutoff_s, cutoff_s)
        if grain == "day":  # the days of each value follow the day rollups
            deleted += _expire(conn, "dim_days", "bucket", cutoff_s, cutoff_s)
    return deleted


# --- restatement --------------------------------------------------------------------------------


class _Deltas:
    """The delta rows of one restatement, by table: inserted together, and kept for its undo."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[list[Any], int, float]]] = defaultdict(list)

    def add(self, table: str, key: list[Any], cost: int, var: float) -> None:
        if cost or var:
            self.rows[table].append((key, cost, var))


def _key_names(table: str) -> tuple[str, ...]:
    return _ROLLUP_KEY if table.startswith("rollup_") else ("bucket", "feature")


def _insert_deltas(conn: Conn, rid: int, deltas: Mapping[str, list[tuple[list[Any], int, float]]], sign: int) -> None:
    for table, rows in deltas.items():
        names = _key_names(table)
        columns = [[key[i] for key, _, _ in rows] for i in range(len(names))]
        columns += [[sign * c for _, c, _ in rows], [sign * v for _, _, v in rows]]
        conn.insert(table, columns, (*names, "cost_nano", "var_nano2"), _token(rid, sign, table))


def _restate_rollup(
    conn: Conn, deltas: _Deltas, grain: str, f_of: Callable[[str], Fraction], lo_s: int, hi_s: int
) -> dict[int, tuple[int, int]]:
    """One grain's rollup deltas; returns bucket -> (old, new) total of its ``service = ''`` rows."""
    table = f"rollup_{grain}"
    rows = conn.tuples(
        "SELECT bucket, toString(feature), user_id, toString(endpoint), toString(service), sum(cost_nano), "
        f"sum(var_nano2) FROM {table} WHERE bucket >= %s AND bucket < %s "
        "GROUP BY bucket, feature, user_id, endpoint, service",
        (lo_s, hi_s),
    )
    span_rows: dict[tuple[Any, ...], tuple[int, float]] = {}
    delta: dict[tuple[Any, ...], int] = defaultdict(int)
    for bucket, feature, user, endpoint, service, cost, var in rows:
        dims = (bucket, feature, user, endpoint)
        if service == "":
            span_rows[dims] = (cost, var)
            continue
        f = f_of(service)
        if f == 1:
            continue
        new = _scale(f, cost)
        delta[dims] += new - cost
        deltas.add(table, [*dims, service], new - cost, float(var * f * f) - var)
    totals: dict[int, tuple[int, int]] = {}
    for dims, (cost, var) in span_rows.items():
        new = cost + delta.get(dims, 0)
        old_total, new_total = totals.get(dims[0], (0, 0))
        totals[dims[0]] = (old_total + cost, new_total + new)
        if new != cost:
            ratio = Fraction(new, cost) if cost else Fraction(1)
            deltas.add(table, [*dims, ""], new - cost, float(var * ratio * ratio) - var)
    return totals


def _restate_loaded(
    conn: Conn, deltas: _Deltas, grain: str, ratios: dict[int, tuple[int, int]], lo_s: int, hi_s: int
) -> None:
    table = f"loaded_{grain}"
    rows = conn.tuples(
        f"SELECT bucket, toString(feature), sum(cost_nano), sum(var_nano2) FROM {table} "
        "WHERE bucket >= %s AND bucket < %s GROUP BY bucket, feature",
        (lo_s, hi_s),
    )
    for bucket, feature, cost, var in rows:
        old_total, new_total = ratios.get(bucket, (0, 0))
        if old_total == new_total:
            continue
        ratio = Fraction(new_total, old_total) if old_total else Fraction(1)
        deltas.add(table, [bucket, feature], _scale(ratio, cost) - cost, float(var * ratio * ratio) - var)


_SPAN_CHUNK = 2000
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)


def _restate_spans(
    conn: Conn, rid: int, f_of: Callable[[str], Fraction], lo_ns: int, hi_ns: int
) -> tuple[int, dict[str, list[Any]]]:
    """Rewrite the spans in range (as the SQLite backend does) and remember their old values.

    Spans are rewritten in place by a synchronous mutation per chunk (``ALTER TABLE ... UPDATE``: a
    mutation triggers no view, so the rollups change only by the delta rows). Returns (spans changed,
    request_id -> [cost delta, var delta]).
    """
    req_delta: dict[str, list[Any]] = defaultdict(lambda: [0, 0.0])
    changed: list[tuple[str, int, str, int, float, str, int, float]] = []
    rows = conn.tuples(
        "SELECT span_id, start_ns, request_id, weight, usage, cost_nano, var_nano2 FROM spans "
        "WHERE start_ns >= %s AND start_ns < %s",
        (lo_ns, hi_ns),
    )
    for span_id, start_ns, request_id, weight, usage_text, cost, var in rows:
        items = json.loads(usage_text)
        new_cost = unweighted = 0
        touched = False
        for it in items:
            if not it.get("priced"):
                continue
            f = f_of(it.get("service", ""))
            if f != 1:
                touched = True
                it["cost_nano"] = _scale(f, int(it["cost_nano"]))
                it["unit_cost_nano"] = _scale(f, int(it["unit_cost_nano"]))
            new_cost += int(it["cost_nano"])
            unweighted += int(it["unit_cost_nano"])
        if not touched:
            continue
        new_var = weight * (weight - 1.0) * unweighted * unweighted if weight != 1.0 else 0.0
        changed.append(
            (span_id, start_ns, usage_text, cost, var, json.dumps(items, separators=(",", ":")), new_cost, new_var)
        )
        d = req_delta[request_id]
        d[0] += new_cost - cost
        d[1] += new_var - var
    if changed:
        conn.insert(
            "restatement_spans",
            [[rid] * len(changed), *([c[i] for c in changed] for i in range(8))],
            ("restatement_id", "span_id", "start_ns", "old_usage", "old_cost_nano", "old_var_nano2", "new_usage",
             "new_cost_nano", "new_var_nano2"),
        )  # fmt: skip
        _rewrite_spans(conn, [(c[0], c[1], c[5], c[6], c[7]) for c in changed])
    return len(changed), req_delta


def _rewrite_spans(conn: Conn, rows: list[tuple[str, int, str, int, float]]) -> None:
    """Set (usage, cost_nano, var_nano2) of the spans (span_id, start_ns, ...), a mutation per chunk."""
    for i in range(0, len(rows), _SPAN_CHUNK):
        chunk = rows[i : i + _SPAN_CHUNK]
        ids = [r[0] for r in chunk]
        conn.command(
            "ALTER TABLE spans UPDATE usage = transform(span_id, %s, %s, usage), "
            # the cast: a list of costs all above 2**32 binds as Array(UInt64), which transform() cannot mix with Int64
            "cost_nano = transform(span_id, %s, CAST(%s AS Array(Int64)), cost_nano), "
            "var_nano2 = transform(span_id, %s, %s, var_nano2) "
            "WHERE start_ns >= %s AND start_ns <= %s AND span_id IN %s",
            (
                ids, [r[2] for r in chunk], ids, [r[3] for r in chunk], ids, [float(r[4]) for r in chunk],
                min(r[1] for r in chunk), max(r[1] for r in chunk), tuple(ids),
            ),
            settings=_SYNC,
        )  # fmt: skip


def _request_deltas(conn: Conn, rid: int, deltas: Mapping[str, list[Any]], sign: int) -> int:
    """Insert ``sign`` x the (cost, var) deltas into ``requests`` and ``request_index`` for the requests still
    stored; returns how many."""
    ids = sorted(deltas)
    days = first_days(conn, ids)
    keep = [r for r in ids if r in days and (deltas[r][0] or deltas[r][1])]
    if keep:
        conn.insert(
            "requests",
            [keep, [_I64_MAX] * len(keep), [_I64_MIN] * len(keep), [sign * deltas[r][0] for r in keep],
             [sign * float(deltas[r][1]) for r in keep]],
            ("request_id", "start_ns", "end_ns", "cost_nano", "var_nano2"),
            _token(rid, sign, "requests"),
        )  # fmt: skip
        rows = [(r, sign * deltas[r][0], 0, sign * float(deltas[r][1])) for r in keep]
        insert_request_deltas(conn, rows, days, _token(rid, sign, "request_index"))
    return len(keep)


def restate_historical_costs(
    conn: Conn,
    *,
    factor: float | None = None,
    factors: Mapping[str, float] | None = None,
    start_date: str | date,
    end_date: str | date,
    who: str | None = None,
    why: str = "",
    now_ns: int | None = None,
    force: bool = False,
) -> int:
    """Scale the stored rollups in ``[start_date, end_date)`` (UTC days) by delta rows; returns the restatement id."""
    if factor is None and not factors:
        raise ConfigError("restate_historical_costs needs factor or factors")
    check_calibration(factor, dict(factors or {}), force=force)
    default = _check_factor(factor, "factor") if factor is not None else Fraction(1)
    per_service = {str(k): _check_factor(v, f"factors[{k!r}]") for k, v in (factors or {}).items()}
    start, end = _day(start_date, "start_date"), _day(end_date, "end_date")
    if end <= start:
        raise ConfigError(f"end_date ({end}) must be after start_date ({start}); end_date is exclusive")
    if who is None:
        try:
            who = getpass.getuser()
        except Exception:  # no user name in some containers
            who = "unknown"
    lo_s, hi_s = _epoch_s(start), _epoch_s(end)
    now = time.time_ns() if now_ns is None else now_ns

    def f_of(service: str) -> Fraction:
        # ``factor`` is a calibration against the AWS bill: it scales AWS services only
        return per_service.get(service, default if service in AWS_SERVICES else _ONE)

    deltas = _Deltas()
    delta_day = 0
    for grain in _GRAINS:
        ratios = _restate_rollup(conn, deltas, grain, f_of, lo_s, hi_s)
        if grain == "day":
            delta_day = sum(new - old for old, new in ratios.values())
        _restate_loaded(conn, deltas, grain, ratios, lo_s, hi_s)
    # one restatement at a time (an admin operation): the next id after the largest
    rid = int(conn.tuples("SELECT max(id) FROM restatements")[0][0] or 0) + 1
    n_spans, req_delta = _restate_spans(conn, rid, f_of, lo_s * 1_000_000_000, hi_s * 1_000_000_000)
    _request_deltas(conn, rid, req_delta, 1)
    for request_id, (dc, dv) in req_delta.items():
        deltas.add("requests", [request_id], dc, dv)
    kept = [(t, json.dumps(k), c, v) for t, rows in deltas.rows.items() for k, c, v in rows]
    conn.insert(
        "restatement_deltas",
        [[rid] * len(kept), *([r[i] for r in kept] for i in range(4))],
        ("restatement_id", "tbl", "row_key", "cost_nano", "var_nano2"),
    )
    _insert_deltas(conn, rid, {t: rows for t, rows in deltas.rows.items() if t != "requests"}, 1)
    factors_json = json.dumps({k: float(v) for k, v in per_service.items()}, sort_keys=True)
    _record(conn, rid, now, who, why, start, end, None if factor is None else float(factor), factors_json, None,
            delta_day, n_spans)  # fmt: skip
    return rid


def _record(
    conn: Conn,
    rid: int,
    created_ns: int,
    who: str,
    why: str,
    start: date | str,
    end: date | str,
    factor: float | None,
    factors_json: str,
    undone_ns: int | None,
    delta_day: int,
    spans_changed: int,
) -> None:
    values: list[Any] = [
        rid,
        created_ns,
        who,
        why,
        str(start),
        str(end),
        factor,
        factors_json,
        undone_ns,
        spans_changed,
        delta_day,
        time.time_ns(),
    ]
    names = ("id", "created_ns", "who", "why", "start_date", "end_date", "factor", "factors", "undone_ns",
             "spans_changed", "delta_nano", "version")  # fmt: skip
    conn.insert("restatements", [[v] for v in values], names)


def undo_restatement(conn: Conn, restatement_id: int, *, now_ns: int | None = None) -> int:
    """Insert the negation of every delta row restatement ``restatement_id`` inserted; returns rows restored.

    Undo the latest overlapping restatement first (a newer, still active one raises ``StorageError``),
    and only once.
    """
    rows = conn.rows("SELECT * FROM restatements FINAL WHERE id = %s", (int(restatement_id),))
    if not rows:
        raise StorageError(f"no restatement with id {restatement_id}")
    r = rows[0]
    if r["undone_ns"] is not None:
        raise StorageError(f"restatement {restatement_id} was already undone")
    later = conn.tuples(
        "SELECT id FROM restatements FINAL WHERE id > %s AND undone_ns IS NULL AND start_date < %s AND end_date > %s "
        "ORDER BY id DESC LIMIT 1",
        (int(restatement_id), r["end_date"], r["start_date"]),
    )
    if later:
        raise StorageError(f"restatement {later[0][0]} overlaps {restatement_id} and is newer; undo it first")
    if r.get("kind") == "reprice":
        from spendtrace.server.store.clickhouse._reprice import undo_reprice

        return undo_reprice(conn, r, now_ns)
    deltas: dict[str, list[tuple[list[Any], int, float]]] = defaultdict(list)
    requests: dict[str, list[Any]] = {}
    for tbl, key, cost, var in conn.tuples(
        "SELECT tbl, row_key, cost_nano, var_nano2 FROM restatement_deltas WHERE restatement_id = %s",
        (int(restatement_id),),
    ):
        if tbl == "requests":
            requests[json.loads(key)[0]] = [cost, var]
            continue
        if tbl not in _DELTA_TABLES:
            raise StorageError(f"restatement {restatement_id} names an unknown table {tbl!r}")
        deltas[tbl].append((json.loads(key), cost, var))
    for tbl, taken in deltas.items():  # buckets retention deleted since have nothing left to take back
        floor = conn.tuples(f"SELECT minOrNull(bucket) FROM {tbl}")[0][0]
        deltas[tbl] = [d for d in taken if floor is not None and d[0][0] >= floor]
    _insert_deltas(conn, int(restatement_id), deltas, -1)
    restored = sum(len(v) for v in deltas.values()) + _request_deltas(conn, int(restatement_id), requests, -1)
    # spans still as the restatement left them get their old values back (others changed since: kept)
    spans = conn.tuples(
        "SELECT r.span_id, r.start_ns, r.old_usage, r.old_cost_nano, r.old_var_nano2 FROM restatement_spans AS r "
        "INNER JOIN spans AS s ON s.span_id = r.span_id AND s.start_ns = r.start_ns "
        "WHERE r.restatement_id = %s AND s.cost_nano = r.new_cost_nano AND s.usage = r.new_usage",
        (int(restatement_id),),
    )
    _rewrite_spans(conn, [(a, b, c, d, e) for a, b, c, d, e in spans])
    _record(
        conn, int(restatement_id), r["created_ns"], r["who"], r["why"], r["start_date"], r["end_date"], r["factor"],
        r["factors"], time.time_ns() if now_ns is None else now_ns, r["delta_nano"], r["spans_changed"],
    )  # fmt: skip
    return restored + len(spans)
