"""The query layer against an independent computation from recorded spans and rates written in the tests."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _query_fixtures import DAY_NS, INJECTION, MARKUP, NANO, UNKNOWN_KEY, Expect, item_nano, make_spans, store

import spendtrace
from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite import AsyncStorage, SQLiteStorage
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from spendtrace.settings import set_db_path

#: the same instant as the ``fixed_now_ns`` fixture: 2026-11-02 12:00 UTC
NOW = 1_793_620_800_000_000_000
MINUTE_NS = 60 * NANO


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expect]:
    """A database of ~150 request trees over six days, and the expected numbers computed from the spans."""
    path = tmp_path_factory.mktemp("queries") / "cost_data.db"
    book = PriceBook.default()
    spans = make_spans(NOW)
    store(path, spans, book)
    return path, Expect(spans)


@pytest.fixture(scope="module")
def storage(data: tuple[Path, Expect]) -> Iterator[SQLiteStorage]:
    """A ``SQLiteStorage`` on the module's database."""
    s = SQLiteStorage(data[0])
    yield s
    s.close()


@pytest.fixture
def expect(data: tuple[Path, Expect]) -> Expect:
    """The expected numbers."""
    return data[1]


def _check_rows(rows: list[dict[str, object]], dim: str, expected: dict[str, dict[str, object]], count: str) -> None:
    assert {r[dim] for r in rows} == set(expected)
    for r in rows:
        e = expected[r[dim]]  # type: ignore[index]
        assert r["cost_nano"] == e["cost"]
        assert r["total_cost"] == pytest.approx(e["cost"] / NANO)  # type: ignore[operator]
        assert r["transaction_count"] == e[count]
        assert r["span_count"] == e["spans"]
        assert r["request_count"] == e["requests"]
        assert r["calls"] == pytest.approx(e["calls"])
        assert r["unpriced_count"] == e["unpriced"]
        assert r["error_count"] == e["errors"]
        assert r["service_costs_nano"] == e["services"]
    costs = [r["cost_nano"] for r in rows]
    assert costs == sorted(costs, reverse=True)  # type: ignore[type-var]


def test_aggregate_by_feature_matches_spans(storage: SQLiteStorage, expect: Expect) -> None:
    """Per feature: cost to the nano-dollar, spans, weighted calls, errors, unpriced items and the per-service split."""
    _check_rows(storage.aggregate_by_feature(), "feature", expect.by("feature"), "spans")


def test_aggregate_by_user_counts_requests(storage: SQLiteStorage, expect: Expect) -> None:
    """Per user: cost, and ``transaction_count`` is the number of requests (root spans) of that user."""
    rows = storage.aggregate_by_user()
    _check_rows(rows, "user_id", expect.by("user_id"), "requests")
    assert "" in {r["user_id"] for r in rows}  # spans with no user are a row of their own, not dropped


def test_aggregate_by_endpoint_and_service(storage: SQLiteStorage, expect: Expect) -> None:
    """Per endpoint (requests counted) and per service, each equal to the sums over the spans."""
    _check_rows(storage.aggregate_by_endpoint(), "endpoint", expect.by("endpoint"), "requests")
    per_service: dict[str, int] = {}
    for p in expect.priced:
        for svc, c in p.services.items():
            per_service[svc] = per_service.get(svc, 0) + c
    got = {r["service"]: r["cost_nano"] for r in storage.aggregate_by_service() if r["cost_nano"]}
    assert got == per_service


def test_readme_observe_example(storage: SQLiteStorage, expect: Expect, capsys: pytest.CaptureFixture[str]) -> None:
    """The original README's Observe loop runs as written and prints every feature with its total."""
    for row in storage.aggregate_by_feature():
        svc = row["service_costs"]
        print(
            f"{row['feature']:<25}"
            f"  dynamodb=${svc.get('dynamodb', 0):.4f}"
            f"  bedrock=${svc.get('bedrock', 0):.4f}"
            f"  total=${row['total_cost']:.4f}"
            f"  ({row['transaction_count']} calls)"
        )
    for row in storage.aggregate_by_user():
        print(f"{row['user_id']:<20}  ${row['total_cost']:.4f}/month  ({row['transaction_count']} requests)")
    out = capsys.readouterr().out
    for feature, e in expect.by("feature").items():
        assert f"{feature:<25}" in out and f"({e['spans']} calls)" in out


def test_total_with_ranges_off_day_boundaries(storage: SQLiteStorage, expect: Expect) -> None:
    """Totals over ranges starting and ending mid-day (whole minutes) equal the spans started in the range."""
    rng = random.Random(3)
    first = min(p.span.start_ns for p in expect.priced) // MINUTE_NS * MINUTE_NS
    for _ in range(12):
        a, b = sorted(first + rng.randrange(7 * 1440) * MINUTE_NS for _ in range(2))
        t = storage.total(a, b)
        sel = expect.select(a, b)
        assert t["cost_nano"] == sum(p.cost for p in sel)
        assert t["transaction_count"] == len(sel)
        assert t["request_count"] == sum(p.span.parent_id is None for p in sel)
        assert t["unpriced_count"] == sum(p.unpriced for p in sel)
    # open-ended ranges and the date / datetime forms
    cut = NOW - 2 * DAY_NS - 317 * MINUTE_NS
    assert storage.total(start=cut)["cost_nano"] == sum(p.cost for p in expect.select(cut))
    assert storage.total(end=cut)["cost_nano"] == sum(p.cost for p in expect.select(None, cut))
    day = datetime.fromtimestamp(NOW // NANO - 86400 * 3, UTC)
    day_ns = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * NANO
    by_date = storage.total(day.strftime("%Y-%m-%d"), datetime(day.year, day.month, day.day, 17, 5))
    assert by_date["cost_nano"] == sum(p.cost for p in expect.select(day_ns, day_ns + 17 * 3600 * NANO + 5 * MINUTE_NS))
    assert storage.total(NOW, NOW - DAY_NS)["cost_nano"] == 0  # an empty range is empty, not an error


def test_filters_by_name(storage: SQLiteStorage, expect: Expect) -> None:
    """feature / user_id / endpoint / service filters select exactly the matching spans' cost."""
    cases = [
        {"feature": "search"},
        {"user_id": "tenant-acme"},
        {"endpoint": "/api/recommend", "feature": "product_details"},
        {"user_id": ""},
    ]
    for names in cases:
        sel = expect.select(**names)
        assert storage.total(**names)["cost_nano"] == sum(p.cost for p in sel), names
        rows = storage.aggregate_by_feature(**names)
        assert {r["feature"]: r["cost_nano"] for r in rows} == {
            k: v["cost"] for k, v in expect.by("feature", sel).items()
        }
    dyn = storage.total(service="dynamodb")
    assert dyn["cost_nano"] == sum(p.services.get("dynamodb", 0) for p in expect.priced)
    by_user = {r["user_id"]: r["cost_nano"] for r in storage.aggregate_by_user(service="bedrock")}
    want: dict[str, int] = {}
    for p in expect.priced:
        if "bedrock" in p.services:
            want[p.span.user_id or ""] = want.get(p.span.user_id or "", 0) + p.services["bedrock"]
    assert by_user == want
    assert len(storage.aggregate_by_feature(limit=2)) == 2


def test_names_shaped_like_sql_or_markup_are_data(storage: SQLiteStorage, expect: Expect) -> None:
    """Feature, user and endpoint names like ``x'; DROP TABLE spans; --`` and ``[red]x`` round-trip as plain data."""
    features = {r["feature"] for r in storage.aggregate_by_feature()}
    assert {INJECTION, MARKUP} <= features
    assert INJECTION in {r["user_id"] for r in storage.aggregate_by_user()}
    assert MARKUP in {r["endpoint"] for r in storage.aggregate_by_endpoint()}
    for names in ({"feature": INJECTION}, {"user_id": INJECTION}, {"endpoint": MARKUP}):
        assert storage.total(**names)["cost_nano"] == sum(p.cost for p in expect.select(**names))
        assert storage.total(**names)["transaction_count"] > 0
    rows = storage.transactions(feature=INJECTION, limit=1000)
    assert rows and all(r["feature"] == INJECTION for r in rows)
    assert storage.total()["transaction_count"] == len(expect.priced)  # the spans table is still there


def test_fully_loaded_breakdown(storage: SQLiteStorage, expect: Expect) -> None:
    """Direct cost per feature and fully-loaded cost (everything below it on the path) match the spans."""
    rows = storage.get_feature_cost_breakdown()
    direct = {k: v["cost"] for k, v in expect.by("feature").items()}
    loaded = expect.loaded()
    assert {r["feature"]: r["direct_cost_nano"] for r in rows} == direct
    assert {r["feature"]: r["fully_loaded_cost_nano"] for r in rows} == loaded
    api = next(r for r in rows if r["feature"] == "api")
    assert api["fully_loaded_cost_nano"] == sum(p.cost for p in expect.priced)  # api is every request's root
    assert rows[0]["feature"] == "api"
    # a user filter reads the raw spans (loaded rollups have no user dimension): same definition
    sel = expect.select(user_id="tenant-globex")
    by_user = storage.get_feature_cost_breakdown(user_id="tenant-globex")
    assert {r["feature"]: r["fully_loaded_cost_nano"] for r in by_user} == expect.loaded(sel)
    assert {r["feature"]: r["direct_cost_nano"] for r in by_user if r["direct_cost_nano"]} == {
        k: v["cost"] for k, v in expect.by("feature", sel).items() if v["cost"]
    }
    only = storage.get_feature_cost_breakdown(user_id="tenant-globex", feature="search")
    assert [r["feature"] for r in only] == ["search"]


def test_request_cost_orders_and_filters(storage: SQLiteStorage, expect: Expect) -> None:
    """Requests newest first or costliest first, each with its summed cost and span count."""
    per_req: dict[str, list[Span | int]] = {}
    for p in expect.priced:
        e = per_req.setdefault(p.span.request_id, [0, 0, p.span.start_ns])
        e[0] += p.cost  # type: ignore[operator]
        e[1] += 1  # type: ignore[operator]
        e[2] = min(e[2], p.span.start_ns)  # type: ignore[type-var, call-overload]
    by_cost = sorted(per_req, key=lambda k: (-per_req[k][0], k))  # type: ignore[operator]
    got = storage.get_request_cost(limit=15, order="cost")
    assert [r["request_id"] for r in got] == by_cost[:15]
    for r in got:
        assert (r["cost_nano"], r["tx_count"]) == (per_req[r["request_id"]][0], per_req[r["request_id"]][1])
    recent = storage.get_request_cost(limit=10)
    want = sorted(per_req, key=lambda k: (per_req[k][2], k), reverse=True)[:10]  # type: ignore[operator]
    assert [r["request_id"] for r in recent] == want
    acme = storage.get_request_cost(limit=1000, user_id="tenant-acme")
    assert {r["request_id"] for r in acme} == {
        p.span.request_id for p in expect.priced if p.span.user_id == "tenant-acme"
    }
    page2 = storage.get_request_cost(limit=5, offset=5, order="cost")
    assert [r["request_id"] for r in page2] == by_cost[5:10]


def _tree_of(expect: Expect, request_id: str) -> list[Span]:
    return [p.span for p in expect.priced if p.span.request_id == request_id]


def test_request_subtree_shape_and_costs(storage: SQLiteStorage, expect: Expect) -> None:
    """Nodes come depth-first (children by start time) with depth, direct and subtree cost of the recorded tree."""
    cost = {p.span.span_id: p.cost for p in expect.priced}
    checked = 0
    for rid in sorted({p.span.request_id for p in expect.priced})[:40]:
        spans = _tree_of(expect, rid)
        kids: dict[str | None, list[Span]] = {}
        for s in spans:
            kids.setdefault(s.parent_id, []).append(s)

        def walk(s: Span, depth: int, out: list[tuple[str, int, int]], kids: dict[str | None, list[Span]]) -> int:
            pos = len(out)
            out.append((s.span_id, depth, 0))
            total = cost[s.span_id]
            for c in sorted(kids.get(s.span_id, []), key=lambda x: (x.start_ns, x.span_id)):
                total += walk(c, depth + 1, out, kids)
            out[pos] = (s.span_id, depth, total)
            return total

        want: list[tuple[str, int, int]] = []
        for root in kids[None]:
            walk(root, 0, want, kids)
        tree = storage.get_request_subtree(rid)
        assert [(n["span_id"], n["depth"], n["subtree_cost_nano"]) for n in tree] == want
        assert all(n["direct_cost_nano"] == cost[n["span_id"]] for n in tree)
        assert tree[0]["subtree_cost_nano"] == sum(cost[s.span_id] for s in spans)
        checked += any(n["depth"] == 2 for n in tree)
        sub = storage.get_transaction_subtree(f"{rid}-mid")
        assert sub[0]["span_id"] == f"{rid}-mid" and sub[0]["depth"] == 0
        assert [n["span_id"] for n in sub] == [w[0] for w in want if w[0].startswith((f"{rid}-mid", f"{rid}-pd"))]
    assert checked > 5  # the sample really had three-level trees
    item = next(n for n in storage.get_request_subtree("req-0001") if n["usage"])
    assert {"key", "service", "cost_nano", "priced"} <= set(item["usage"][0])
    assert storage.get_request_subtree("no-such-request") == []
    assert storage.get_transaction_subtree("no-such-span") == []


def test_cost_trend_zero_filled(storage: SQLiteStorage, expect: Expect) -> None:
    """One row per UTC day, oldest first, ending today, with days without spend present as zero."""
    rows = storage.get_cost_trend(days=30, now=NOW)
    assert len(rows) == 30 and rows[-1]["date"] == "2026-11-02" and rows[0]["date"] == "2026-10-04"
    per_day: dict[str, int] = {}
    for p in expect.priced:
        d = datetime.fromtimestamp(p.span.start_ns // NANO, UTC).strftime("%Y-%m-%d")
        per_day[d] = per_day.get(d, 0) + p.cost
    assert {r["date"]: r["cost_nano"] for r in rows} == {r["date"]: per_day.get(r["date"], 0) for r in rows}
    assert sum(r["cost_nano"] == 0 for r in rows) >= 20  # six days of data in a 30-day window
    feat = storage.get_cost_trend(feature="search", days=10, now=NOW)
    assert sum(r["cost_nano"] for r in feat) == sum(p.cost for p in expect.select(feature="search"))
    by_feature = storage.cost_trend_by_feature(days=10, now=NOW)
    assert {r["feature"]: r["cost_nano"] for r in by_feature} == {k: v["cost"] for k, v in expect.by("feature").items()}
    assert all(len(r["points"]) == 10 for r in by_feature)


def test_transactions_paging_is_stable(storage: SQLiteStorage, expect: Expect) -> None:
    """Pages of raw spans concatenate to every matching span, newest first, with no repeats or gaps."""
    want = [s.span_id for s in sorted((p.span for p in expect.priced), key=lambda s: (s.start_ns, s.span_id))][::-1]
    got: list[str] = []
    offset = 0
    while page := storage.transactions(limit=137, offset=offset):
        got += [r["span_id"] for r in page]
        offset += 137
    assert got == want
    acme = storage.transactions(user_id="tenant-acme", service="bedrock", limit=10_000)
    assert {r["span_id"] for r in acme} == {
        p.span.span_id for p in expect.priced if p.span.user_id == "tenant-acme" and "bedrock" in p.services
    }
    assert all(r["total_cost"] == pytest.approx(r["cost_nano"] / NANO) for r in acme)


def test_unpriced_usage_is_visible(storage: SQLiteStorage, expect: Expect) -> None:
    """Usage with no price shows up as counts in totals and per feature, and in the unpriced listing, never as $0."""
    n = sum(p.unpriced for p in expect.priced)
    assert n > 0
    assert storage.total()["unpriced_count"] == n
    assert sum(r["unpriced_count"] for r in storage.aggregate_by_feature()) == n
    listed = storage.unpriced_usage()
    assert sum(r["items"] for r in listed if r["key"] == UNKNOWN_KEY) == n
    for row in storage.aggregate_by_feature():
        assert all(cost > 0 for cost in row["service_costs_nano"].values())
        if row["unpriced_count"]:
            assert row["service_unpriced"]


def test_standard_error_only_when_sampled(storage: SQLiteStorage, expect: Expect) -> None:
    """Sampled data gets a standard error sqrt(sum w(w-1)c^2); unsampled data gets None."""
    sampled = [p for p in expect.priced if p.span.weight != 1.0]
    assert sampled
    var = sum(p.span.weight * (p.span.weight - 1) * p.unweighted**2 for p in sampled)
    assert storage.total()["stderr"] == pytest.approx(math.sqrt(var) / NANO)
    nones = 0
    for p in expect.priced[:200]:
        minute = p.span.start_ns // MINUTE_NS * MINUTE_NS
        sel = expect.select(minute, minute + MINUTE_NS)
        got = storage.total(minute, minute + MINUTE_NS)["stderr"]
        if all(q.span.weight == 1.0 for q in sel):
            assert got is None
            nones += 1
        else:
            var = sum(q.span.weight * (q.span.weight - 1) * q.unweighted**2 for q in sel)
            assert got == pytest.approx(math.sqrt(var) / NANO)
    assert 0 < nones < 200  # both cases were seen


async def test_async_storage_equals_sync(data: tuple[Path, Expect], storage: SQLiteStorage) -> None:
    """Every AsyncStorage query returns exactly what the SQLiteStorage one does."""
    a, b = NOW - 3 * DAY_NS - 77 * MINUTE_NS, NOW - DAY_NS + 13 * MINUTE_NS
    async with AsyncStorage(data[0]) as astore:
        assert await astore.aggregate_by_feature() == storage.aggregate_by_feature()
        assert await astore.aggregate_by_user(a, b) == storage.aggregate_by_user(a, b)
        assert await astore.aggregate_by_endpoint(service="s3") == storage.aggregate_by_endpoint(service="s3")
        assert await astore.aggregate_by_service() == storage.aggregate_by_service()
        assert await astore.get_feature_cost_breakdown() == storage.get_feature_cost_breakdown()
        assert await astore.total(a, b, feature="search") == storage.total(a, b, feature="search")
        assert await astore.get_cost_trend("search", 10, now=NOW) == storage.get_cost_trend("search", 10, now=NOW)
        assert await astore.cost_trend_by_feature(7, now=NOW) == storage.cost_trend_by_feature(7, now=NOW)
        assert await astore.get_request_cost(10, "cost") == storage.get_request_cost(10, "cost")
        assert await astore.get_request_subtree("req-0002") == storage.get_request_subtree("req-0002")
        assert await astore.get_transaction_subtree("req-0002-mid") == storage.get_transaction_subtree("req-0002-mid")
        assert await astore.transactions(limit=50, offset=20) == storage.transactions(limit=50, offset=20)
        assert await astore.unpriced_usage() == storage.unpriced_usage()
        assert await astore.feature_timeseries(90, NOW) == storage.feature_timeseries(90, NOW)
        assert await astore.ingest_stats(NOW) == storage.ingest_stats(NOW)
        assert isinstance(await astore.data_version(), int)


def test_module_functions_follow_the_readme(
    data: tuple[Path, Expect], expect: Expect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's module functions work with ``db_path=`` and with the configured default database."""
    path = str(data[0])
    rows = spendtrace.get_feature_cost_breakdown(db_path=path)
    assert {r["feature"]: r["fully_loaded_cost_nano"] for r in rows} == expect.loaded()
    reqs = spendtrace.get_request_cost(db_path=path, limit=20)
    assert len(reqs) == 20 and all({"endpoint", "total_cost", "tx_count"} <= set(r) for r in reqs)
    tree = spendtrace.get_request_subtree("req-0003", db_path=path)
    assert tree[0]["depth"] == 0 and "subtree_cost" in tree[0]
    assert spendtrace.get_transaction_subtree("req-0003-mid", db_path=path)[0]["feature"] == tree[1]["feature"]
    monkeypatch.setenv("SPENDTRACE_DB", path)
    trend = spendtrace.get_cost_trend(feature="search", days=30, now=NOW)
    assert sum(r["cost_nano"] for r in trend) == sum(p.cost for p in expect.select(feature="search"))
    set_db_path(path)
    try:
        monkeypatch.delenv("SPENDTRACE_DB")
        assert spendtrace.get_request_cost(limit=3) == reqs[:3]
    finally:
        set_db_path(None)


def _span(sid: str, feature: str, t: int, count: float = 2.0, parent: str | None = None) -> Span:
    return Span(
        span_id=sid,
        parent_id=parent,
        request_id=parent or sid,
        feature=feature,
        start_ns=t,
        usage=(UsageItem("dynamodb_read", count=count),),
        path=(feature,),
    )


def test_live_views_and_change_check(db_path: Path) -> None:
    """Per-minute series, spend rate, ingest counters, dead letters and ``data_version`` follow new commits."""
    book = PriceBook.default()
    unit = 250  # two DynamoDB read units at $0.125 per million (PUBLISHED in _query_fixtures), in nano-dollars
    assert item_nano(UsageItem("dynamodb_read", count=2.0)) == (unit, "dynamodb")
    storage = SQLiteStorage(db_path)
    try:
        v0 = storage.data_version()
        spans = [
            _span("a", "search", NOW - 30 * NANO),
            _span("b", "search", NOW - 5 * MINUTE_NS),
            _span("c", "cache", NOW - 5 * MINUTE_NS + NANO),
            _span("d", "search", NOW - 2 * 3600 * NANO),
        ]
        conn = connect(db_path)
        try:
            write_batch_sync(
                conn,
                prepare_batch(spans, book),
                dead_letters=[("spendtrace.spans", 0, 17, b"k", b"\xffnot msgpack", "undecodable: bad bytes")],
            )
        finally:
            conn.close()
        assert storage.data_version() != v0
        series = storage.feature_timeseries(minutes=10, now_ns=NOW)
        assert set(series) == {"search", "cache"} and all(len(v) == 10 for v in series.values())
        assert series["search"][-2] == pytest.approx(unit / NANO) and series["search"][-6] == pytest.approx(unit / NANO)
        assert series["search"][-1] == 0.0  # NOW opens a new minute: nothing yet
        assert sum(series["search"]) == pytest.approx(2 * unit / NANO)  # the 2-hour-old span is outside
        rate = storage.spend_rate(minutes=10, now_ns=NOW)
        assert rate["cost_nano"] == 3 * unit
        assert rate["usd_per_hour"] == pytest.approx(3 * unit / NANO * 3600 / (9 * 60))
        stats = storage.ingest_stats(NOW)
        assert (stats["spans_last_minute"], stats["total_spans"], stats["dead_letters"]) == (1, 4, 1)
        assert stats["cost_nano"] == 4 * unit
        dl = storage.dead_letters()
        assert dl[0]["reason"] == "undecodable: bad bytes" and dl[0]["offset"] == 17
    finally:
        storage.close()


def test_missing_parent_shows_as_root(db_path: Path) -> None:
    """A request whose root has not arrived yet still shows its spans, the orphans as roots."""
    book = PriceBook.default()
    conn = connect(db_path)
    try:
        write_batch_sync(conn, prepare_batch([_span("kid", "search", NOW, parent="gone-root")], book))
    finally:
        conn.close()
    with SQLiteStorage(db_path) as storage:
        tree = storage.get_request_subtree("gone-root")
    assert [(n["span_id"], n["depth"]) for n in tree] == [("kid", 0)]


def test_readme_observe_flow_sees_spans_recorded_in_process(db_path: Path, tmp_path: Path) -> None:
    """Spans a @cost_track function records through the local exporter are visible to SQLiteStorage at once."""
    from spendtrace import add_api_call, cost_track
    from spendtrace.sdk import config as _config

    _config.configure(db=db_path, spill_dir=tmp_path / "spill", max_delay=3600)  # no timer flush: reads must flush
    try:

        @cost_track(feature="search")
        def search_products(query: str) -> str:
            add_api_call("dynamodb_read", count=3)
            return query

        for i in range(5):
            search_products(f"q{i}")
        with SQLiteStorage(db_path) as storage:
            rows = storage.aggregate_by_feature()
    finally:
        _config.reset()
        set_db_path(None)  # configure(db=...) also set the process default
    unit = 375  # three DynamoDB read units at $0.125 per million (PUBLISHED in _query_fixtures), in nano-dollars
    assert item_nano(UsageItem("dynamodb_read", count=3.0)) == (unit, "dynamodb")
    assert [(r["feature"], r["transaction_count"]) for r in rows] == [("search", 5)]
    assert rows[0]["cost_nano"] == 5 * unit and rows[0]["service_costs_nano"] == {"dynamodb": 5 * unit}
