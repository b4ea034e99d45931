"""Retention: how long raw spans and each rollup grain are kept, stored in ``meta`` and applied by the workers.

Defaults: raw spans (with their ``requests`` rows, and dead letters by arrival time) 30 days,
minute rollups 2 days (they only serve the live view and short windows), hourly rollups 365
days, daily rollups 1825 days. Loaded and dashboard rollups follow their grain. Dashboards
read rollups, so their totals survive raw spans ageing out. A row is deleted when its time
(span start, request start, arrival, bucket start) is older than ``now - days`` (whole days
of 86,400 s, UTC).

Deleting runs in chunks (``apply_retention_chunk``), each one short transaction, so a worker
working off millions of aged rows stores its batches in between.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from spendtrace.errors import ConfigError
from spendtrace.server.store.sqlite._dash import GRAINS as DASH_GRAINS

if TYPE_CHECKING:
    import sqlite3

    import aiosqlite

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "RAW_DELETES",
    "RetentionPolicy",
    "apply_retention",
    "apply_retention_async",
    "apply_retention_chunk",
    "get_retention",
    "grain_statements",
    "read_retention_facts",
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


#: ``meta`` key of the latest raw-span cutoff applied (spans starting before it may have been deleted)
APPLIED_KEY = "horizon.raw_applied_ns"
_RECORD_APPLIED = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
    "CAST(max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER)) AS TEXT)"
)


def read_retention_facts(conn: sqlite3.Connection) -> tuple[int, int | None, int | None]:
    """(raw-span retention in ns, newest stored span start, latest raw cutoff applied): three small reads."""
    policy = _policy_from(conn.execute(_SELECT_POLICY).fetchall())
    (newest,) = conn.execute("SELECT max(start_ns) FROM spans").fetchone()
    applied = conn.execute("SELECT value FROM meta WHERE key = ?", (APPLIED_KEY,)).fetchone()
    return (
        policy.raw_data_days * _DAY_NS,
        None if newest is None else int(newest),
        None if applied is None else int(applied[0]),
    )


_Query = tuple[str, tuple[Any, ...]]
#: What a plan step gets back: the rows fetched and the statement's rowcount.
_Reply = tuple[list[Any], int]
_Plan = Generator[_Query, _Reply, tuple[int, bool]]

#: Rows a chunk deletes at most (see ``apply_retention_chunk``): 20,000 took 0.1-0.4x the write of one
#: 20,000-span batch at worst (``benchmarks/bench_retention.py``).
DEFAULT_CHUNK_ROWS = 20_000

_GRAIN_DAYS = (("minute", "minute_rollups_days"), ("hour", "hourly_rollups_days"), ("day", "daily_rollups_days"))

# Each statement walks an index from its oldest end (EXPLAIN QUERY PLAN checked by tests/sdk/test_retention.py),
# except dead letters: no index on received_ns, and there are few of them; ids follow arrival.
RAW_DELETES = (
    "DELETE FROM spans WHERE rowid IN (SELECT rowid FROM spans WHERE start_ns < ? ORDER BY start_ns LIMIT ?)",
    "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests WHERE start_ns < ? ORDER BY start_ns LIMIT ?)",
    "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE received_ns < ? ORDER BY id LIMIT ?)",
)


def grain_statements(grain: str) -> dict[str, str]:
    """The statements of one grain's chunk (keys: nth, first, rollup, loaded, and for dash grains pair0, pair, dash)."""
    sql = {
        "nth": f"SELECT bucket FROM rollup_{grain} WHERE bucket < ? ORDER BY bucket LIMIT 1 OFFSET ?",
        "first": f"SELECT min(bucket) FROM rollup_{grain}",
        "rollup": f"DELETE FROM rollup_{grain} WHERE bucket < ?",
        "loaded": f"DELETE FROM loaded_{grain} WHERE bucket < ?",
    }
    if grain in DASH_GRAINS:
        # dash_* keys do not start with bucket: one range per (dim, service), found by seeking from pair to pair
        sql["pair0"] = f"SELECT dim, service FROM dash_{grain} WHERE dim >= '' ORDER BY dim, service LIMIT 1"
        sql["pair"] = (
            f"SELECT dim, service FROM dash_{grain} WHERE (dim, service) > (?, ?) ORDER BY dim, service LIMIT 1"
        )
        sql["dash"] = f"DELETE FROM dash_{grain} WHERE dim = ? AND service = ? AND bucket < ?"
    return sql


def _chunk_plan(now_ns: int, limit: int) -> _Plan:
    """One chunk's statements (sent their replies); returns (rows deleted, nothing aged left).

    Steps run in order, sharing ``limit``: spans, requests, dead letters by rows, then each grain
    by whole buckets. A grain's rollup, loaded and dashboard rows of the same buckets go together,
    so ``dash_*`` still equals the sums of its rollups when the chunk commits.
    """
    rows, _ = yield _SELECT_POLICY, ()
    policy = _policy_from(rows)
    raw = now_ns - policy.raw_data_days * _DAY_NS
    budget = limit
    deleted = 0
    yield _RECORD_APPLIED, (APPLIED_KEY, str(raw))  # with the deletes it dates: one transaction
    for sql in RAW_DELETES:
        _, n = yield sql, (raw, budget)
        deleted += n
        budget -= n
        if budget <= 0:
            return deleted, False
    for grain, field in _GRAIN_DAYS:
        cutoff_s = (now_ns - getattr(policy, field) * _DAY_NS) // 1_000_000_000
        rollup_rows, other_rows, complete = yield from _grain_plan(grain_statements(grain), cutoff_s, budget)
        deleted += rollup_rows + other_rows
        budget -= rollup_rows
        if not complete or budget <= 0:
            return deleted, False
    return deleted, True


def _grain_plan(sql: dict[str, str], cutoff_s: int, budget: int) -> Generator[_Query, _Reply, tuple[int, int, bool]]:
    """Delete the oldest buckets holding at most ``budget`` rollup rows (or the oldest bucket alone, if larger)."""
    rows, _ = yield sql["nth"], (cutoff_s, budget)
    if rows:  # more than budget rows are aged: stop before the bucket of the row past the budget
        past = rows[0][0]
        first, _ = yield sql["first"], ()
        hi, complete = (past if past > first[0][0] else past + 1), False
    else:
        hi, complete = cutoff_s, True
    _, rollup_rows = yield sql["rollup"], (hi,)
    _, other_rows = yield sql["loaded"], (hi,)
    if "dash" in sql:
        pair, _ = yield sql["pair0"], ()
        while pair:
            dim, service = pair[0]
            _, n = yield sql["dash"], (dim, service, hi)
            other_rows += n
            pair, _ = yield sql["pair"], (dim, service)
    return rollup_rows, other_rows, complete


class _txn:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def apply_retention_chunk(
    conn: sqlite3.Connection, now_ns: int | None = None, *, limit: int = DEFAULT_CHUNK_ROWS
) -> tuple[int, bool]:
    """Delete some of what the stored policy says is too old, in one short transaction; returns (deleted, done).

    At most ``limit`` rows of spans, requests, dead letters and rollups together, oldest first;
    rollups go by whole buckets (with their loaded and dashboard rows), so the oldest bucket
    alone may exceed ``limit``. ``done`` means nothing aged is left; call again until it is.
    A busy database raises ``sqlite3.OperationalError`` and changes nothing.
    """
    if limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit!r}")
    plan = _chunk_plan(time.time_ns() if now_ns is None else now_ns, limit)
    with _txn(conn):
        try:
            query = next(plan)
            while True:
                cur = conn.execute(*query)
                query = plan.send((cur.fetchall(), cur.rowcount))
        except StopIteration as stop:
            result: tuple[int, bool] = stop.value
    return result


def apply_retention(conn: sqlite3.Connection, now_ns: int | None = None) -> int:
    """Delete every row older than the stored policy allows, chunk after chunk; returns rows deleted.

    ``now_ns`` defaults to the current time. Each chunk is its own transaction and keeps every
    invariant, so readers and other writers see consistent data in between.
    """
    if now_ns is None:
        now_ns = time.time_ns()
    total, done = 0, False
    while not done:
        deleted, done = apply_retention_chunk(conn, now_ns)
        total += deleted
    return total


async def apply_retention_async(aconn: aiosqlite.Connection, now_ns: int | None = None) -> int:
    """``apply_retention`` for an ``aiosqlite`` connection."""
    if now_ns is None:
        now_ns = time.time_ns()
    total, done = 0, False
    while not done:
        plan = _chunk_plan(now_ns, DEFAULT_CHUNK_ROWS)
        await aconn.execute("BEGIN IMMEDIATE")
        try:
            query = next(plan)
            while True:
                async with aconn.execute(*query) as cur:
                    reply = (list(await cur.fetchall()), cur.rowcount)
                query = plan.send(reply)
        except StopIteration as stop:
            await aconn.execute("COMMIT")
            deleted, done = stop.value
            total += deleted
        except BaseException:
            await aconn.execute("ROLLBACK")
            raise
    return total
