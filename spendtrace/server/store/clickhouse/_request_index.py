"""``request_index`` beside ``requests``: the deltas and deletes that reach one reach the other (``_ddl`` v8).

The view on ``spans`` fills both with the same rows; what is written to ``requests`` by other paths
(restatement and reprice deltas, their undo, retention's deletes) goes through here, so the time-ordered
copy the newest page reads stays equal to the table keyed by id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spendtrace.server.store.clickhouse._client import Conn

__all__ = ["delete_requests", "first_days", "insert_deltas"]

_CHUNK = 2000
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)
_SYNC = {"mutations_sync": 2}


def first_days(conn: Conn, ids: Sequence[str]) -> dict[str, int]:
    """request id -> its ``first_day`` (the key of its ``request_index`` rows), for the ids still stored."""
    out: dict[str, int] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = tuple(ids[i : i + _CHUNK])
        sql = "SELECT request_id, min(first_day) FROM requests WHERE request_id IN %s GROUP BY request_id"
        out.update((str(r), int(d)) for r, d in conn.tuples(sql, (chunk,)))
    return out


def insert_deltas(
    conn: Conn, rows: Sequence[tuple[str, int, int, float]], days: dict[str, int], settings: dict[str, Any]
) -> None:
    """Insert (request id, cost, unpriced, variance) delta rows into ``request_index`` under their request's day.

    ``days``: ``first_days`` of the ids (every row's id must be in it); ``settings`` carry the insert's
    deduplication token, distinct from the one of the same rows in ``requests``. The start and end
    columns get their neutral values, the names none, so only the sums move.
    """
    if not rows:
        return
    columns: list[list[Any]] = [
        [days[r[0]] for r in rows],
        [r[0] for r in rows],
        [_I64_MAX] * len(rows),
        [_I64_MIN] * len(rows),
        [int(r[1]) for r in rows],
        [int(r[2]) for r in rows],
        [float(r[3]) for r in rows],
    ]
    names = ("request_day", "request_id", "start_ns", "end_ns", "cost_nano", "unpriced", "var_nano2")
    conn.insert("request_index", columns, names, settings)


def delete_requests(conn: Conn, ids: Sequence[str]) -> None:
    """Delete the requests ``ids`` from ``request_index`` (before ``requests``: a retention interrupted between
    the two finds the ids in ``requests`` again and repeats both)."""
    for i in range(0, len(ids), _CHUNK):
        conn.command(
            "ALTER TABLE request_index DELETE WHERE request_id IN %s", (tuple(ids[i : i + _CHUNK]),), settings=_SYNC
        )
