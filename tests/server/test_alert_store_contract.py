"""The AlertStore contract: rules, spend from the rollups, atomic firing, events and deliveries, per backend.

Written against ``spendtrace.server.store.base.AlertStore`` only; a backend joins by adding a
param to ``backend`` (how to open its store and how to put spend into it). Today: ``sqlite``,
real files in a temporary directory; ``chdb`` (ClickHouse in-process: the alert tables and claims
of ``spendtrace.server.store.clickhouse._alerts``, the same code a ClickHouse server runs); and
``server``, a ClickHouse server over HTTP, when ``SPENDTRACE_TEST_CLICKHOUSE_URL`` names one.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from spendtrace.errors import StorageError
from spendtrace.schema import Span, UsageItem
from spendtrace.server.model.alerts import AlertEvent, AlertRule
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import AlertStore

NS = 1_000_000_000
MIN = 60 * NS
#: One "unit_call" costs exactly $1, so spend here is a count of calls.
BOOK = PriceBook([PriceEntry(key="unit_call", service="dynamodb", per_request=Decimal("1"))], name="contract")
EVIL = "x'); DROP TABLE alert_rules; --"


@dataclass
class Backend:
    """How the suite reaches one backend: open a store (a new connection each call), record spend."""

    name: str
    open: Callable[..., AlertStore]
    record: Callable[[list[Span]], None]
    url: str = ""


def _sqlite(tmp_path: Path) -> Backend:
    from spendtrace.server.store.base import open_alert_store
    from spendtrace.server.store.sqlite._db import connect
    from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

    url = f"sqlite:///{tmp_path / 'alerts.db'}"

    def record(spans: list[Span]) -> None:
        conn = connect(tmp_path / "alerts.db")
        try:
            write_batch_sync(conn, prepare_batch(spans, BOOK))
        finally:
            conn.close()

    return Backend("sqlite", lambda **kw: open_alert_store(url, **kw), record)


#: a client kept open on the session's chDB directory (chDB allows one per process: the store
#: contract's directory, ``tests/store/store_backends.py``), so the engine starts once
_engine: list[object] = []


def _chdb(tmp_path: Path) -> Backend:
    from spendtrace.server.ingest.prepare import prepare_batch
    from spendtrace.server.store.base import open_alert_store
    from spendtrace.server.store.clickhouse._client import connect
    from spendtrace.server.store.clickhouse._ingest import write_batch

    root = tmp_path.parent / "chdb"
    if not _engine:
        _engine.append(connect(f"chdb://{root}?database=keep"))
    url = f"chdb://{root}?database=a_{uuid.uuid4().hex[:16]}"

    def record(spans: list[Span]) -> None:
        conn = connect(url)
        try:
            write_batch(conn, prepare_batch(spans, BOOK))
        finally:
            conn.close()

    return Backend("chdb", lambda **kw: open_alert_store(url, **kw), record)


def _server(tmp_path: Path) -> Backend:
    """A fresh database on the server ``SPENDTRACE_TEST_CLICKHOUSE_URL`` names (the claims over HTTP)."""
    from spendtrace.server.ingest.prepare import prepare_batch
    from spendtrace.server.store.base import open_alert_store
    from spendtrace.server.store.clickhouse._client import connect
    from spendtrace.server.store.clickhouse._ingest import write_batch

    base = os.environ["SPENDTRACE_TEST_CLICKHOUSE_URL"].split("?")[0].rstrip("/")
    base = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    url = f"{base}/spendtrace_alerts_{uuid.uuid4().hex[:12]}"

    def record(spans: list[Span]) -> None:
        conn = connect(url)
        try:
            write_batch(conn, prepare_batch(spans, BOOK))
        finally:
            conn.close()

    return Backend("server", lambda **kw: open_alert_store(url, **kw), record, url)


_NO_SERVER = pytest.mark.skipif(not os.environ.get("SPENDTRACE_TEST_CLICKHOUSE_URL"),
                                reason="no ClickHouse server given (SPENDTRACE_TEST_CLICKHOUSE_URL)")


@pytest.fixture(params=["chdb", "sqlite", pytest.param("server", marks=_NO_SERVER)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """One backend under test (parametrised: add a backend here; ``server`` runs when a server URL is given)."""
    factories = {"sqlite": _sqlite, "chdb": _chdb, "server": _server}
    b = factories[request.param](tmp_path)
    yield b
    if b.name == "server":
        from spendtrace.server.store.clickhouse._client import connect

        conn = connect(b.url)
        try:
            conn.command(f"DROP DATABASE IF EXISTS {conn.database}")
        finally:
            conn.close()


@pytest.fixture
def store(backend: Backend) -> Iterator[AlertStore]:
    """An open store of the backend under test, closed afterwards."""
    s = backend.open()
    try:
        yield s
    finally:
        s.close()


def save(store: AlertStore, name: str = "r", *, now_ns: int = 1_000, cooldown_minutes: int = 60,
         kind: str = "threshold", scope: str = "feature", scope_value: str = "search",
         webhook: str | None = None) -> AlertRule:
    """Save a threshold-like rule with defaults that the tests override as needed."""
    return store.save_rule(
        name=name, kind=kind, scope=scope, scope_value=scope_value, threshold_nano=10 * NS, window_minutes=60,
        cooldown_minutes=cooldown_minutes, params={"note": "x"}, webhook=webhook, webhook_format="slack",
        now_ns=now_ns,
    )


def fire(store: AlertStore, rule: AlertRule, at_ns: int, *, key: str = "", cooldown_ns: int | None = 60 * MIN,
         value: int = 11 * NS, also: tuple[str, ...] = ()) -> AlertEvent | None:
    """Claim one firing of ``rule`` at ``at_ns``."""
    return store.claim_firing(rule, state_key=key, cooldown_ns=cooldown_ns, fired_ns=at_ns, value_nano=value,
                              message=f"{rule.name} at {at_ns}", also_mark=also)


def span(at_ns: int, dollars: int, feature: str = "search", user_id: str | None = None,
         endpoint: str | None = None) -> Span:
    """One span costing ``dollars`` at ``at_ns``."""
    sid = uuid.uuid4().hex
    return Span(span_id=sid, parent_id=None, request_id=sid, feature=feature, user_id=user_id, endpoint=endpoint,
                start_ns=at_ns, usage=(UsageItem(key="unit_call", service="dynamodb", count=float(dollars)),),
                path=(feature,))


# --- rules ---------------------------------------------------------------------------------------


def test_save_list_and_replace_by_name(store: AlertStore) -> None:
    """A saved rule comes back whole; saving the same name replaces it in place (same id, newer version)."""
    a = store.save_rule(
        name="a", kind="budget", scope="user", scope_value=EVIL, threshold_nano=300 * NS, window_minutes=None,
        cooldown_minutes=0, params={"period": "month", "percentages": [50, 100]},
        webhook="https://hooks.example.com/services/T0/B0/secret", webhook_format="slack", now_ns=5_000,
    )
    assert (a.name, a.kind, a.scope, a.scope_value, a.threshold_nano, a.window_minutes) == (
        "a", "budget", "user", EVIL, 300 * NS, None)
    assert dict(a.params) == {"period": "month", "percentages": [50, 100]} and a.enabled
    assert a.webhook == "https://hooks.example.com/services/T0/B0/secret"
    assert (a.created_ns, a.updated_ns) == (5_000, 5_000)
    b = save(store, "b", now_ns=6_000)
    assert [r.name for r in store.list_rules()] == ["a", "b"]  # by id
    a2 = save(store, "a", now_ns=1)  # an older clock: the version still moves forward
    assert a2.id == a.id and a2.kind == "threshold" and a2.updated_ns > b.updated_ns
    assert [r.id for r in store.list_rules(enabled_only=False)] == [a.id, b.id]
    assert store.list_rules()[0] == a2


def test_rules_version_changes_on_every_save_and_remove(store: AlertStore) -> None:
    """The fingerprint moves on add, on an edit within one clock tick, and on remove."""
    seen = [store.rules_version()]
    save(store, "a", now_ns=7)
    seen.append(store.rules_version())
    save(store, "a", now_ns=7)  # same name, same instant
    seen.append(store.rules_version())
    save(store, "b", now_ns=7)
    seen.append(store.rules_version())
    assert store.remove_rule("a")
    seen.append(store.rules_version())
    assert len(set(seen)) == len(seen)


def test_remove_by_name_or_id_takes_the_firing_state_and_keeps_the_events(store: AlertStore) -> None:
    """Removing deletes the rule and its firing state; its events stay; a missing rule is reported."""
    a, b, c = save(store, "a"), save(store, "b"), save(store, EVIL)
    assert fire(store, a, 10 * MIN) is not None
    assert store.last_fired(a.id, [""]) == {"": 10 * MIN}
    assert store.remove_rule("a") is True
    assert store.remove_rule("a") is False
    assert store.last_fired(a.id, [""]) == {}
    assert [e.rule_name for e in store.events_after(0)] == ["a"]
    assert store.remove_rule(b.id) is True
    assert store.remove_rule(str(c.id)) is True  # a string of digits is an id
    assert store.list_rules(enabled_only=False) == []


# --- spend ---------------------------------------------------------------------------------------


@pytest.fixture
def spent(backend: Backend, fixed_now_ns: int) -> int:
    """$1 at 10:05 (search, acme, /s), $2 at 11:55 (search, globex, /s), $4 at 12:00 (chat, acme, /c), $8 at 12:01."""
    t = fixed_now_ns  # 12:00 UTC
    backend.record([
        span(t - 115 * MIN, 1, "search", "acme", "/s"),
        span(t - 5 * MIN, 2, "search", "globex", "/s"),
        span(t, 4, "chat", "acme", "/c"),
        span(t + MIN, 8, EVIL),
    ])
    return t // NS


def test_spend_per_scope_and_grain(store: AlertStore, spent: int) -> None:
    """Each grain sums the buckets starting in [since, until) for one scope value, or all of it."""
    t = spent
    assert store.spend("minute", t - 3 * 3600, scope="total") == 15 * NS
    assert store.spend("minute", t - 3 * 3600, t, scope="total") == 3 * NS  # until is exclusive
    assert store.spend("minute", t, scope="feature", scope_value="search") == 0
    assert store.spend("hour", t - 2 * 3600, t, scope="feature", scope_value="search") == 3 * NS
    assert store.spend("day", t - 12 * 3600, scope="user", scope_value="acme") == 5 * NS
    assert store.spend("minute", t - 3600, scope="endpoint", scope_value="/s") == 2 * NS
    assert store.spend("minute", 0, scope="feature", scope_value=EVIL) == 8 * NS  # names are data
    assert store.spend("minute", 0, scope="feature", scope_value="nobody") == 0


def test_spend_per_value_matches_spend(store: AlertStore, spent: int) -> None:
    """All values of a scope at once; spans without a value count under ''; total is the one key ''."""
    t = spent
    assert store.spend_per_value("minute", t - 3 * 3600, scope="user") == {"acme": 5 * NS, "globex": 2 * NS,
                                                                           "": 8 * NS}
    assert store.spend_per_value("hour", t - 3 * 3600, t, scope="feature") == {"search": 3 * NS}
    assert store.spend_per_value("day", t - 86400, scope="total") == {"": 15 * NS}
    assert store.spend_per_value("minute", t + 3600, scope="total") == {"": 0}
    for scope in ("feature", "user", "endpoint"):
        for value, nano in store.spend_per_value("minute", 0, scope=scope).items():
            assert store.spend("minute", 0, scope=scope, scope_value=value) == nano


# --- firing --------------------------------------------------------------------------------------


def test_claim_fires_once_per_cooldown(store: AlertStore) -> None:
    """A claim records a pending event; another inside the cooldown records nothing; after it, one more."""
    rule = save(store, "t", webhook="https://hooks.example.com/x")
    ev = fire(store, rule, 100 * MIN, value=11 * NS)
    assert ev is not None
    assert (ev.rule_id, ev.rule_name, ev.kind, ev.scope, ev.scope_value, ev.value_nano, ev.threshold_nano,
            ev.state_key, ev.fired_ns) == (rule.id, "t", "threshold", "feature", "search", 11 * NS, 10 * NS, "",
                                           100 * MIN)
    assert fire(store, rule, 159 * MIN) is None
    assert store.last_fired(rule.id, ["", "other"]) == {"": 100 * MIN}
    again = fire(store, rule, 160 * MIN)
    assert again is not None and again.id > ev.id
    assert [(e.id, e.delivery) for e in store.events_after(0)] == [(ev.id, "pending"), (again.id, "pending")]


def test_once_ever_keys_and_also_mark(store: AlertStore) -> None:
    """With no cooldown a state key fires once; ``also_mark`` stamps lower keys crossed at the same time."""
    rule = save(store, "b", kind="budget", cooldown_minutes=0)
    ev = fire(store, rule, 5 * MIN, key="2026-11-01:100", cooldown_ns=None, also=("2026-11-01:50", "2026-11-01:80"))
    assert ev is not None and ev.state_key == "2026-11-01:100"
    assert store.last_fired(rule.id, ["2026-11-01:50", "2026-11-01:80", "2026-11-01:100", "2026-12-01:50"]) == {
        "2026-11-01:50": 5 * MIN, "2026-11-01:80": 5 * MIN, "2026-11-01:100": 5 * MIN}
    assert fire(store, rule, 10**6 * MIN, key="2026-11-01:100", cooldown_ns=None) is None
    assert fire(store, rule, 10**6 * MIN, key="2026-12-01:50", cooldown_ns=None) is not None


def test_claim_for_a_changed_or_removed_rule_records_nothing(store: AlertStore) -> None:
    """A claim made with a rule as it was before an edit (or after its removal) is refused."""
    old = save(store, "r")
    new = save(store, "r", now_ns=old.updated_ns)
    assert fire(store, old, MIN) is None
    assert fire(store, new, MIN) is not None
    assert store.remove_rule("r")
    assert fire(store, new, 10**6 * MIN) is None
    assert store.count_events() == 1


@pytest.mark.parametrize("cooldown_ns", [60 * MIN, None], ids=["cooldown", "once-ever"])
def test_concurrent_claims_from_many_connections_fire_once(backend: Backend, cooldown_ns: int | None) -> None:
    """Eight stores (own connections) on eight threads claim the same crossing at once: exactly one event."""
    stores = [backend.open() for _ in range(8)]
    try:
        rule = save(stores[0], "race")
        for round_ in range(5):  # each round a fresh state key (or past the cooldown)
            at = (round_ + 1) * 120 * MIN
            key = f"k{round_}" if cooldown_ns is None else ""
            start = threading.Barrier(len(stores))

            def claim(
                s: AlertStore, at: int = at, key: str = key, start: threading.Barrier = start
            ) -> AlertEvent | None:
                start.wait()
                return fire(s, rule, at, key=key, cooldown_ns=cooldown_ns)

            with ThreadPoolExecutor(len(stores)) as pool:
                won = [e for e in pool.map(claim, stores) if e is not None]
            assert len(won) == 1, f"round {round_}: {len(won)} firings"
        assert stores[1].count_events() == 5
        assert len({e.id for e in stores[2].events_after(0)}) == 5
    finally:
        for s in stores:
            s.close()


# --- events and deliveries -------------------------------------------------------------------------


def test_claim_delivery_once_then_record_attempts(backend: Backend, store: AlertStore) -> None:
    """One of two stores claims a pending event; attempts are recorded; failures and the final status count."""
    rule = save(store, "d")
    ev = fire(store, rule, MIN)
    assert ev is not None
    other = backend.open()
    try:
        start = threading.Barrier(2)

        def claim(s: AlertStore) -> bool:
            start.wait()
            return s.claim_delivery(ev.id)

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(claim, [store, other])) == [False, True]
        assert other.claim_delivery(ev.id) is False
    finally:
        other.close()
    assert store.pending_events(10**6 * MIN) == []  # sending, not pending
    store.record_delivery(ev.id, attempt=1, status=500, error="HTTP 500", at_ns=2 * MIN)
    store.record_delivery(ev.id, attempt=2, error="ConnectTimeout: no answer", at_ns=3 * MIN)
    store.record_delivery(ev.id, attempt=3, status=302, at_ns=4 * MIN)
    store.record_delivery(ev.id, attempt=4, status=200, final="delivered", at_ns=5 * MIN)
    assert store.count_failed_deliveries() == 3
    assert [e.delivery for e in store.latest_events()] == ["delivered"]
    store.record_delivery(ev.id, attempt=None, final="failed")  # a final status alone
    assert store.count_failed_deliveries() == 3 and store.latest_events()[0].delivery == "failed"


def test_pending_events_tail_and_latest(store: AlertStore) -> None:
    """Pending events older than a cut-off, oldest first; a tail after an id; the newest first; the last id."""
    assert (store.last_event_id(), store.count_events(), store.events_after(0), store.latest_events()) == (
        0, 0, [], [])
    rules = [save(store, f"r{i}", cooldown_minutes=0) for i in range(3)]
    evs = [fire(store, r, (i + 1) * MIN) for i, r in enumerate(rules)]
    ids = [e.id for e in evs if e is not None]
    assert len(ids) == 3 and ids == sorted(ids)
    assert store.claim_delivery(ids[0])
    assert [e.id for e in store.pending_events(10 * MIN)] == ids[1:]
    assert [e.id for e in store.pending_events(3 * MIN)] == ids[1:2]  # fired before, not at
    assert [e.id for e in store.pending_events(10 * MIN, limit=1)] == ids[1:2]
    pending = store.pending_events(10 * MIN)[0]
    assert (pending.rule_name, pending.scope, pending.scope_value, pending.value_nano, pending.threshold_nano,
            pending.message, pending.delivery) == ("r1", "feature", "search", 11 * NS, 10 * NS,
                                                   f"r1 at {2 * MIN}", "pending")
    assert [e.id for e in store.events_after(ids[0])] == ids[1:]
    assert [e.id for e in store.events_after(0, limit=2)] == ids[:2]
    assert [e.id for e in store.latest_events(2)] == [ids[2], ids[1]]
    assert [e.delivery for e in store.latest_events()] == ["pending", "pending", "sending"]
    assert (store.last_event_id(), store.count_events()) == (ids[2], 3)


def test_event_to_dict_is_the_firing_without_delivery(store: AlertStore) -> None:
    """An event's JSON view (the alerts topic's message) carries USD beside nano-dollars and no delivery status."""
    ev = fire(store, save(store, "j"), MIN)
    assert ev is not None
    d = store.events_after(0)[0].to_dict()
    assert "delivery" not in d and d["value_usd"] == 11.0 and d["threshold_usd"] == 10.0 and d["id"] == ev.id


def test_a_readonly_store_reads_and_refuses_writes(backend: Backend, store: AlertStore) -> None:
    """``readonly=True`` follows events (``alerts tail``); a write through it raises ``StorageError``."""
    rule = save(store, "ro")
    assert fire(store, rule, MIN) is not None
    reader = backend.open(readonly=True)
    try:
        assert [e.rule_name for e in reader.events_after(0)] == ["ro"]
        assert fire(store, rule, 100 * MIN) is not None
        assert reader.last_event_id() == 2  # sees what others commit after it opened
        with pytest.raises(StorageError):
            save(reader, "nope")
    finally:
        reader.close()
