"""``AlertStore`` on SQLite: the ``alert_rules``, ``alert_state``, ``alert_events`` and ``alert_deliveries`` tables.

One connection per store (WAL, autocommit), shared by threads under a lock. ``claim_firing`` keeps
"one firing per cooldown" with one ``BEGIN IMMEDIATE`` transaction: the write lock is taken before
the rule version and the cooldown are checked, so of two processes claiming the same crossing the
second sees the first one's state row and records nothing. Spend is read from the rollups'
``service = ''`` rows (span-level totals). Driver errors surface as ``StorageError``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from spendtrace.server.model.alerts import AlertEvent, AlertRule, Grain
from spendtrace.server.store.sqlite._db import Guard, connect

__all__ = ["SQLiteAlertStore"]

_TABLES: dict[str, str] = {"minute": "rollup_minute", "hour": "rollup_hour", "day": "rollup_day"}
_SCOPE_COLUMNS: dict[str, str] = {"feature": "feature", "user": "user_id", "endpoint": "endpoint"}
_COLUMNS = (
    "id, name, kind, scope, scope_value, threshold_nano, window_minutes, cooldown_minutes, params, "
    "webhook, webhook_format, enabled, created_ns, updated_ns"
)
_EVENT_COLUMNS = "id, rule_id, rule_name, fired_ns, scope, scope_value, value_nano, threshold_nano, message, delivery"


def _rule_from_row(row: Sequence[Any]) -> AlertRule:
    return AlertRule(
        id=int(row[0]), name=row[1], kind=row[2], scope=row[3], scope_value=row[4],
        threshold_nano=None if row[5] is None else int(row[5]),
        window_minutes=None if row[6] is None else int(row[6]), cooldown_minutes=int(row[7]),
        params=json.loads(row[8] or "{}"), webhook=row[9], webhook_format=row[10], enabled=bool(row[11]),
        created_ns=int(row[12]), updated_ns=int(row[13]),
    )


def _event_from_row(row: Sequence[Any]) -> AlertEvent:
    return AlertEvent(
        id=int(row[0]), rule_id=int(row[1]), rule_name=row[2], kind="", fired_ns=int(row[3]), scope=row[4],
        scope_value=row[5], value_nano=int(row[6]), threshold_nano=None if row[7] is None else int(row[7]),
        state_key="", message=row[8], delivery=row[9],
    )


def _table(grain: Grain) -> str:
    try:
        return _TABLES[grain]
    except KeyError:
        raise ValueError(f"unknown rollup grain {grain!r} (minute, hour or day)") from None



def _as_rule_id(name_or_id: str | int) -> int | None:
    """The rule id ``name_or_id`` may stand for: an int, or ASCII digits, within SQLite's 64-bit range."""
    if isinstance(name_or_id, str):
        if not (name_or_id.isascii() and name_or_id.isdigit()):
            return None
        name_or_id = int(name_or_id)
    return name_or_id if 0 <= name_or_id < 2**63 else None

class SQLiteAlertStore:
    """The alert state of one SQLite file (created with the current schema when missing, unless ``readonly``)."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = os.fspath(path)
        self.url = f"sqlite:///{os.path.abspath(self.path)}"
        self._conn: sqlite3.Connection = connect(self.path, readonly=readonly, check_same_thread=False)
        self._guard = Guard(self.path)

    def __repr__(self) -> str:
        return f"SQLiteAlertStore({self.path!r})"

    def __enter__(self) -> SQLiteAlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        with self._guard:
            self._conn.close()

    # -- rules --------------------------------------------------------------------------------

    def save_rule(
        self,
        *,
        name: str,
        kind: str,
        scope: str,
        scope_value: str,
        threshold_nano: int | None,
        window_minutes: int | None,
        cooldown_minutes: int,
        params: Mapping[str, object],
        webhook: str | None,
        webhook_format: str,
        now_ns: int,
    ) -> AlertRule:
        """Insert or replace (by name) in one transaction; ``updated_ns`` strictly above every stored one."""
        with self._guard:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Bump updated_ns strictly, so workers notice a change even within one clock tick.
                row = conn.execute("SELECT coalesce(max(updated_ns), 0) FROM alert_rules").fetchone()
                now = max(now_ns, int(row[0]) + 1)
                conn.execute(
                    """
                    INSERT INTO alert_rules (name, kind, scope, scope_value, threshold_nano, window_minutes,
                                             cooldown_minutes, params, webhook, webhook_format, enabled,
                                             created_ns, updated_ns)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)
                    ON CONFLICT(name) DO UPDATE SET
                        kind = excluded.kind, scope = excluded.scope, scope_value = excluded.scope_value,
                        threshold_nano = excluded.threshold_nano, window_minutes = excluded.window_minutes,
                        cooldown_minutes = excluded.cooldown_minutes, params = excluded.params,
                        webhook = excluded.webhook, webhook_format = excluded.webhook_format,
                        enabled = 1, updated_ns = excluded.updated_ns
                    """,
                    (
                        name, kind, scope, scope_value, threshold_nano, window_minutes, cooldown_minutes,
                        json.dumps(dict(params), sort_keys=True), webhook, webhook_format, now, now,
                    ),
                )
                saved = conn.execute(f"SELECT {_COLUMNS} FROM alert_rules WHERE name = ?", (name,)).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return _rule_from_row(saved)

    def list_rules(self, *, enabled_only: bool = True) -> list[AlertRule]:
        """The rules, ordered by id."""
        where = " WHERE enabled = 1" if enabled_only else ""
        with self._guard:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM alert_rules{where} ORDER BY id").fetchall()
        return [_rule_from_row(r) for r in rows]

    def rules_version(self) -> tuple[int, int]:
        """(row count, newest ``updated_ns``) of ``alert_rules``."""
        with self._guard:
            row = self._conn.execute("SELECT count(*), coalesce(max(updated_ns), 0) FROM alert_rules").fetchone()
        return int(row[0]), int(row[1])

    def remove_rule(self, name_or_id: str | int) -> bool:
        """Delete the rule and its ``alert_state`` rows in one transaction."""
        with self._guard:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                as_id = _as_rule_id(name_or_id)
                if as_id is not None:
                    row = conn.execute(
                        "SELECT id FROM alert_rules WHERE id = ? OR name = ?", (as_id, str(name_or_id))
                    ).fetchone()
                else:
                    row = conn.execute("SELECT id FROM alert_rules WHERE name = ?", (name_or_id,)).fetchone()
                if row is None:
                    conn.execute("ROLLBACK")
                    return False
                conn.execute("DELETE FROM alert_rules WHERE id = ?", (row[0],))
                conn.execute("DELETE FROM alert_state WHERE rule_id = ?", (row[0],))
                conn.execute("COMMIT")
                return True
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- spend, read from the rollups -----------------------------------------------------------

    @staticmethod
    def _base(grain: Grain, since_s: int, until_s: int | None) -> tuple[str, tuple[Any, ...]]:
        where = " AND bucket < ?" if until_s is not None else ""
        params: tuple[Any, ...] = (since_s,) if until_s is None else (since_s, until_s)
        return f"FROM {_table(grain)} WHERE service = '' AND bucket >= ?{where}", params

    def spend(
        self, grain: Grain, since_s: int, until_s: int | None = None, *, scope: str, scope_value: str = ""
    ) -> int:
        """One sum over the grain's rollup, filtered on the scope's column (none for ``total``)."""
        base, params = self._base(grain, since_s, until_s)
        col = _SCOPE_COLUMNS.get(scope)
        if col is not None:
            base += f" AND {col} = ?"
            params = (*params, scope_value)
        with self._guard:
            return int(self._conn.execute(f"SELECT coalesce(sum(cost_nano), 0) {base}", params).fetchone()[0])

    def spend_per_value(self, grain: Grain, since_s: int, until_s: int | None = None, *, scope: str) -> dict[str, int]:
        """One ``GROUP BY`` over the scope's column (one sum under ``""`` for ``total``)."""
        base, params = self._base(grain, since_s, until_s)
        col = _SCOPE_COLUMNS.get(scope)
        with self._guard:
            if col is None:
                return {"": int(self._conn.execute(f"SELECT coalesce(sum(cost_nano), 0) {base}", params).fetchone()[0])}
            rows = self._conn.execute(f"SELECT {col}, sum(cost_nano) {base} GROUP BY {col}", params).fetchall()
        return {str(v): int(c) for v, c in rows}

    # -- firing -------------------------------------------------------------------------------

    def last_fired(self, rule_id: int, state_keys: Sequence[str]) -> dict[str, int | None]:
        """``alert_state`` rows of the rule among ``state_keys``."""
        if not state_keys:
            return {}
        marks = ",".join("?" * len(state_keys))
        with self._guard:
            rows = self._conn.execute(
                f"SELECT state_key, last_fired_ns FROM alert_state WHERE rule_id = ? AND state_key IN ({marks})",
                (rule_id, *state_keys),
            ).fetchall()
        return {str(k): None if t is None else int(t) for k, t in rows}

    def claim_firing(
        self,
        rule: AlertRule,
        *,
        state_key: str,
        cooldown_ns: int | None,
        fired_ns: int,
        value_nano: int,
        message: str,
        also_mark: Sequence[str] = (),
    ) -> AlertEvent | None:
        """Check the rule's version and the cooldown, insert the event and stamp the state: one ``BEGIN IMMEDIATE``."""
        with self._guard:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not conn.execute(
                    "SELECT 1 FROM alert_rules WHERE id = ? AND updated_ns = ?", (rule.id, rule.updated_ns)
                ).fetchone():
                    conn.execute("ROLLBACK")
                    return None  # removed or changed since it was read: the next evaluation sees the new version
                row = conn.execute(
                    "SELECT last_fired_ns FROM alert_state WHERE rule_id = ? AND state_key = ?", (rule.id, state_key)
                ).fetchone()
                if row is not None and row[0] is not None and (
                    cooldown_ns is None or fired_ns - int(row[0]) < cooldown_ns
                ):
                    conn.execute("ROLLBACK")
                    return None
                cur = conn.execute(
                    "INSERT INTO alert_events (rule_id, rule_name, fired_ns, scope, scope_value, value_nano,"
                    " threshold_nano, message, delivery) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                    (rule.id, rule.name, fired_ns, rule.scope, rule.scope_value, value_nano, rule.threshold_nano,
                     message),
                )
                event_id = int(cur.lastrowid or 0)
                conn.executemany(
                    "INSERT INTO alert_state (rule_id, state_key, last_fired_ns) VALUES (?, ?, ?)"
                    " ON CONFLICT(rule_id, state_key) DO UPDATE SET last_fired_ns = excluded.last_fired_ns",
                    [(rule.id, k, fired_ns) for k in (state_key, *also_mark)],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return AlertEvent(
            id=event_id, rule_id=rule.id, rule_name=rule.name, kind=rule.kind, fired_ns=fired_ns, scope=rule.scope,
            scope_value=rule.scope_value, value_nano=value_nano, threshold_nano=rule.threshold_nano,
            state_key=state_key, message=message,
        )

    # -- events and their delivery ------------------------------------------------------------

    def claim_delivery(self, event_id: int) -> bool:
        """``pending`` -> ``sending`` in one conditional ``UPDATE``."""
        with self._guard:
            cur = self._conn.execute(
                "UPDATE alert_events SET delivery = 'sending' WHERE id = ? AND delivery = 'pending'", (event_id,)
            )
            return cur.rowcount == 1

    def record_delivery(
        self,
        event_id: int,
        *,
        attempt: int | None,
        status: int | None = None,
        error: str | None = None,
        final: str | None = None,
        at_ns: int | None = None,
    ) -> None:
        """One ``alert_deliveries`` row and/or the event's final ``delivery``, in one transaction."""
        with self._guard:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if attempt is not None:
                    conn.execute(
                        "INSERT INTO alert_deliveries (event_id, attempt, at_ns, status, error) VALUES (?, ?, ?, ?, ?)",
                        (event_id, attempt, time.time_ns() if at_ns is None else at_ns, status, error),
                    )
                if final is not None:
                    conn.execute("UPDATE alert_events SET delivery = ? WHERE id = ?", (final, event_id))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def pending_events(self, before_ns: int, *, limit: int | None = None) -> list[AlertEvent]:
        """``delivery = 'pending'`` events older than ``before_ns``, by id."""
        sql = f"SELECT {_EVENT_COLUMNS} FROM alert_events WHERE delivery = 'pending' AND fired_ns < ? ORDER BY id"
        params: tuple[Any, ...] = (before_ns,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (before_ns, max(0, int(limit)))
        with self._guard:
            rows = self._conn.execute(sql, params).fetchall()
        return [_event_from_row(r) for r in rows]

    def events_after(self, after_id: int, limit: int = 1000) -> list[AlertEvent]:
        """Events above ``after_id``, by id."""
        with self._guard:
            rows = self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM alert_events WHERE id > ? ORDER BY id LIMIT ?",
                (int(after_id), max(0, int(limit))),
            ).fetchall()
        return [_event_from_row(r) for r in rows]

    def latest_events(self, limit: int = 100) -> list[AlertEvent]:
        """The newest events by id, newest first."""
        with self._guard:
            rows = self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM alert_events ORDER BY id DESC LIMIT ?", (max(0, int(limit)),)
            ).fetchall()
        return [_event_from_row(r) for r in rows]

    def last_event_id(self) -> int:
        """``max(id)`` of ``alert_events``, 0 when empty."""
        with self._guard:
            return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()[0])

    def count_events(self) -> int:
        """Rows in ``alert_events``."""
        with self._guard:
            return int(self._conn.execute("SELECT COUNT(*) FROM alert_events").fetchone()[0])

    def count_failed_deliveries(self) -> int:
        """Rows in ``alert_deliveries`` with an error or an HTTP status of 300 or more."""
        with self._guard:
            return int(self._conn.execute(
                "SELECT COUNT(*) FROM alert_deliveries WHERE error IS NOT NULL OR status >= 300"
            ).fetchone()[0])
