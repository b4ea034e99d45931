"""Retention: how long raw spans and each rollup grain are kept, stored in ``meta`` and applied by the workers.

Defaults: raw spans (with their ``requests`` rows, and dead letters by arrival time) 30 days,
minute rollups 2 days (they only serve the live view and short windows), hourly rollups 365
days, daily rollups 1825 days. Loaded and dashboard rollups follow their grain. Dashboards
read rollups, so their totals survive raw spans ageing out. A row is deleted when its time
(span start, request start, arrival, bucket start) is older than ``now - days`` (whole days
of 86,400 s, UTC).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from spendtrace.errors import ConfigError
from spendtrace.storage._dash import GRAINS as DASH_GRAINS

if TYPE_CHECKING:
    import sqlite3

    import aiosqlite

__all__ = [
    "RetentionPolicy",
    "apply_retention",
    "apply_retention_async",
    "get_retention",
    "set_retention",
]

_DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days each kind of row is kept."""

    raw_data_days: int = 30
    minute_rollups_days: int = 2
    hourly_rollups_days: int = 365
    daily_rollups_days: int = 1825

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number of days >= 1, got {value!r}")


_KEYS = {name: f"retention.{name}" for name in RetentionPolicy.__dataclass_fields__}


def set_retention(
    conn: sqlite3.Connection,
    raw_data_days: int = 30,
    hourly_rollups_days: int = 365,
    daily_rollups_days: int = 1825,
    *,
    minute_rollups_days: int = 2,
) -> RetentionPolicy:
    """Store the retention policy in ``meta`` (validated); the workers apply it on their next round."""
    policy = RetentionPolicy(raw_data_days, minute_rollups_days, hourly_rollups_days, daily_rollups_days)
    with _txn(conn):
        for name, value in asdict(policy).items():
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (_KEYS[name], str(value)),
            )
    return policy


def _policy_from(rows: list[Any]) -> RetentionPolicy:
    stored = {k: v for k, v in rows}
    kwargs = {name: int(stored[key]) for name, key in _KEYS.items() if key in stored}
    return RetentionPolicy(**kwargs)


_SELECT_POLICY = "SELECT key, value FROM meta WHERE key LIKE 'retention.%'"


def get_retention(conn: sqlite3.Connection) -> RetentionPolicy:
    """The stored policy (defaults for anything never set)."""
    return _policy_from(conn.execute(_SELECT_POLICY).fetchall())


def _deletes(policy: RetentionPolicy, now_ns: int) -> Generator[tuple[str, tuple[int]], None, None]:
    raw = now_ns - policy.raw_data_days * _DAY_NS
    yield "DELETE FROM spans WHERE start_ns < ?", (raw,)
    yield "DELETE FROM requests WHERE start_ns < ?", (raw,)
    yield "DELETE FROM dead_letters WHERE received_ns < ?", (raw,)
    for grain, days in (
        ("minute", policy.minute_rollups_days),
        ("hour", policy.hourly_rollups_days),
        ("day", policy.daily_rollups_days),
    ):
        cutoff_s = (now_ns - days * _DAY_NS) // 1_000_000_000
        yield f"DELETE FROM rollup_{grain} WHERE bucket < ?", (cutoff_s,)
        yield f"DELETE FROM loaded_{grain} WHERE bucket < ?", (cutoff_s,)
        if grain in DASH_GRAINS:  # dashboard sums of the same rollups (spendtrace.storage._dash)
            yield f"DELETE FROM dash_{grain} WHERE bucket < ?", (cutoff_s,)


class _txn:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def apply_retention(conn: sqlite3.Connection, now_ns: int | None = None) -> int:
    """Delete every row older than the stored policy allows, in one transaction; returns rows deleted.

    ``now_ns`` defaults to the current time.
    """
    if now_ns is None:
        now_ns = time.time_ns()
    policy = get_retention(conn)
    deleted = 0
    with _txn(conn):
        for sql, params in _deletes(policy, now_ns):
            deleted += conn.execute(sql, params).rowcount
    return deleted


async def apply_retention_async(aconn: aiosqlite.Connection, now_ns: int | None = None) -> int:
    """``apply_retention`` for an ``aiosqlite`` connection."""
    if now_ns is None:
        now_ns = time.time_ns()
    async with aconn.execute(_SELECT_POLICY) as cur:
        policy = _policy_from(list(await cur.fetchall()))
    deleted = 0
    await aconn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in _deletes(policy, now_ns):
            cur2 = await aconn.execute(sql, params)
            deleted += cur2.rowcount
            await cur2.close()
        await aconn.execute("COMMIT")
    except BaseException:
        await aconn.execute("ROLLBACK")
        raise
    return deleted
