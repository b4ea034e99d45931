"""The ReconcileStore contract: modelled spend by day, restatements in a range, the bill cache, saved reports.

Written against ``spendtrace.server.store.base`` only (spend goes in through the ``IngestStore``,
restatements through the ``AdminStore``); a backend joins by adding a param to ``backend``.
Today: ``sqlite``, real files in a temporary directory, and ``chdb`` (ClickHouse in-process, a fresh
database in the session's one chDB directory).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from spendtrace.errors import StorageError
from spendtrace.schema import Span, UsageItem
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.model.reconcile import ModelledSpend
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import ReconcileStore, Store

NS = 1_000_000_000
DAY_S = 86_400
D0 = int(dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp())  # 2026-02-01 00:00 UTC, epoch seconds
#: One "ddb_call" costs exactly $1 on dynamodb, one "s3_put" $2 on s3: spend here is a count of calls.
BOOK = PriceBook(
    [
        PriceEntry(key="ddb_call", service="dynamodb", per_request=Decimal("1")),
        PriceEntry(key="s3_put", service="s3", per_request=Decimal("2")),
    ],
    name="contract",
)
EVIL = "x'); DROP TABLE reconciliations; --"


@dataclass
class Backend:
    """How the suite reaches one backend: open the role (a new connection each call), record spend, admin."""

    name: str
    open: Callable[..., ReconcileStore]
    record: Callable[[list[Span]], None]
    admin: Callable[[], Store]


def _sqlite(tmp_path: Path) -> Backend:
    from spendtrace.server.store.base import open_ingest_store, open_reconcile_store, open_store

    url = f"sqlite:///{tmp_path / 'reconcile.db'}"

    def record(spans: list[Span]) -> None:
        ingest = open_ingest_store(url)
        try:
            ingest.apply_batch(prepare_batch(spans, BOOK))
        finally:
            ingest.close()

    return Backend("sqlite", lambda **kw: open_reconcile_store(url, **kw), record, lambda: open_store(url))


#: a client kept open on the session's one chDB directory (chDB allows one per process), so the engine starts once
_engine: list[object] = []


def _chdb(tmp_path: Path) -> Backend:
    from spendtrace.server.store.base import open_ingest_store, open_reconcile_store, open_store
    from spendtrace.server.store.clickhouse._client import connect

    root = tmp_path.parent / "chdb"
    if not _engine:
        _engine.append(connect(f"chdb://{root}?database=keep"))
    url = f"chdb://{root}?database=r_{uuid.uuid4().hex[:16]}"

    def record(spans: list[Span]) -> None:
        ingest = open_ingest_store(url)
        try:
            ingest.apply_batch(prepare_batch(spans, BOOK))
        finally:
            ingest.close()

    return Backend("chdb", lambda **kw: open_reconcile_store(url, **kw), record, lambda: open_store(url))


@pytest.fixture(params=["chdb", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """One backend under test (parametrised: add a backend here)."""
    factories = {"sqlite": _sqlite, "chdb": _chdb}
    return factories[request.param](tmp_path)


@pytest.fixture
def store(backend: Backend) -> Iterator[ReconcileStore]:
    """An open (read-write) store of the backend under test, closed afterwards."""
    s = backend.open()
    try:
        yield s
    finally:
        s.close()


def span(day: int, hour: int, feature: str, **calls: int) -> Span:
    """One span on day ``day`` (0 = 2026-02-01) at ``hour`` UTC making ``calls`` (usage key -> count)."""
    sid = uuid.uuid4().hex
    service = {"ddb_call": "dynamodb", "s3_put": "s3"}
    usage = tuple(UsageItem(key=k, service=service[k], count=float(n)) for k, n in calls.items())
    return Span(span_id=sid, parent_id=None, request_id=sid, feature=feature, user_id=None, endpoint=None,
                start_ns=(D0 + day * DAY_S + hour * 3600) * NS, usage=usage, path=(feature,))


def rows(found: list[ModelledSpend]) -> set[tuple[int, str, str, int]]:
    """Modelled spend as comparable tuples (the order is unspecified)."""
    return {(r.day_s, r.feature, r.service, r.cost_nano) for r in found}


def report(start: str = "2026-02-01", end: str = "2026-03-01", created_ns: int = 1, **extra: Any) -> dict[str, Any]:
    """A JSON-ready report as ``ReconciliationReport.to_dict()`` shapes it (the fields the store relies on)."""
    return {"id": None, "start": start, "end": end, "created_ns": created_ns, **extra}


# --- an empty store ------------------------------------------------------------------------------


def test_an_empty_store_has_nothing(store: ReconcileStore) -> None:
    """No spend, no restatements, nothing cached, no report: empty answers, not errors."""
    assert isinstance(store, ReconcileStore)
    assert store.modelled_spend(D0, D0 + 28 * DAY_S) == []
    assert store.restatements_between("2026-02-01", "2026-03-01") == []
    assert store.cached_pages("2026-02-01", "2026-03-01", "SERVICE") is None
    assert store.latest_report() is None


# --- modelled spend ------------------------------------------------------------------------------


def test_modelled_spend_per_day_feature_and_service(backend: Backend, store: ReconcileStore) -> None:
    """Spans of one day, feature and service sum into one row; each service of a span gets its own row."""
    backend.record([
        span(0, 1, "search", ddb_call=3),
        span(0, 23, "search", ddb_call=1, s3_put=1),
        span(0, 5, "upload", s3_put=4),
        span(2, 12, "search", ddb_call=2),
    ])
    assert rows(store.modelled_spend(D0, D0 + 28 * DAY_S)) == {
        (D0, "search", "dynamodb", 4 * NS),
        (D0, "search", "s3", 2 * NS),
        (D0, "upload", "s3", 8 * NS),
        (D0 + 2 * DAY_S, "search", "dynamodb", 2 * NS),
    }


def test_modelled_spend_range_is_start_inclusive_end_exclusive(backend: Backend, store: ReconcileStore) -> None:
    """Only days starting in [start_s, end_s) count: the day before and the end day are left out."""
    backend.record([span(d, 12, "search", ddb_call=d + 1) for d in range(5)])
    assert rows(store.modelled_spend(D0 + DAY_S, D0 + 3 * DAY_S)) == {
        (D0 + DAY_S, "search", "dynamodb", 2 * NS),
        (D0 + 2 * DAY_S, "search", "dynamodb", 3 * NS),
    }
    assert store.modelled_spend(D0 + 5 * DAY_S, D0 + 9 * DAY_S) == []


def test_modelled_spend_follows_a_restatement_and_its_undo(backend: Backend, store: ReconcileStore) -> None:
    """A restatement scales what the store reports as modelled; its undo restores every figure exactly."""
    backend.record([span(0, 1, "search", ddb_call=3), span(1, 1, "search", ddb_call=5)])
    before = rows(store.modelled_spend(D0, D0 + 2 * DAY_S))
    admin = backend.admin()
    try:
        rid = admin.restate_historical_costs(factor=1.5, start_date="2026-02-01", end_date="2026-02-02", who="t",
                                             why="bill")
        assert rows(store.modelled_spend(D0, D0 + 2 * DAY_S)) == {
            (D0, "search", "dynamodb", round(4.5 * NS)),
            (D0 + DAY_S, "search", "dynamodb", 5 * NS),
        }
        admin.undo_restatement(rid)
    finally:
        admin.close()
    assert rows(store.modelled_spend(D0, D0 + 2 * DAY_S)) == before


# --- restatements --------------------------------------------------------------------------------


def test_restatements_between_overlapping_ranges_by_id(backend: Backend, store: ReconcileStore) -> None:
    """A restatement is listed when its [start_date, end_date) overlaps the range; undone ones say when."""
    backend.record([span(d, 12, "search", ddb_call=1, s3_put=1) for d in range(10)])
    admin = backend.admin()
    try:
        first = admin.restate_historical_costs(factor=1.25, start_date="2026-02-02", end_date="2026-02-04",
                                               who=EVIL, why="calibration", now_ns=111)
        second = admin.restate_historical_costs(factors={"s3": 0.5}, start_date="2026-02-06",
                                                end_date="2026-02-08", who="ops", why=EVIL, now_ns=222)
        admin.undo_restatement(second)
    finally:
        admin.close()
    found = store.restatements_between("2026-02-01", "2026-03-01")
    assert [r.id for r in found] == [first, second]
    a, b = found
    assert (a.created_ns, a.who, a.why, a.start_date, a.end_date) == (111, EVIL, "calibration", "2026-02-02",
                                                                      "2026-02-04")
    assert a.factor == pytest.approx(1.25) and a.undone_ns is None
    assert (b.who, b.why, b.factors) == ("ops", EVIL, {"s3": pytest.approx(0.5)})
    assert b.undone_ns is not None
    assert a.to_dict()["factors"] == a.factors
    # Touching ranges do not overlap: [02-04, 02-06) lies between the two.
    assert store.restatements_between("2026-02-04", "2026-02-06") == []
    assert [r.id for r in store.restatements_between("2026-02-03", "2026-02-07")] == [first, second]
    assert [r.id for r in store.restatements_between("2026-01-01", "2026-02-03")] == [first]


# --- the Cost Explorer cache ---------------------------------------------------------------------


def test_cached_pages_round_trip_and_replace(store: ReconcileStore) -> None:
    """Pages come back as cached with when they were fetched; caching again replaces the copy."""
    pages = [{"ResultsByTime": [{"TimePeriod": {"Start": "2026-02-01"}, "Groups": []}], "NextPageToken": EVIL},
             {"ResultsByTime": []}]
    store.cache_pages("2026-02-01", "2026-03-01", "SERVICE", pages, fetched_ns=10)
    hit = store.cached_pages("2026-02-01", "2026-03-01", "SERVICE")
    assert hit is not None and (hit.fetched_ns, hit.pages) == (10, pages)
    store.cache_pages("2026-02-01", "2026-03-01", "SERVICE", [{"ResultsByTime": []}], fetched_ns=20)
    again = store.cached_pages("2026-02-01", "2026-03-01", "SERVICE")
    assert again is not None and (again.fetched_ns, again.pages) == (20, [{"ResultsByTime": []}])


def test_cached_pages_are_keyed_by_range_and_grouping(store: ReconcileStore) -> None:
    """Another range or another grouping (a tag) is another entry."""
    store.cache_pages("2026-02-01", "2026-03-01", "SERVICE", [{"n": 1}], fetched_ns=1)
    store.cache_pages("2026-02-01", "2026-03-01", "SERVICE,TAG:feature", [{"n": 2}], fetched_ns=2)
    store.cache_pages("2026-02-01", "2026-02-15", "SERVICE", [{"n": 3}], fetched_ns=3)
    got = {k: store.cached_pages(*k) for k in [("2026-02-01", "2026-03-01", "SERVICE"),
                                                ("2026-02-01", "2026-03-01", "SERVICE,TAG:feature"),
                                                ("2026-02-01", "2026-02-15", "SERVICE")]}
    assert [(c.fetched_ns, c.pages) for c in got.values() if c is not None] == [(1, [{"n": 1}]), (2, [{"n": 2}]),
                                                                               (3, [{"n": 3}])]
    assert store.cached_pages("2026-02-15", "2026-03-01", "SERVICE") is None


def test_values_json_cannot_hold_are_cached_as_text(store: ReconcileStore) -> None:
    """A datetime or Decimal in a page (botocore may hand back either) is cached as its ``str``."""
    when = dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)
    store.cache_pages("2026-02-01", "2026-03-01", "SERVICE", [{"at": when, "amount": Decimal("1.50")}], fetched_ns=5)
    hit = store.cached_pages("2026-02-01", "2026-03-01", "SERVICE")
    assert hit is not None and hit.pages == [{"at": str(when), "amount": "1.50"}]


def test_a_readonly_store_reads_the_cache_and_never_creates_it(backend: Backend, store: ReconcileStore) -> None:
    """Read-only: nothing cached yet reads as None; a copy cached by a writer is seen; writing is refused."""
    ro = backend.open(readonly=True)
    try:
        assert ro.cached_pages("2026-02-01", "2026-03-01", "SERVICE") is None
        store.cache_pages("2026-02-01", "2026-03-01", "SERVICE", [{"n": 1}], fetched_ns=7)
        hit = ro.cached_pages("2026-02-01", "2026-03-01", "SERVICE")
        assert hit is not None and hit.pages == [{"n": 1}]
        with pytest.raises(StorageError):
            ro.cache_pages("2026-02-01", "2026-03-01", "SERVICE", [{"n": 2}], fetched_ns=8)
    finally:
        ro.close()


# --- saved reports -------------------------------------------------------------------------------


def test_save_report_gives_ids_and_latest_report_reads_the_last(store: ReconcileStore) -> None:
    """Each saved report gets a new, higher id, stored inside it; ``latest_report`` is the last one saved."""
    first = store.save_report(report(created_ns=5, note=EVIL, rows=[{"service": "s3", "actual_nano": 7}]))
    assert store.latest_report() == {"id": first, "start": "2026-02-01", "end": "2026-03-01", "created_ns": 5,
                                     "note": EVIL, "rows": [{"service": "s3", "actual_nano": 7}]}
    second = store.save_report(report("2026-01-01", "2026-02-01", created_ns=1))  # older range, saved later
    assert second > first
    latest = store.latest_report()
    assert latest is not None and (latest["id"], latest["start"]) == (second, "2026-01-01")


def test_a_report_saved_by_one_store_is_read_by_another(backend: Backend, store: ReconcileStore) -> None:
    """Another connection (read-only, as the TUI and the HTTP API open it) reads the saved report whole."""
    rid = store.save_report(report(factor=1.25))
    ro = backend.open(readonly=True)
    try:
        assert ro.latest_report() == report(factor=1.25) | {"id": rid}
        with pytest.raises(StorageError):
            ro.save_report(report())
        assert ro.latest_report() == report(factor=1.25) | {"id": rid}
    finally:
        ro.close()


def test_concurrent_saves_get_distinct_ids_each_stored_whole(backend: Backend) -> None:
    """Reports saved at once from several connections never share an id or lose their content."""
    ids: list[int] = []
    errors: list[BaseException] = []

    def save(n: int) -> None:
        s = backend.open()
        try:
            for k in range(5):
                ids.append(s.save_report(report(created_ns=n * 10 + k)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            s.close()

    backend.open().close()  # create the store before the threads race to
    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(ids)) == 20
    check = backend.open(readonly=True)
    try:
        latest = check.latest_report()
        assert latest is not None and latest["id"] == max(ids)
    finally:
        check.close()


def test_a_readonly_store_needs_an_existing_store(backend: Backend) -> None:
    """Opening a store that was never created read-only fails with ``StorageError`` rather than creating it."""
    with pytest.raises(StorageError):
        backend.open(readonly=True)
    backend.open().close()
    ro = backend.open(readonly=True)
    try:
        assert ro.latest_report() is None
    finally:
        ro.close()
