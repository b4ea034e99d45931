"""Restating history: scale stored costs in a date range by a calibration factor, atomically and undoably.

``restate_historical_costs`` multiplies the cost of every stored row whose time falls in
``[start_date, end_date)`` - UTC days, ``end_date`` exclusive - by ``factors[service]`` for the
services it names and by ``factor`` for the other **AWS** services (``AWS_SERVICES``: a factor from
reconciling against the AWS bill says nothing about OpenAI's or Anthropic's own bills, so their
spend, and any other non-AWS service, stays as it is unless ``factors`` names it; Bedrock is on the
AWS bill and is scaled). A factor from a partial reconciliation report (days without actuals) is
refused unless ``force=True``:

- ``spans``: each priced usage item's ``cost_nano`` and ``unit_cost_nano`` in the usage JSON, then
  the span's ``cost_nano`` (sum of its items) and ``var_nano2`` (``w*(w-1)*c**2`` again);
- ``requests``: their cost changes by the sum of their restated spans' changes;
- ``rollup_minute/hour/day``: each service row is scaled by its service's factor and the span-level
  ``service = ''`` row changes by the sum of its service rows' changes, so it stays their sum;
- ``loaded_*`` (no service dimension): scaled by the bucket's overall ratio (new / old of the same
  grain's ``service = ''`` rows), which is exactly ``factor`` when one factor applies to everything.

Every amount is scaled on its own, ``round(Fraction(factor) * amount)`` with ties to even, so a
rollup total may differ from the sum of its restated spans by rounding (well under a nano-dollar
per span). The old and new values of every changed row go to ``restatement_undo`` and
``undo_restatement`` puts them back: right after a restatement, its undo restores every money
column exactly. Spans ingested after a restatement are priced by the price book, not restated.
"""

from __future__ import annotations

import getpass
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import date, datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from spendtrace.errors import ConfigError, StorageError
from spendtrace.server.model.reconcile import AWS_SERVICES, check_calibration
from spendtrace.server.store.sqlite import _dash as dash

if TYPE_CHECKING:
    import sqlite3

__all__ = ["restate_historical_costs", "undo_restatement"]

_GRAINS = ("minute", "hour", "day")


def _day(value: str | date, what: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ConfigError(f"{what} must be a date (YYYY-MM-DD), got {value!r}") from None


def _epoch_s(d: date) -> int:
    return (d - date(1970, 1, 1)).days * 86_400


def _check_factor(value: object, what: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a finite number >= 0, got {value!r}")
    return Fraction(value)


def _who(who: str | None) -> str:
    """``who`` or, when not given, the OS user (``unknown`` in containers without one)."""
    if who is not None:
        return who
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


_ONE = Fraction(1)


def _scale(f: Fraction, amount: int) -> int:
    return amount if f == 1 else round(f * amount)


_UNDO_INSERT = (
    "INSERT INTO restatement_undo (restatement_id, tbl, row_key, old_cost_nano, old_extra, new_cost_nano, "
    "old_var_nano2, new_var_nano2) VALUES (?,?,?,?,?,?,?,?)"
)
_CHUNK = 5000


class _Undo:
    """Collects the undo rows of one restatement and writes them in chunks (memory stays bounded)."""

    def __init__(self, conn: sqlite3.Connection, rid: int) -> None:
        self.conn = conn
        self.rid = rid
        self.rows: list[tuple[Any, ...]] = []

    def add(
        self, tbl: str, key: list[Any], old: int, new: int, old_var: float, new_var: float, extra: Any = None
    ) -> None:
        self.rows.append(
            (
                self.rid,
                tbl,
                json.dumps(key),
                old,
                None if extra is None else json.dumps(extra),
                new,
                old_var,
                new_var,
            )
        )
        if len(self.rows) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        self.conn.executemany(_UNDO_INSERT, self.rows)
        self.rows.clear()


def restate_historical_costs(
    conn: sqlite3.Connection,
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
    """Scale stored costs in ``[start_date, end_date)`` (UTC days) in one transaction; returns the restatement id.

    Give ``factor`` (all services) and/or ``factors`` (``{service: factor}``, e.g. from a
    reconciliation report's per-service calibration). ``who`` defaults to the OS user.
    """
    if factor is None and not factors:
        raise ConfigError("restate_historical_costs needs factor or factors")
    check_calibration(factor, dict(factors or {}), force=force)
    default = _check_factor(factor, "factor") if factor is not None else Fraction(1)
    per_service = {str(k): _check_factor(v, f"factors[{k!r}]") for k, v in (factors or {}).items()}
    start, end = _day(start_date, "start_date"), _day(end_date, "end_date")
    if end <= start:
        raise ConfigError(f"end_date ({end}) must be after start_date ({start}); end_date is exclusive")
    who = _who(who)
    lo_s, hi_s = _epoch_s(start), _epoch_s(end)
    lo_ns, hi_ns = lo_s * 1_000_000_000, hi_s * 1_000_000_000

    def f_of(service: str) -> Fraction:
        # ``factor`` is a calibration against the AWS bill: it scales AWS services only
        return per_service.get(service, default if service in AWS_SERVICES else _ONE)

    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "INSERT INTO restatements (created_ns, who, why, start_date, end_date, factor, factors) "
            "VALUES (?,?,?,?,?,?,?)",
            (
                now_ns if now_ns is not None else time.time_ns(),
                who,
                why,
                start.isoformat(),
                end.isoformat(),
                None if factor is None else float(factor),
                json.dumps({k: float(v) for k, v in per_service.items()}, sort_keys=True),
            ),
        )
        rid = int(cur.lastrowid or 0)
        undo = _Undo(conn, rid)
        n_spans = _restate_spans(conn, undo, f_of, lo_ns, hi_ns)
        delta_day = 0
        for grain in _GRAINS:
            ratios = _restate_rollup(conn, undo, grain, f_of, lo_s, hi_s)
            if grain == "day":
                delta_day = sum(new - old for old, new in ratios.values())
            _restate_loaded(conn, undo, grain, ratios, lo_s, hi_s)
        dash.rebuild(conn, lo_s, hi_s)  # dashboard sums follow the restated rollups
        undo.flush()
        conn.execute(
            "UPDATE restatements SET spans_changed = ?, delta_nano = ? WHERE id = ?", (n_spans, delta_day, rid)
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return rid


def _restate_spans(conn: sqlite3.Connection, undo: _Undo, f_of: Any, lo_ns: int, hi_ns: int) -> int:
    """Rewrite the spans in range, in chunks, and apply their changes to ``requests``; returns spans changed."""
    req_delta: dict[str, list[Any]] = defaultdict(lambda: [0, 0.0])
    changed_spans = 0
    # The cursor walks the start_ns index; the updates touch no indexed column, so it is safe to
    # update while reading (SQLite allows it on one connection).
    cur = conn.execute(
        "SELECT span_id, request_id, weight, usage, cost_nano, var_nano2 FROM spans "
        "WHERE start_ns >= ? AND start_ns < ?",
        (lo_ns, hi_ns),
    )
    while rows := cur.fetchmany(_CHUNK):
        updates: list[tuple[Any, ...]] = []
        for span_id, request_id, weight, usage_text, cost, var in rows:
            items = json.loads(usage_text)
            new_cost = 0
            unweighted = 0
            changed = False
            for it in items:
                if not it.get("priced"):
                    continue
                f = f_of(it.get("service", ""))
                if f != 1:
                    changed = True
                    it["cost_nano"] = _scale(f, int(it["cost_nano"]))
                    it["unit_cost_nano"] = _scale(f, int(it["unit_cost_nano"]))
                new_cost += int(it["cost_nano"])
                unweighted += int(it["unit_cost_nano"])
            if not changed:
                continue
            new_var = weight * (weight - 1.0) * unweighted * unweighted if weight != 1.0 else 0.0
            new_text = json.dumps(items, separators=(",", ":"))
            undo.add("spans", [span_id], cost, new_cost, var, new_var, {"usage": usage_text})
            updates.append((new_text, new_cost, new_var, span_id))
            d = req_delta[request_id]
            d[0] += new_cost - cost
            d[1] += new_var - var
        conn.executemany("UPDATE spans SET usage = ?, cost_nano = ?, var_nano2 = ? WHERE span_id = ?", updates)
        changed_spans += len(updates)
    req_updates = []
    for request_id, (dc, dv) in req_delta.items():
        row = conn.execute("SELECT cost_nano, var_nano2 FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            continue
        old_c, old_v = row
        new_c, new_v = old_c + dc, max(0.0, old_v + dv)
        undo.add("requests", [request_id], old_c, new_c, old_v, new_v)
        req_updates.append((new_c, new_v, request_id))
    conn.executemany("UPDATE requests SET cost_nano = ?, var_nano2 = ? WHERE request_id = ?", req_updates)
    return changed_spans


def _restate_rollup(
    conn: sqlite3.Connection, undo: _Undo, grain: str, f_of: Any, lo_s: int, hi_s: int
) -> dict[int, tuple[int, int]]:
    """Scale one grain's rollups; returns bucket -> (old, new) total of its ``service = ''`` rows."""
    table = f"rollup_{grain}"
    rows = conn.execute(
        f"SELECT bucket, feature, user_id, endpoint, service, cost_nano, var_nano2 FROM {table} "
        "WHERE bucket >= ? AND bucket < ?",
        (lo_s, hi_s),
    ).fetchall()
    span_rows: dict[tuple[int, str, str, str], tuple[int, float]] = {}
    delta: dict[tuple[int, str, str, str], int] = defaultdict(int)
    updates: list[tuple[Any, ...]] = []
    for bucket, feature, user, endpoint, service, cost, var in rows:
        dims = (bucket, feature, user, endpoint)
        if service == "":
            span_rows[dims] = (cost, var)
            continue
        f = f_of(service)
        if f == 1:
            continue
        new = _scale(f, cost)
        new_var = float(var * f * f)
        delta[dims] += new - cost
        undo.add(table, [*dims, service], cost, new, var, new_var)
        updates.append((new, new_var, *dims, service))
    totals: dict[int, tuple[int, int]] = {}
    for dims, (cost, var) in span_rows.items():
        new = cost + delta.get(dims, 0)
        old_total, new_total = totals.get(dims[0], (0, 0))
        totals[dims[0]] = (old_total + cost, new_total + new)
        if new == cost:
            continue
        ratio = Fraction(new, cost) if cost else Fraction(1)
        new_var = float(var * ratio * ratio)
        undo.add(table, [*dims, ""], cost, new, var, new_var)
        updates.append((new, new_var, *dims, ""))
    conn.executemany(
        f"UPDATE {table} SET cost_nano = ?, var_nano2 = ? "
        "WHERE bucket = ? AND feature = ? AND user_id = ? AND endpoint = ? AND service = ?",
        updates,
    )
    return totals


def _restate_loaded(
    conn: sqlite3.Connection, undo: _Undo, grain: str, ratios: dict[int, tuple[int, int]], lo_s: int, hi_s: int
) -> None:
    table = f"loaded_{grain}"
    rows = conn.execute(
        f"SELECT bucket, feature, cost_nano, var_nano2 FROM {table} WHERE bucket >= ? AND bucket < ?", (lo_s, hi_s)
    ).fetchall()
    updates = []
    for bucket, feature, cost, var in rows:
        old_total, new_total = ratios.get(bucket, (0, 0))
        if old_total == new_total:
            continue
        ratio = Fraction(new_total, old_total) if old_total else Fraction(1)
        new = _scale(ratio, cost)
        new_var = float(var * ratio * ratio)
        undo.add(table, [bucket, feature], cost, new, var, new_var)
        updates.append((new, new_var, bucket, feature))
    conn.executemany(f"UPDATE {table} SET cost_nano = ?, var_nano2 = ? WHERE bucket = ? AND feature = ?", updates)


_PK = {
    "spans": ("span_id",),
    "requests": ("request_id",),
    **{f"rollup_{g}": ("bucket", "feature", "user_id", "endpoint", "service") for g in _GRAINS},
    **{f"loaded_{g}": ("bucket", "feature") for g in _GRAINS},
}


def undo_restatement(
    conn: sqlite3.Connection,
    restatement_id: int,
    *,
    now_ns: int | None = None,
    undo_reprice: Callable[[sqlite3.Connection, int], int] | None = None,
) -> int:
    """Put back every value restatement ``restatement_id`` changed; returns the number of rows restored.

    A row untouched since is restored exactly; a row that changed since (late spans) loses only the
    restatement's own delta. A reprice (kind ``reprice``) is put back by ``undo_reprice`` (the store
    passes ``_reprice.undo_reprice``), in the same transaction. Undo the latest overlapping
    restatement first: undoing one that a later, still active restatement overlaps raises
    ``StorageError``, as does undoing twice.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT start_date, end_date, undone_ns, kind FROM restatements WHERE id = ?", (restatement_id,)
        ).fetchone()
        if row is None:
            raise StorageError(f"no restatement with id {restatement_id}")
        start, end, undone, kind = row
        if undone is not None:
            raise StorageError(f"restatement {restatement_id} was already undone")
        later = conn.execute(
            "SELECT id FROM restatements WHERE id > ? AND undone_ns IS NULL AND start_date < ? AND end_date > ? "
            "ORDER BY id DESC LIMIT 1",
            (restatement_id, end, start),
        ).fetchone()
        if later is not None:
            raise StorageError(f"restatement {later[0]} overlaps {restatement_id} and is newer; undo it first")
        restored = 0
        if kind == "reprice":
            if undo_reprice is None:
                raise StorageError(f"restatement {restatement_id} is a reprice: undo it through the store")
            restored = undo_reprice(conn, restatement_id)
        for tbl, key_text, old, extra_text, new, old_var, new_var in conn.execute(
            "SELECT tbl, row_key, old_cost_nano, old_extra, new_cost_nano, old_var_nano2, new_var_nano2 "
            "FROM restatement_undo WHERE restatement_id = ? AND ? != 'reprice'",
            (restatement_id, kind),
        ).fetchall():
            cols = _PK[tbl]
            key = json.loads(key_text)
            where = " AND ".join(f"{c} = ?" for c in cols)
            cur = conn.execute(f"SELECT cost_nano, var_nano2 FROM {tbl} WHERE {where}", key).fetchone()
            if cur is None:
                continue  # aged out by retention since
            cost, var = cur
            exact = cost == new and var == new_var
            cost_back = old if exact else cost - (new - old)
            var_back = old_var if exact else max(0.0, var - (new_var - old_var))
            if tbl == "spans":
                extra = json.loads(extra_text)
                conn.execute(
                    "UPDATE spans SET cost_nano = ?, var_nano2 = ?, usage = ? WHERE span_id = ?",
                    (cost_back, var_back, extra["usage"], key[0]),
                )
            else:
                conn.execute(
                    f"UPDATE {tbl} SET cost_nano = ?, var_nano2 = ? WHERE {where}", (cost_back, var_back, *key)
                )
            restored += 1
        dash.rebuild(conn, _epoch_s(_day(start, "start_date")), _epoch_s(_day(end, "end_date")))
        conn.execute(
            "UPDATE restatements SET undone_ns = ? WHERE id = ?",
            (now_ns if now_ns is not None else time.time_ns(), restatement_id),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return restored
