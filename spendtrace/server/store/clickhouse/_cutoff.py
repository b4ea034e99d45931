"""The raw-span cutoff a ClickHouse retention round applied, recorded in ``meta`` (read by ``_horizon``).

Its own module so that retention (``_admin``, ``_retention``) and the horizon read (``_horizon``, which
reads the policy from ``_admin``) can both use it without importing each other.
"""

from __future__ import annotations

from spendtrace.server.store.clickhouse._client import Conn

__all__ = ["APPLIED_KEY", "record_applied_cutoff"]

#: ``meta`` key of the latest raw-span cutoff retention applied (the SQLite backend's key)
APPLIED_KEY = "horizon.raw_applied_ns"


def record_applied_cutoff(conn: Conn, cutoff_ns: int) -> None:
    """Record ``cutoff_ns`` as applied, before the deletes it dates; it only ever moves forward.

    ``meta`` is a ReplacingMergeTree on ``updated_ns``: the row's version is the cutoff itself, so a
    merge keeps the latest cutoff whatever order two workers wrote theirs in, and reads take ``argMax``.
    Written before the deletes (ClickHouse has no transaction to put them in): a crash between leaves
    the record ahead of the deletes, which refuses a few spans more, never one less.
    """
    rows = conn.tuples("SELECT max(updated_ns) FROM meta WHERE key = %s", (APPLIED_KEY,))
    if rows and rows[0][0] is not None and int(rows[0][0]) >= cutoff_ns:
        return
    conn.insert("meta", [[APPLIED_KEY], [str(cutoff_ns)], [cutoff_ns]], ("key", "value", "updated_ns"))
