"""Upgrading a ``chdb://`` store whose alert state was kept in a SQLite side file (before schema v5).

Until v5 a chDB store kept alert rules, firing state, events and deliveries in ``<dir>/<database>.alerts.db``.
The first read-write ``ClickHouseAlertStore`` on such a store copies them into the alert tables (ids, versions,
the last firing per state key, delivery attempts and statuses as they were), then renames the file
``<file>.imported`` (kept, mode unchanged: it holds webhook URLs) so nothing is copied twice. Only a store
whose alert tables are still empty imports, and only the process that wins the import claim.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import Any

from spendtrace.server.store.clickhouse._claims import new_nonce, token, try_insert
from spendtrace.server.store.clickhouse._client import Conn, parse_url

__all__ = ["import_side_file", "side_file"]

_log = logging.getLogger(__name__)


def side_file(url: str) -> str | None:
    """Where a ``chdb://`` store kept its alert state before v5 (None for a server store)."""
    scheme, kwargs, database = parse_url(url)
    return os.path.join(kwargs["path"], f"{database}.alerts.db") if scheme == "chdb" else None


def import_side_file(conn: Conn, url: str) -> bool:
    """Copy the store's pre-v5 alert side file into the alert tables once; whether this call did."""
    path = side_file(url)
    if path is None or not os.path.isfile(path):
        return False
    if int(conn.tuples("SELECT (SELECT count() FROM alert_rules) + (SELECT count() FROM alert_events)")[0][0]):
        return False  # the tables have their own state already: never mix the two
    tok, nonce = token("import-side-file", path), new_nonce()
    try_insert(conn, "alert_claims", ("rule_id", "claim", "nonce", "state_key", "fired_ns", "at_ns"),
               (0, tok, nonce, "", 0, time.time_ns()), tok)
    won = conn.tuples("SELECT nonce FROM alert_claims WHERE rule_id = 0 AND claim = %s ORDER BY at_ns, nonce LIMIT 1",
                      (tok,))
    if not won or str(won[0][0]) != nonce:
        return False  # another process is importing it
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rules = src.execute(
            "SELECT id, name, kind, scope, scope_value, threshold_nano, window_minutes, cooldown_minutes, params,"
            " webhook, webhook_format, enabled, created_ns, updated_ns FROM alert_rules ORDER BY id"
        ).fetchall()
        state = src.execute(
            "SELECT rule_id, state_key, last_fired_ns FROM alert_state WHERE last_fired_ns IS NOT NULL"
        ).fetchall()
        events = src.execute(
            "SELECT id, rule_id, rule_name, fired_ns, scope, scope_value, value_nano, threshold_nano, message, delivery"
            " FROM alert_events ORDER BY id"
        ).fetchall()
        attempts = src.execute(
            "SELECT event_id, attempt, at_ns, status, error FROM alert_deliveries ORDER BY id"
        ).fetchall()
    finally:
        src.close()
    names = ("id", "name", "kind", "scope", "scope_value", "threshold_nano", "window_minutes", "cooldown_minutes",
             "params", "webhook", "webhook_format", "enabled", "created_ns", "updated_ns")
    if rules:
        conn.insert("alert_rules", [list(c) for c in zip(*rules, strict=True)], names)
    now = time.time_ns()
    if state:
        conn.insert(
            "alert_claims",
            [[int(r[0]) for r in state], [token("imported", r[0], r[1]) for r in state], ["" for _ in state],
             [str(r[1]) for r in state], [int(r[2]) for r in state], [now for _ in state]],
            ("rule_id", "claim", "nonce", "state_key", "fired_ns", "at_ns"),
        )
    if events:
        cols = [list(c) for c in zip(*(e[:9] for e in events), strict=True)]
        conn.insert("alert_events", [*cols, ["" for _ in events]],
                    ("id", "rule_id", "rule_name", "fired_ns", "scope", "scope_value", "value_nano", "threshold_nano",
                     "message", "nonce"))
    rows: list[tuple[Any, ...]] = [(int(a[0]), i + 1, int(a[1]), int(a[2]), a[3], a[4], None)
                                   for i, a in enumerate(attempts)]  # fmt: skip
    rows += [(int(e[0]), len(rows) + i + 1, None, now, None, None, str(e[9])) for i, e in enumerate(events)
             if e[9] != "pending"]  # fmt: skip
    if rows:
        conn.insert("alert_deliveries", [list(c) for c in zip(*rows, strict=True)],
                    ("event_id", "ver", "attempt", "at_ns", "status", "error", "final"))
    os.replace(path, path + ".imported")
    _log.warning("alert state of %s imported from its side file (kept as %s.imported)", url, path)
    return True
