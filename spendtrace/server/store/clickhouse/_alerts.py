"""``ClickHouseAlertStore``: alert rules, firing state, events and deliveries in ClickHouse itself.

ClickHouse has no transactions, so the ``AlertStore`` contract's atomic steps are *claims*
(``_claims``): one insert whose deduplication token names what is taken, read back to see whose
nonce landed. Workers on several machines sharing one ClickHouse server therefore share the alert
state too (schema v5, ``_ddl``):

- ``alert_rules``: a ReplacingMergeTree by id, read ``FINAL``; saving a rule inserts its new version
  (``updated_ns``), removing it a tombstone (``deleted = 1``). A new rule's id is claimed
  (``rule-id:n`` in ``alert_claims``).
- ``claim_firing`` claims *the next firing of (rule, state key) after the one it saw*: the token is
  (rule id, state key, last ``fired_ns`` read, or none). Two workers evaluating the same crossing saw
  the same last firing, so they make the same claim and one wins; a worker that read a stale state
  claims a firing already taken and loses. ``also_mark`` keys are claimed the same way, so a lower
  budget step cannot fire after a higher one marked it. Only then is the event stored, with an id
  claimed in ``alert_events`` itself (``max(id) + 1``; a loser tries the next), so events become
  visible in id order and ``events_after`` tails miss none.
- ``claim_delivery`` claims ``deliver:event`` the same way; ``alert_deliveries`` holds every attempt
  and final status as one row each (one insert: "both or neither"); an event's ``delivery`` is its
  newest final row, ``pending`` without one.

Guaranteed: one event per rule per state key per cooldown, and one ``claim_firing`` / ``claim_delivery``
caller told it won, however many workers race (within ``CLAIM_WINDOW`` claims, on one server).
Not atomic, unlike SQLite: a process killed between winning a firing and storing its event loses that
event (the cooldown starts without one); a rule edited between a claim's version check and its insert
may fire once under the old version; two processes saving a *new* rule name at the same instant can
create two rules of that name (rules are saved by people, rarely at once). Webhook URLs are stored in
``alert_rules`` as the SQLite backend stores them: readable by any ClickHouse user granted ``SELECT``
on that table (docs/DEPLOYMENT.md), and never shown in full by the readers; a ``chdb://`` directory
spendtrace creates is 0700 (``_client.private_dir``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spendtrace.errors import StorageError
from spendtrace.server.model.alerts import AlertEvent, AlertRule, Grain
from spendtrace.server.store.clickhouse._claims import new_nonce, token, try_insert
from spendtrace.server.store.clickhouse._client import Conn, connect, parse_url

if TYPE_CHECKING:
    from spendtrace.server.store.base import AlertStore

__all__ = ["FIRED_TTL_S", "ClickHouseAlertStore"]

_TABLES = {"minute": "rollup_minute", "hour": "rollup_hour", "day": "rollup_day"}
_SCOPE_COLUMNS = {"feature": "feature", "user": "user_id", "endpoint": "endpoint"}
_RULE_COLUMNS = (
    "id", "name", "kind", "scope", "scope_value", "threshold_nano", "window_minutes", "cooldown_minutes", "params",
    "webhook", "webhook_format", "enabled", "created_ns", "updated_ns",
)
_EVENT_COLUMNS = (
    "id", "rule_id", "rule_name", "fired_ns", "scope", "scope_value", "value_nano", "threshold_nano", "message",
)
_CLAIM_COLUMNS = ("rule_id", "claim", "nonce", "state_key", "fired_ns", "at_ns")
_DELIVERY_COLUMNS = ("event_id", "ver", "attempt", "at_ns", "status", "error", "final")
_LIVE_RULES = "SELECT {cols} FROM alert_rules FINAL WHERE deleted = 0"
#: claims tried before giving up on an id (each loss means another caller took that id just now)
_MAX_TRIES = 1000
#: seconds a store's copy of the firing state serves ``last_fired`` (a pre-check: the claim decides)
FIRED_TTL_S = 1.0
_log = logging.getLogger(__name__)
#: chDB directories already warned about (once per process)
_warned: set[str] = set()


def _rule(row: Sequence[Any]) -> AlertRule:
    return AlertRule(
        id=int(row[0]), name=str(row[1]), kind=str(row[2]), scope=str(row[3]), scope_value=str(row[4]),
        threshold_nano=None if row[5] is None else int(row[5]),
        window_minutes=None if row[6] is None else int(row[6]), cooldown_minutes=int(row[7]),
        params=json.loads(row[8] or "{}"), webhook=row[9], webhook_format=str(row[10]), enabled=bool(row[11]),
        created_ns=int(row[12]), updated_ns=int(row[13]),
    )


def _rule_id(name_or_id: str | int) -> int | None:
    """The rule id ``name_or_id`` may stand for: an int, or ASCII digits, within UInt64."""
    if isinstance(name_or_id, str):
        if not (name_or_id.isascii() and name_or_id.isdigit()):
            return None
        name_or_id = int(name_or_id)
    return name_or_id if 0 <= name_or_id < 2**64 else None


def _warn_if_readable(url: str) -> None:
    """One WARNING when a webhook URL goes into a chDB directory other local users can enter."""
    scheme, kwargs, _ = parse_url(url)
    if scheme != "chdb" or kwargs["path"] in _warned:
        return
    try:
        mode = os.stat(kwargs["path"]).st_mode
    except OSError:
        return
    if mode & 0o077:
        _warned.add(kwargs["path"])
        _log.warning("webhook URLs are stored in %s, which other users can read (mode %o): chmod 700 it",
                     kwargs["path"], mode & 0o777)


class ClickHouseAlertStore:
    """The alert state of one ClickHouse database (see the module docstring for how claims are kept)."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self._readonly = readonly
        self._ch: Conn = connect(url, readonly=readonly)
        self._ver_lock = threading.Lock()
        self._last_ver = 0
        self._fired_lock = threading.Lock()
        self._fired: dict[int, dict[str, int | None]] | None = None
        self._fired_at = 0.0
        if not readonly:
            from spendtrace.server.store.clickhouse._side_file import import_side_file

            import_side_file(self._ch, url)  # a chDB store upgraded from before v5: its side file, once

    def __repr__(self) -> str:
        return f"ClickHouseAlertStore({self.url!r})"

    def __enter__(self) -> ClickHouseAlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the ClickHouse client."""
        self._ch.close()

    def _writable(self) -> None:
        if self._readonly:
            raise StorageError(f"{self.url}: alert store opened read-only")

    def _ver(self) -> int:
        """A version stamp above every one this store gave (wall clock, strictly increasing here)."""
        with self._ver_lock:
            self._last_ver = max(time.time_ns(), self._last_ver + 1)
            return self._last_ver

    def _claim(self, table: str, names: Sequence[str], row: Sequence[Any], claim_token: str, check: str,
               params: Sequence[Any], nonce: str) -> bool:
        """Insert a claim row; True when the row read back by ``check`` carries our ``nonce``."""
        try_insert(self._ch, table, names, row, claim_token)
        got = self._ch.tuples(check, params)
        return bool(got) and str(got[0][0]) == nonce

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
        """Insert the rule's new version (keeping the id of a live rule of that name, else claiming a new id)."""
        self._writable()
        newest = int(self._ch.tuples("SELECT max(updated_ns) FROM alert_rules")[0][0] or 0)
        now = max(now_ns, newest + 1)
        found = self._ch.tuples(
            _LIVE_RULES.format(cols="id, created_ns") + " AND name = %s ORDER BY id LIMIT 1", (name,)
        )
        if found:
            rule_id, created = int(found[0][0]), int(found[0][1])
        else:
            rule_id, created = self._new_rule_id(), now
        if webhook:
            _warn_if_readable(self.url)
        text = json.dumps(dict(params), sort_keys=True)
        row = (rule_id, name, kind, scope, scope_value, threshold_nano, window_minutes, cooldown_minutes, text,
               webhook, webhook_format, 1, created, now)
        self._ch.insert("alert_rules", [[v] for v in row], _RULE_COLUMNS)
        return _rule(row)

    def _new_rule_id(self) -> int:
        """Claim the next free rule id (``rule-id:n`` in ``alert_claims``)."""
        n = int(self._ch.tuples("SELECT max(id) FROM alert_rules")[0][0] or 0) + 1
        for _ in range(_MAX_TRIES):
            nonce, tok = new_nonce(), token("rule-id", n)
            if self._claim(
                "alert_claims", _CLAIM_COLUMNS, (0, tok, nonce, "", 0, time.time_ns()), tok,
                "SELECT nonce FROM alert_claims WHERE rule_id = 0 AND claim = %s ORDER BY at_ns, nonce LIMIT 1",
                (tok,), nonce,
            ):
                return n
            n += 1  # taken just now (or by a save that died before storing its rule): the next one
        raise StorageError(f"{self.url}: no free alert rule id after {_MAX_TRIES} tries")

    def list_rules(self, *, enabled_only: bool = True) -> list[AlertRule]:
        """The live rules, ordered by id."""
        where = " AND enabled = 1" if enabled_only else ""
        rows = self._ch.tuples(_LIVE_RULES.format(cols=", ".join(_RULE_COLUMNS)) + where + " ORDER BY id")
        return [_rule(r) for r in rows]

    def rules_version(self) -> tuple[int, int]:
        """(live rules, newest ``updated_ns`` of any version or tombstone)."""
        row = self._ch.tuples(
            "SELECT (SELECT count() FROM alert_rules FINAL WHERE deleted = 0),"
            " (SELECT max(updated_ns) FROM alert_rules)"
        )[0]
        return int(row[0]), int(row[1] or 0)

    def remove_rule(self, name_or_id: str | int) -> bool:
        """Insert a tombstone for the live rule of that name or id; its claims stop counting (``last_fired``)."""
        self._writable()
        as_id = _rule_id(name_or_id)
        cols = ", ".join(_RULE_COLUMNS)
        if as_id is not None:
            rows = self._ch.tuples(
                _LIVE_RULES.format(cols=cols) + " AND (id = %s OR name = %s) ORDER BY id != %s, id LIMIT 1",
                (as_id, str(name_or_id), as_id),
            )
        else:
            rows = self._ch.tuples(_LIVE_RULES.format(cols=cols) + " AND name = %s LIMIT 1", (name_or_id,))
        if not rows:
            return False
        newest = int(self._ch.tuples("SELECT max(updated_ns) FROM alert_rules")[0][0] or 0)
        row = list(rows[0])
        row[13] = max(time.time_ns(), newest + 1)
        self._ch.insert("alert_rules", [[v] for v in (*row, 1)], (*_RULE_COLUMNS, "deleted"))
        with self._fired_lock:
            if self._fired is not None:
                self._fired.pop(int(row[0]), None)
        return True

    # -- spend, read from the rollups -----------------------------------------------------------

    @staticmethod
    def _where(grain: Grain, since_s: int, until_s: int | None) -> tuple[str, list[Any]]:
        table = _TABLES.get(grain)
        if table is None:
            raise ValueError(f"unknown rollup grain {grain!r} (minute, hour or day)")
        params: list[Any] = [since_s]
        where = f"FROM {table} WHERE service = '' AND bucket >= %s"
        if until_s is not None:
            where += " AND bucket < %s"
            params.append(until_s)
        return where, params

    def spend(
        self, grain: Grain, since_s: int, until_s: int | None = None, *, scope: str, scope_value: str = ""
    ) -> int:
        """One sum over the grain's rollup, filtered on the scope's column (none for ``total``)."""
        where, params = self._where(grain, since_s, until_s)
        col = _SCOPE_COLUMNS.get(scope)
        if col is not None:
            where += f" AND {col} = %s"
            params.append(scope_value)
        return int(self._ch.tuples(f"SELECT sum(cost_nano) {where}", params)[0][0] or 0)

    def spend_per_value(self, grain: Grain, since_s: int, until_s: int | None = None, *, scope: str) -> dict[str, int]:
        """One ``GROUP BY`` over the scope's column (one sum under ``""`` for ``total``)."""
        where, params = self._where(grain, since_s, until_s)
        col = _SCOPE_COLUMNS.get(scope)
        if col is None:
            return {"": int(self._ch.tuples(f"SELECT sum(cost_nano) {where}", params)[0][0] or 0)}
        rows = self._ch.tuples(f"SELECT toString({col}) AS v, sum(cost_nano) {where} GROUP BY v", params)
        return {str(v): int(c) for v, c in rows}

    # -- firing -------------------------------------------------------------------------------

    def last_fired(self, rule_id: int, state_keys: Sequence[str]) -> dict[str, int | None]:
        """The newest firing per key of a live rule, from a copy of every rule's state at most
        ``FIRED_TTL_S`` old (plus this store's own firings): the contract's cheap, possibly stale pre-check.

        One ClickHouse query costs milliseconds, and the evaluator asks once per rule per batch; the copy
        makes that one query per ``FIRED_TTL_S``. ``claim_firing`` reads the state afresh.
        """
        if not state_keys:
            return {}
        with self._fired_lock:
            if self._fired is None or time.monotonic() - self._fired_at > FIRED_TTL_S:
                self._fired = self._read_fired(None, ())
                self._fired_at = time.monotonic()
            known = self._fired.get(rule_id, {})
            return {k: known[k] for k in state_keys if k in known}

    def _read_fired(self, rule_id: int | None, state_keys: Sequence[str]) -> dict[int, dict[str, int | None]]:
        """The newest firing per (live rule, key): of one rule's ``state_keys``, or of every rule (None)."""
        where: str = "rule_id > 0"
        params: tuple[Any, ...] = ()
        if rule_id is not None:
            where, params = "rule_id = %s AND state_key IN %s", (rule_id, tuple(state_keys))
        rows = self._ch.tuples(
            f"SELECT rule_id, state_key, max(fired_ns) FROM alert_claims WHERE {where}"
            " AND rule_id IN (SELECT id FROM alert_rules FINAL WHERE deleted = 0) GROUP BY rule_id, state_key",
            params,
        )
        out: dict[int, dict[str, int | None]] = {}
        for r, k, t in rows:
            out.setdefault(int(r), {})[str(k)] = int(t)
        return out

    def _note_fired(self, rule_id: int, keys: Sequence[str], fired_ns: int) -> None:
        """Keep this store's copy of the state current with its own firing."""
        with self._fired_lock:
            if self._fired is not None:
                known = self._fired.setdefault(rule_id, {})
                for k in keys:
                    known[k] = max(known.get(k) or 0, fired_ns)

    def _claim_fire(self, rule_id: int, key: str, prev: int | None, fired_ns: int) -> bool:
        """Claim the firing of (rule, key) that follows the one at ``prev`` (None: its first)."""
        nonce, tok = new_nonce(), token("fire", rule_id, key, prev)
        return self._claim(
            "alert_claims", _CLAIM_COLUMNS, (rule_id, tok, nonce, key, fired_ns, time.time_ns()), tok,
            "SELECT nonce FROM alert_claims WHERE rule_id = %s AND claim = %s ORDER BY at_ns, nonce LIMIT 1",
            (rule_id, tok), nonce,
        )

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
        """Check the rule's version and the cooldown, claim the next firing, mark, then store the event."""
        self._writable()
        current = self._ch.tuples("SELECT updated_ns, deleted FROM alert_rules FINAL WHERE id = %s", (rule.id,))
        if not current or int(current[0][0]) != rule.updated_ns or int(current[0][1]):
            return None  # removed or changed since it was read: the next evaluation sees the new version
        marks = [k for k in dict.fromkeys(also_mark) if k != state_key]
        last = self._read_fired(rule.id, [state_key, *marks]).get(rule.id, {})
        prev = last.get(state_key)
        if prev is not None and (cooldown_ns is None or fired_ns - prev < cooldown_ns):
            return None
        if not self._claim_fire(rule.id, state_key, prev, fired_ns):
            return None  # another caller took this crossing
        for key in marks:  # whoever takes a mark's slot, that key now counts as fired
            tok = token("fire", rule.id, key, last.get(key))
            try_insert(self._ch, "alert_claims", _CLAIM_COLUMNS,
                       (rule.id, tok, new_nonce(), key, fired_ns, time.time_ns()), tok)
        self._note_fired(rule.id, [state_key, *marks], fired_ns)
        event_id = self._store_event(rule, fired_ns, value_nano, message)
        return AlertEvent(
            id=event_id, rule_id=rule.id, rule_name=rule.name, kind=rule.kind, fired_ns=fired_ns, scope=rule.scope,
            scope_value=rule.scope_value, value_nano=value_nano, threshold_nano=rule.threshold_nano,
            state_key=state_key, message=message,
        )

    def _store_event(self, rule: AlertRule, fired_ns: int, value_nano: int, message: str) -> int:
        """Insert the event under the next free id (claimed by the insert itself); return the id."""
        n = self.last_event_id() + 1
        for _ in range(_MAX_TRIES):
            nonce = new_nonce()
            row = (n, rule.id, rule.name, fired_ns, rule.scope, rule.scope_value, value_nano, rule.threshold_nano,
                   message, nonce)
            if self._claim("alert_events", (*_EVENT_COLUMNS, "nonce"), row, token("event", n),
                           "SELECT nonce FROM alert_events WHERE id = %s LIMIT 1", (n,), nonce):
                return n
            n += 1
        raise StorageError(f"{self.url}: no free alert event id after {_MAX_TRIES} tries")

    # -- events and their delivery ------------------------------------------------------------

    def _deliveries(self, ids: Sequence[int]) -> dict[int, str]:
        """The newest final status of each of ``ids`` that has one."""
        if not ids:
            return {}
        rows = self._ch.tuples(
            "SELECT event_id, argMax(final, ver) FROM alert_deliveries WHERE final IS NOT NULL AND event_id IN %s"
            " GROUP BY event_id",
            (tuple(ids),),
        )
        return {int(i): str(d) for i, d in rows}

    def _events(self, where: str, params: Sequence[Any], order: str, limit: int | None) -> list[AlertEvent]:
        sql = f"SELECT {', '.join(_EVENT_COLUMNS)} FROM alert_events WHERE {where} ORDER BY id {order}"
        if limit is not None:
            sql += f" LIMIT {max(0, int(limit))}"
        rows = self._ch.tuples(sql, params)
        status = self._deliveries([int(r[0]) for r in rows])
        return [
            AlertEvent(
                id=int(r[0]), rule_id=int(r[1]), rule_name=str(r[2]), kind="", fired_ns=int(r[3]), scope=str(r[4]),
                scope_value=str(r[5]), value_nano=int(r[6]), threshold_nano=None if r[7] is None else int(r[7]),
                state_key="", message=str(r[8]), delivery=status.get(int(r[0]), "pending"),
            )
            for r in rows
        ]

    def claim_delivery(self, event_id: int) -> bool:
        """A ``pending`` event's ``deliver:event`` claim; the winner records ``sending``."""
        self._writable()
        if not self._ch.tuples("SELECT 1 FROM alert_events WHERE id = %s LIMIT 1", (event_id,)):
            return False
        if event_id in self._deliveries([event_id]):
            return False  # already sending, delivered or failed
        nonce, tok = new_nonce(), token("deliver", event_id)
        if not self._claim(
            "alert_claims", _CLAIM_COLUMNS, (0, tok, nonce, "", 0, time.time_ns()), tok,
            "SELECT nonce FROM alert_claims WHERE rule_id = 0 AND claim = %s ORDER BY at_ns, nonce LIMIT 1",
            (tok,), nonce,
        ):
            return False
        self._ch.insert("alert_deliveries", [[v] for v in (event_id, self._ver(), None, time.time_ns(), None, None,
                                                            "sending")], _DELIVERY_COLUMNS)
        return True

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
        """One ``alert_deliveries`` row holding the attempt and/or the final status: one insert."""
        self._writable()
        if attempt is None and final is None:
            return
        row = (event_id, self._ver(), attempt, time.time_ns() if at_ns is None else at_ns,
               None if attempt is None else status, None if attempt is None else error, final)
        self._ch.insert("alert_deliveries", [[v] for v in row], _DELIVERY_COLUMNS)

    def pending_events(self, before_ns: int, *, limit: int | None = None) -> list[AlertEvent]:
        """Events without a final status that fired before ``before_ns``, by id."""
        return self._events(
            "fired_ns < %s AND id NOT IN (SELECT event_id FROM alert_deliveries WHERE final IS NOT NULL)",
            (before_ns,), "", limit,
        )

    def events_after(self, after_id: int, limit: int = 1000) -> list[AlertEvent]:
        """Events above ``after_id``, by id."""
        return self._events("id > %s", (int(after_id),), "", limit)

    def latest_events(self, limit: int = 100) -> list[AlertEvent]:
        """The newest events by id, newest first."""
        return self._events("1", (), "DESC", limit)

    def last_event_id(self) -> int:
        """``max(id)`` of ``alert_events``, 0 when empty."""
        return int(self._ch.tuples("SELECT max(id) FROM alert_events")[0][0] or 0)

    def count_events(self) -> int:
        """Rows in ``alert_events`` (one per id: the id claim keeps one)."""
        return int(self._ch.tuples("SELECT count() FROM alert_events")[0][0])

    def count_failed_deliveries(self) -> int:
        """Attempts with an error or an HTTP status of 300 or more."""
        return int(self._ch.tuples(
            "SELECT count() FROM alert_deliveries WHERE attempt IS NOT NULL AND (error IS NOT NULL OR status >= 300)"
        )[0][0])


if TYPE_CHECKING:

    def _conforms(store: ClickHouseAlertStore) -> AlertStore:
        """mypy checks here that the class implements the role."""
        return store
