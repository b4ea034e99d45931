"""Alert evaluation shared by the consumer workers and the local SQLite exporter.

After a batch commits, ``RuleChecker.check`` evaluates the rules whose scope the batch touched,
against an ``AlertStore`` (``spendtrace.server.store.base``). Spend is read from the rollups
(span-level totals, ``AlertStore.spend_per_value``), never from raw spans. Whether a rule fires is
decided by the store's ``claim_firing``, atomically with the cooldown check and the event's
record: however many processes evaluate (workers, apps writing locally), a rule fires at most
once per cooldown (budget percentages once per period). Synchronous on purpose: the exporter
calls it on its own thread, the workers on a thread of their own.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from spendtrace.errors import StorageError
from spendtrace.server.model.alerts import AlertEvent, AlertRule, Grain, scope_text
from spendtrace.server.model.money import minutes_text, usd_text
from spendtrace.server.store.base import AlertStore

__all__ = [
    "AlertEvent",
    "Memo",
    "RuleChecker",
    "Touched",
    "budget_spend",
    "evaluate_rules",
    "period_start",
    "rate_values",
    "scope_spend",
    "window_spend",
]

log = logging.getLogger("spendtrace.alerts")


@dataclass(frozen=True)
class Touched:
    """The scopes a committed batch changed; rules on other scopes need no look."""

    features: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    endpoints: frozenset[str] = frozenset()
    any: bool = False

    @classmethod
    def everything(cls) -> Touched:
        """Match every rule (a start-up check, or a result that says nothing about its scopes)."""
        return cls(any=True)

    @classmethod
    def from_result(cls, result: Any) -> Touched:
        """Read the touched scopes off a storage ``WriteResult`` (or anything with the same attributes)."""
        if isinstance(result, Touched):
            return result
        feats = _names(result, "features", "touched_features")
        users = _names(result, "user_ids", "users", "touched_users")
        eps = _names(result, "endpoints", "touched_endpoints")
        new = getattr(result, "inserted", getattr(result, "new_spans", None))
        if feats is None and users is None and eps is None:
            return cls(any=bool(new)) if new is not None else cls.everything()
        f, u, e = feats or frozenset(), users or frozenset(), eps or frozenset()
        return cls(f, u, e, any=bool(f or u or e))

    def covers(self, rule: AlertRule) -> bool:
        """Whether this batch may have changed the rule's spend."""
        if rule.scope == "total":
            return self.any
        if self.any and not (self.features or self.users or self.endpoints):
            return True  # we were told something changed, not what
        pool = {"feature": self.features, "user": self.users, "endpoint": self.endpoints}.get(rule.scope, frozenset())
        return rule.scope_value in pool


def _names(result: Any, *attrs: str) -> frozenset[str] | None:
    for a in attrs:
        v = getattr(result, a, None)
        if v is not None:
            return frozenset(str(x) for x in v if x)
    return None


# --- spend read from the rollups -----------------------------------------------------------------


#: One evaluation round's spend reads: (grain, since, until, scope kind) -> spend per scope value.
Memo = dict[tuple[str, int, int | None, str], dict[str, int]]


def scope_spend(
    store: AlertStore, rule: AlertRule, grain: Grain, since_s: int, until_s: int | None = None,
    memo: Memo | None = None,
) -> int:
    """Nano-dollars the rule's scope spent in ``grain`` rollup buckets from ``since_s`` (to before ``until_s``).

    With a ``memo`` (one per evaluation round) the sum is read for every value of the scope at
    once (``AlertStore.spend_per_value``), so rules sharing a window cost one read between them.
    """
    scope = rule.scope if rule.scope_column is not None else "total"
    if memo is None:
        return store.spend(grain, since_s, until_s, scope=scope, scope_value=rule.scope_value)
    key = (grain, since_s, until_s, scope)
    sums = memo.get(key)
    if sums is None:
        sums = memo[key] = store.spend_per_value(grain, since_s, until_s, scope=scope)
    return sums.get(rule.scope_value if scope != "total" else "", 0)


def window_spend(store: AlertStore, rule: AlertRule, now_ns: int, memo: Memo | None = None) -> int:
    """Spend over the rule's rolling window: the last ``window_minutes`` minute buckets, the current one included.

    Whole clock hours inside the window are read from the hour rollup (fewer rows, and minute
    rollups are kept for two days only); the partial hours at both ends from the minute rollup.
    """
    now_min = now_ns // 1_000_000_000 // 60 * 60
    since = now_min - (int(rule.window_minutes or 60) - 1) * 60
    first_hour = -(-since // 3600) * 3600
    this_hour = now_min // 3600 * 3600
    if first_hour >= this_hour:
        return scope_spend(store, rule, "minute", since, memo=memo)
    return (
        scope_spend(store, rule, "minute", since, first_hour, memo)
        + scope_spend(store, rule, "hour", first_hour, this_hour, memo)
        + scope_spend(store, rule, "minute", this_hour, memo=memo)
    )


def period_start(period: str, now_ns: int) -> int:
    """Epoch seconds of the start of the UTC day / ISO week (Monday) / month containing ``now_ns``."""
    d = dt.datetime.fromtimestamp(now_ns / 1e9, tz=dt.UTC).date()
    if period == "week":
        d = d - dt.timedelta(days=d.weekday())
    elif period == "month":
        d = d.replace(day=1)
    elif period != "day":
        raise ValueError(f"unknown budget period {period!r}")
    return calendar.timegm(d.timetuple())


def budget_spend(store: AlertStore, rule: AlertRule, now_ns: int, memo: Memo | None = None) -> tuple[int, int]:
    """(period start, spend since then): whole days from the day rollup, today from the minute rollup."""
    start = period_start(str(rule.params.get("period", "month")), now_ns)
    today = period_start("day", now_ns)
    spent = scope_spend(store, rule, "day", start, today, memo) + scope_spend(store, rule, "minute", today, memo=memo)
    return start, spent


def rate_values(store: AlertStore, rule: AlertRule, now_ns: int, memo: Memo | None = None) -> tuple[int, float]:
    """(last-hour spend, baseline): baseline = mean over the previous N days of the same clock hour's rollup."""
    now_s = now_ns // 1_000_000_000
    recent = scope_spend(store, rule, "minute", (now_s // 60 - 59) * 60, memo=memo)
    days = int(rule.params.get("lookback_days", 7))
    hour = now_s // 3600 * 3600
    total = 0
    for d in range(1, days + 1):
        b = hour - d * 86400
        total += scope_spend(store, rule, "hour", b, b + 3600, memo)
    return recent, total / days


# --- firing ----------------------------------------------------------------------------------------


def _who(rule: AlertRule) -> str:
    return scope_text(rule.scope, rule.scope_value)


def _usd(nano: float) -> str:
    return usd_text(nano)


def _candidate(
    store: AlertStore, rule: AlertRule, now_ns: int, memo: Memo | None
) -> tuple[str, int, str, list[str]] | None:
    """What the rule would fire now: (state key, value, message, extra state keys to mark), or None."""
    if rule.kind == "threshold":
        value = window_spend(store, rule, now_ns, memo)
        if rule.threshold_nano is None or value <= rule.threshold_nano:
            return None
        window = minutes_text(rule.window_minutes or 60)  # "24h", "45 min": the money and time rules of money.py
        msg = (
            f"[spendtrace] {rule.name}: {_who(rule)} spent {_usd(value)} in the last {window} "
            f"(threshold {_usd(rule.threshold_nano)})"
        )
        return "", value, msg, []
    if rule.kind == "budget":
        start, value = budget_spend(store, rule, now_ns, memo)
        amount = rule.threshold_nano or 0
        crossed = [p for p in rule.params.get("percentages", []) if amount and value * 100 >= float(p) * amount]
        if not crossed:
            return None
        day = dt.datetime.fromtimestamp(start, tz=dt.UTC).date().isoformat()
        keys = [f"{day}:{p}" for p in crossed]
        fired = store.last_fired(rule.id, keys)
        fresh = [k for k in keys if k not in fired]
        if not fresh:
            return None
        top = fresh[-1]  # percentages are sorted: warn once, at the highest newly crossed level
        pct = top.split(":", 1)[1]
        msg = (
            f"[spendtrace] {rule.name}: {_who(rule)} used {value * 100 / amount:.0f}% of its "
            f"{rule.params.get('period')} budget ({_usd(value)} of {_usd(amount)}, warning at {pct}%)"
        )
        return top, value, msg, fresh[:-1]
    if rule.kind == "rate":
        recent, baseline = rate_values(store, rule, now_ns, memo)
        factor = float(rule.params.get("factor", 3.0))
        if baseline <= 0 or recent < int(rule.params.get("min_spend_nano", 0)) or recent < factor * baseline:
            return None
        msg = (
            f"[spendtrace] {rule.name}: {_who(rule)} spent {_usd(recent)} in the last hour, "
            f"{recent / baseline:.1f}x its {rule.params.get('lookback_days', 7)}-day average for this hour "
            f"({_usd(baseline)})"
        )
        return "", recent, msg, []
    return None


def _cooldown_ns(rule: AlertRule) -> int | None:
    """How long a state key of the rule blocks another firing: budget percentages once per period (ever)."""
    return None if rule.kind == "budget" else rule.cooldown_minutes * 60 * 1_000_000_000


def _fire(store: AlertStore, rule: AlertRule, now_ns: int, memo: Memo | None = None) -> AlertEvent | None:
    """Decide and record one firing atomically; None when nothing is due or another worker fired first."""
    if _cooling(store, rule, now_ns):
        return None  # cheap pre-check; the store's claim decides
    cand = _candidate(store, rule, now_ns, memo)
    if cand is None:
        return None
    key, value, msg, extra_keys = cand
    return store.claim_firing(
        rule, state_key=key, cooldown_ns=_cooldown_ns(rule), fired_ns=now_ns, value_nano=value, message=msg,
        also_mark=extra_keys,
    )


def _cooling(store: AlertStore, rule: AlertRule, now_ns: int) -> bool:
    """Whether the rule's plain (``''``) state key fired within its cooldown; budget rules never block here."""
    if rule.kind == "budget":
        return False  # a budget fires per percentage key; the '' key never blocks it
    last = store.last_fired(rule.id, ("",)).get("")
    return last is not None and now_ns - last < rule.cooldown_minutes * 60 * 1_000_000_000


def evaluate_rules(
    store: AlertStore,
    rules: Iterable[AlertRule],
    touched: Touched,
    now_ns: int,
    on_error: Callable[[AlertRule, StorageError], None] | None = None,
) -> list[tuple[AlertEvent, AlertRule]]:
    """Evaluate each rule the batch may have changed; return what fired (with its rule).

    A store error on one rule skips that rule: ``on_error(rule, exc)`` is told (default: logged).
    """
    fired: list[tuple[AlertEvent, AlertRule]] = []
    memo: Memo = {}  # one read per (grain, window, scope kind), shared by the rules of this round
    for rule in rules:
        if not rule.enabled or not touched.covers(rule):
            continue
        try:
            event = _fire(store, rule, now_ns, memo)
        except StorageError as exc:
            if on_error is None:
                log.exception("evaluating alert rule %r failed", rule.name)
            else:
                on_error(rule, exc)
            continue
        if event is not None:
            fired.append((event, rule))
    return fired


class RuleChecker:
    """The rules of one store, cached until they change (``AlertStore.rules_version``), and their evaluation.

    Not thread-safe: one checker per store, used from one thread. ``check`` costs one small
    query per call while no rule exists, so the local exporter can call it after every batch.
    """

    def __init__(self) -> None:
        self._version: tuple[int, int] | None = None
        self._rules: list[AlertRule] = []

    @property
    def cached(self) -> list[AlertRule]:
        """The rules as of the last ``rules`` / ``check`` call (no query)."""
        return self._rules

    def rules(self, store: AlertStore) -> list[AlertRule]:
        """The enabled rules, re-read when any process added, edited or removed one."""
        version = store.rules_version()
        if version != self._version:
            self._rules = store.list_rules()
            self._version = version
        return self._rules

    def check(
        self,
        store: AlertStore,
        touched: Touched,
        now_ns: int,
        on_error: Callable[[AlertRule, StorageError], None] | None = None,
    ) -> list[tuple[AlertEvent, AlertRule]]:
        """Evaluate the rules ``touched`` covers at ``now_ns``; return what fired (recorded, delivery pending)."""
        rules = self.rules(store)
        if not rules:
            return []
        return evaluate_rules(store, rules, touched, now_ns, on_error)
