"""Retention in short steps on ClickHouse (``IngestStore.retention_chunk``): what the workers run between batches.

``_admin.apply_retention`` does a whole round at once; a worker must not stop storing that long. Each
chunk does one bounded piece of the same round, in this order: raw spans, dead letters, requests, then
each grain's rollups (oldest first within a table). A piece is either dropping the partitions of one
table that aged out whole (no part is rewritten, however many rows they hold) or a synchronous
``ALTER TABLE ... DELETE`` of at most about ``limit`` of its oldest aged rows (ties on the time column
go together). A chunk that finds nothing aged anywhere ends the round (``done``). Every chunk leaves
the store consistent: rollups are stored apart from raw spans, so deleting spans never changes a total.
"""

from __future__ import annotations

from spendtrace.server.store.clickhouse._admin import _SYNC, _drop_partitions, get_retention, retire_all
from spendtrace.server.store.clickhouse._client import Conn
from spendtrace.server.store.clickhouse._cutoff import record_applied_cutoff
from spendtrace.server.store.clickhouse._request_index import delete_requests

__all__ = ["retention_chunk"]

_DAY_NS = 86_400 * 1_000_000_000


def _delete_oldest(conn: Conn, table: str, column: str, cutoff: int, limit: int) -> int:
    """Delete about ``limit`` of the oldest rows of ``table`` with ``column < cutoff``; rows deleted."""
    bound = conn.tuples(
        f"SELECT {column} FROM {table} WHERE {column} < %s ORDER BY {column} LIMIT 1 OFFSET %s",
        (cutoff, max(limit, 1) - 1),
    )
    where, params = (f"{column} <= %s", (bound[0][0],)) if bound else (f"{column} < %s", (cutoff,))
    n = int(conn.tuples(f"SELECT count() FROM {table} WHERE {where}", params)[0][0])
    if n:
        conn.command(f"ALTER TABLE {table} DELETE WHERE {where}", params, settings=_SYNC)
    return n


def _expire_requests(conn: Conn, cutoff_ns: int, limit: int) -> int:
    """Delete up to ``limit`` requests that started before ``cutoff_ns`` (the oldest first)."""
    ids = [
        r[0]
        for r in conn.tuples(
            "SELECT request_id FROM requests GROUP BY request_id HAVING min(start_ns) < %s "
            "ORDER BY min(start_ns) LIMIT %s",
            (cutoff_ns, max(limit, 1)),
        )
    ]
    if ids:
        delete_requests(conn, ids)  # the time-ordered copy first (``_request_index``)
        conn.command("ALTER TABLE requests DELETE WHERE request_id IN %s", (tuple(ids),), settings=_SYNC)
    return len(ids)


def retention_chunk(conn: Conn, now_ns: int, limit: int) -> tuple[int, bool]:
    """One bounded step of the retention round at ``now_ns``: (rows deleted, whether nothing aged is left)."""
    policy = get_retention(conn)
    raw = now_ns - policy.raw_data_days * _DAY_NS
    record_applied_cutoff(conn, raw)  # before the deletes it dates (``_horizon``)
    steps: list[tuple[str, str, int, int | None]] = [
        ("spans", "start_ns", raw, raw // 1_000_000_000),
        ("dead_letters", "received_ns", raw, None),
    ]
    for grain, days in (
        ("minute", policy.minute_rollups_days),
        ("hour", policy.hourly_rollups_days),
        ("day", policy.daily_rollups_days),
    ):
        bucket_s = (now_ns - days * _DAY_NS) // 1_000_000_000
        steps += [(f"rollup_{grain}", "bucket", bucket_s, bucket_s), (f"loaded_{grain}", "bucket", bucket_s, bucket_s)]
        if grain == "day":  # the days of each value follow the day rollups
            steps.append(("dim_days", "bucket", bucket_s, bucket_s))
    for table, column, cutoff, whole_before_s in steps:
        if table == "rollup_day":  # the all-time table loses what the day tables are about to lose
            retire_all(conn, cutoff)
        if whole_before_s is not None:
            dropped = _drop_partitions(conn, table, whole_before_s)
            if dropped:
                return dropped, False
        deleted = _delete_oldest(conn, table, column, cutoff, limit)
        if deleted:
            return deleted, False
        if table == "spans":
            n = _expire_requests(conn, raw, limit)
            if n:
                return n, False
    return 0, True
