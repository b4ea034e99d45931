"""Re-pricing stored usage on SQLite: one transaction, recorded as a restatement of kind ``reprice``, undoable.

``reprice`` reads the spans of ``[start_date, end_date)`` (UTC days; only ``features`` if given),
prices every usage item again with the given book (``spendtrace.server.ingest.reprice``) and, in
one ``BEGIN IMMEDIATE`` transaction, rewrites the changed spans and adds the change of every row
they fed at ingest: ``requests``, ``rollup_*`` (service rows and the ``service = ''`` row, cost,
unpriced items and variance), ``loaded_*``, ``unpriced_usage``; then rebuilds the dashboard sums of
the range. Rows whose buckets retention already deleted stay deleted. The old and new values of
every row it changed go to ``restatement_undo`` (with ``old_extra`` holding the unpriced counts,
and for spans the old usage JSON and price version), so ``undo_restatement`` puts them back
exactly, as for a calibration restatement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from spendtrace.errors import ConfigError, StorageError
from spendtrace.schema import UsageItem
from spendtrace.server.ingest.reprice import Repricer, StoredSpan
from spendtrace.server.model.reprice import RepriceResult, ServiceChange
from spendtrace.server.pricing import PriceBook, unpriced_key
from spendtrace.server.store.sqlite import _dash as dash
from spendtrace.server.store.sqlite._restate import _GRAINS, _day, _epoch_s, _Undo, _who

if TYPE_CHECKING:
    import sqlite3

__all__ = ["check_range", "reprice", "undo_reprice"]

_COLUMNS = (
    "span_id, request_id, feature, user_id, endpoint, start_ns, duration_ns, weight, path, usage, cost_nano, "
    "unpriced, var_nano2, price_version"
)
_CHUNK = 5000
_ROLLUP_PK = ("bucket", "feature", "user_id", "endpoint", "service")


def _sqlite_ukey(d: dict[str, Any], item: UsageItem | None) -> str:
    """The ``unpriced_usage`` key the SQLite ingest counts an unpriced item under (``prepare_batch``)."""
    return str(d["key"]) if item is None else unpriced_key(item)


def _counted_key(conn: sqlite3.Connection) -> Callable[[dict[str, Any], UsageItem | None], str]:
    """Where this file's ingests counted an unpriced item: under its model id, else under the item's own key.

    Ingests from before the model id was the listing key (spendtrace before issue #14's reprice) counted
    some items with a model under their family key (``openai_gpt4o``). When no row has the model id's
    key but one has the item's key, that row is the one to take the item back from.
    """
    keys = {str(k) for (k,) in conn.execute("SELECT DISTINCT key FROM unpriced_usage WHERE items > 0")}

    def counted(d: dict[str, Any], item: UsageItem | None) -> str:
        key = _sqlite_ukey(d, item)
        own = str(d["key"])
        return own if key not in keys and own in keys else key

    return counted


def check_range(
    start_date: str | date, end_date: str | date, features: Sequence[str] | None
) -> tuple[date, date, tuple[str, ...]]:
    """Validated (start, end, sorted distinct features) of a reprice request."""
    start, end = _day(start_date, "start_date"), _day(end_date, "end_date")
    if end <= start:
        raise ConfigError(f"end_date ({end}) must be after start_date ({start}); end_date is exclusive")
    if isinstance(features, str):
        raise ConfigError("features must be a list of feature names, not one string")
    names = tuple(sorted(set(features or ())))
    if any(not isinstance(f, str) or not f for f in names):
        raise ConfigError(f"features must be non-empty strings, got {list(features or ())!r}")
    return start, end, names


def reprice(
    conn: sqlite3.Connection,
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
    """Price the stored usage of ``[start_date, end_date)`` again with ``book``, in one transaction.

    ``dry_run=True`` computes the same result and changes nothing (no record either).
    """
    start, end, names = check_range(start_date, end_date, features)
    lo_s, hi_s = _epoch_s(start), _epoch_s(end)
    conn.execute("BEGIN" if dry_run else "BEGIN IMMEDIATE")
    try:
        rp = Repricer(book, _sqlite_ukey, counted_key=_counted_key(conn))
        rid = 0
        if not dry_run:
            cur = conn.execute(
                "INSERT INTO restatements (created_ns, who, why, start_date, end_date, factor, factors, kind, "
                "features) VALUES (?,?,?,?,?,NULL,'{}','reprice',?)",
                (now_ns if now_ns is not None else time.time_ns(), _who(who), why, start.isoformat(),
                 end.isoformat(), json.dumps(list(names))),
            )  # fmt: skip
            rid = int(cur.lastrowid or 0)
        undo = _Undo(conn, rid)
        where = "start_ns >= ? AND start_ns < ?"
        params: list[Any] = [lo_s * 1_000_000_000, hi_s * 1_000_000_000]
        if names:
            where += f" AND feature IN ({','.join('?' * len(names))})"
            params += names
        cursor = conn.execute(f"SELECT {_COLUMNS} FROM spans WHERE {where}", params)
        while rows := cursor.fetchmany(_CHUNK):
            updates: list[tuple[Any, ...]] = []
            for row in rows:
                ch = rp.add(StoredSpan(*row[:13]))
                if ch is None or dry_run:
                    continue
                extra = {"usage": ch.old_usage, "unpriced": [ch.old_unpriced, ch.new_unpriced],
                         "price_version": row[13]}  # fmt: skip
                undo.add("spans", [ch.span_id], ch.old_cost_nano, ch.new_cost_nano, ch.old_var_nano2,
                         ch.new_var_nano2, extra)  # fmt: skip
                updates.append((ch.new_usage, ch.new_cost_nano, ch.new_unpriced, ch.new_var_nano2, book.version,
                                ch.span_id))  # fmt: skip
            if updates:
                conn.executemany(
                    "UPDATE spans SET usage = ?, cost_nano = ?, unpriced = ?, var_nano2 = ?, price_version = ? "
                    "WHERE span_id = ?",
                    updates,
                )
        if dry_run:
            conn.execute("ROLLBACK")
        else:
            delta_day = _apply(conn, undo, rp)
            conn.execute(
                "INSERT OR IGNORE INTO price_versions (version, created_ns, source, book) VALUES (?,?,?,?)",
                (book.version, time.time_ns(), book.name, book.to_json()),
            )
            dash.rebuild(conn, lo_s, hi_s)
            undo.flush()
            result = _result(rid, start, end, names, book, rp, False)
            conn.execute(
                "UPDATE restatements SET spans_changed = ?, delta_nano = ?, detail = ? WHERE id = ?",
                (rp.changed, delta_day, json.dumps(result.detail(), sort_keys=True), rid),
            )
            conn.execute("COMMIT")
            return result
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return _result(None, start, end, names, book, rp, True)


def _result(
    rid: int | None,
    start: date,
    end: date,
    names: tuple[str, ...],
    book: PriceBook,
    rp: Repricer,
    dry_run: bool,
) -> RepriceResult:
    return RepriceResult(
        id=rid,
        start_date=start.isoformat(),
        end_date=end.isoformat(),
        features=names,
        price_version=book.version,
        spans_seen=rp.spans_seen,
        spans_changed=rp.changed,
        services=tuple(ServiceChange(*row) for row in rp.service_changes()),
        dry_run=dry_run,
    )


def _apply(conn: sqlite3.Connection, undo: _Undo, rp: Repricer) -> int:
    """Add the gathered deltas to the stored rows (recording undo rows); returns the day rollups' change."""
    for request_id, (dc, du, dv) in rp.requests.items():
        row = conn.execute(
            "SELECT cost_nano, unpriced, var_nano2 FROM requests WHERE request_id = ?", (request_id,)
        ).fetchone()
        if row is None or not (dc or du or dv):
            continue  # aged out
        c, u, v = row
        undo.add("requests", [request_id], c, c + dc, v, max(0.0, v + dv), {"unpriced": [u, u + du]})
        conn.execute(
            "UPDATE requests SET cost_nano = ?, unpriced = ?, var_nano2 = ? WHERE request_id = ?",
            (c + dc, u + du, max(0.0, v + dv), request_id),
        )
    delta_day = 0
    for grain in _GRAINS:
        table = f"rollup_{grain}"
        where = " AND ".join(f"{c} = ?" for c in _ROLLUP_PK)
        updates: list[tuple[Any, ...]] = []
        for key, (dc, du, dv) in rp.rollups[grain].items():
            if not (dc or du or dv):
                continue
            row = conn.execute(f"SELECT cost_nano, unpriced, var_nano2 FROM {table} WHERE {where}", key).fetchone()
            if row is None:
                span_row = conn.execute(f"SELECT 1 FROM {table} WHERE {where}", (*key[:4], "")).fetchone()
                if key[4] == "" or span_row is None:
                    continue  # the bucket aged out
                conn.execute(
                    f"INSERT INTO {table} ({', '.join(_ROLLUP_PK)}, cost_nano, unpriced, var_nano2) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (*key, dc, du, max(0.0, dv)),
                )
                undo.add(table, list(key), 0, dc, 0.0, max(0.0, dv), {"unpriced": [0, du], "created": True})
                continue
            c, u, v = row
            if grain == "day" and key[4] == "":
                delta_day += dc
            undo.add(table, list(key), c, c + dc, v, max(0.0, v + dv), {"unpriced": [u, u + du]})
            updates.append((c + dc, u + du, max(0.0, v + dv), *key))
        conn.executemany(f"UPDATE {table} SET cost_nano = ?, unpriced = ?, var_nano2 = ? WHERE {where}", updates)
        table = f"loaded_{grain}"
        for (bucket, feature), (dc, dv) in rp.loaded[grain].items():
            row = conn.execute(
                f"SELECT cost_nano, var_nano2 FROM {table} WHERE bucket = ? AND feature = ?", (bucket, feature)
            ).fetchone()
            if row is None or not (dc or dv):
                continue
            c, v = row
            undo.add(table, [bucket, feature], c, c + dc, v, max(0.0, v + dv))
            conn.execute(
                f"UPDATE {table} SET cost_nano = ?, var_nano2 = ? WHERE bucket = ? AND feature = ?",
                (c + dc, max(0.0, v + dv), bucket, feature),
            )
    for ukey, (n, count, tin, tout, nbytes, first, last) in rp.unpriced.items():
        if not (n or count or tin or tout or nbytes):
            continue
        row = conn.execute(
            "SELECT items, count, input_tokens, output_tokens, bytes, first_ns, last_ns FROM unpriced_usage "
            "WHERE key = ? AND service = ? AND feature = ?",
            ukey,
        ).fetchone()
        if row is None:
            if n <= 0 or first is None:
                continue  # counted under another key by an older ingest: nothing here to take back
            new = [n, count, tin, tout, nbytes, first, last]
            conn.execute(
                "INSERT INTO unpriced_usage (key, service, feature, items, count, input_tokens, output_tokens, "
                "bytes, first_ns, last_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (*ukey, *new),
            )
            undo.add("unpriced_usage", list(ukey), 0, 0, 0.0, 0.0, {"old": None, "new": new})
            continue
        old = list(row)
        new = [old[0] + n, old[1] + count, old[2] + tin, old[3] + tout, old[4] + nbytes]
        new += [old[5] if first is None else min(old[5], first), old[6] if last is None else max(old[6], last)]
        conn.execute(
            "UPDATE unpriced_usage SET items = ?, count = ?, input_tokens = ?, output_tokens = ?, bytes = ?, "
            "first_ns = ?, last_ns = ? WHERE key = ? AND service = ? AND feature = ?",
            (*new, *ukey),
        )
        undo.add("unpriced_usage", list(ukey), 0, 0, 0.0, 0.0, {"old": old, "new": new})
    return delta_day


_PK = {
    "spans": ("span_id",),
    "requests": ("request_id",),
    "unpriced_usage": ("key", "service", "feature"),
    **{f"rollup_{g}": _ROLLUP_PK for g in _GRAINS},
    **{f"loaded_{g}": ("bucket", "feature") for g in _GRAINS},
}
_UNPRICED_COLS = ("items", "count", "input_tokens", "output_tokens", "bytes", "first_ns", "last_ns")


def undo_reprice(conn: sqlite3.Connection, restatement_id: int) -> int:
    """Put back every row reprice ``restatement_id`` changed (inside the caller's transaction); returns rows.

    A row still as the reprice left it gets its old values exactly; one that changed since (spans
    ingested later) loses only the reprice's own change. Rows the reprice created are deleted when
    still as it left them.
    """
    restored = 0
    for tbl, key_text, old, extra_text, new, old_var, new_var in conn.execute(
        "SELECT tbl, row_key, old_cost_nano, old_extra, new_cost_nano, old_var_nano2, new_var_nano2 "
        "FROM restatement_undo WHERE restatement_id = ?",
        (restatement_id,),
    ).fetchall():
        cols = _PK.get(tbl)
        if cols is None:
            raise StorageError(f"restatement {restatement_id} names an unknown table {tbl!r}")
        key = json.loads(key_text)
        extra = json.loads(extra_text) if extra_text else {}
        where = " AND ".join(f"{c} = ?" for c in cols)
        if tbl == "unpriced_usage":
            restored += _undo_unpriced(conn, where, key, extra)
            continue
        has_unpriced = "unpriced" in extra
        sel = "cost_nano, var_nano2" + (", unpriced" if has_unpriced else "")
        cur = conn.execute(f"SELECT {sel} FROM {tbl} WHERE {where}", key).fetchone()
        if cur is None:
            continue  # aged out by retention since
        cost, var = cur[0], cur[1]
        u_old, u_new = extra.get("unpriced", [0, 0])
        exact = cost == new and var == new_var and (not has_unpriced or cur[2] == u_new)
        if exact and extra.get("created"):
            conn.execute(f"DELETE FROM {tbl} WHERE {where}", key)
            restored += 1
            continue
        cost_back = old if exact else cost - (new - old)
        var_back = old_var if exact else max(0.0, var - (new_var - old_var))
        sets, values = ["cost_nano = ?", "var_nano2 = ?"], [cost_back, var_back]
        if has_unpriced:
            sets.append("unpriced = ?")
            values.append(u_old if exact else cur[2] - (u_new - u_old))
        if tbl == "spans":
            sets += ["usage = ?", "price_version = ?"]
            values += [extra["usage"], extra["price_version"]]
        conn.execute(f"UPDATE {tbl} SET {', '.join(sets)} WHERE {where}", (*values, *key))
        restored += 1
    return restored


def _undo_unpriced(conn: sqlite3.Connection, where: str, key: list[Any], extra: dict[str, Any]) -> int:
    cur = conn.execute(f"SELECT {', '.join(_UNPRICED_COLS)} FROM unpriced_usage WHERE {where}", key).fetchone()
    if cur is None:
        return 0
    old, new = extra.get("old"), extra["new"]
    if list(cur) == new:
        if old is None:
            conn.execute(f"DELETE FROM unpriced_usage WHERE {where}", key)
            return 1
        back = old
    else:  # changed since: take back only the reprice's own change of the counts
        base = old or [0, 0, 0, 0, 0, cur[5], cur[6]]
        back = [cur[i] - (new[i] - base[i]) for i in range(5)] + [cur[5], cur[6]]
    conn.execute(
        f"UPDATE unpriced_usage SET {', '.join(f'{c} = ?' for c in _UNPRICED_COLS)} WHERE {where}", (*back, *key)
    )
    return 1
