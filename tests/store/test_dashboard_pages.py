"""The dashboard's bounded reads: top-N pages with an exact "others", server-side search, paging.

Written against ``DashboardReads`` only, run once per backend (SQLite, chDB). Many tenants with
distinct costs (tenant i spends (i + 1) reads), so the expected order and sums are arithmetic here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from store_backends import Backend
from test_contract import BOOK, HOUR, NANO, NOW, READ

from spendtrace.schema import Span, UsageItem
from spendtrace.server.model.dashboard import DimSnapshot
from spendtrace.server.store.base import open_dashboard

N = 30
#: names with SQL wildcards and quotes: a search for them must match them literally
ODD = ["50%_off'; --", "Tenant-UPPER"]


def tenants() -> list[str]:
    return [f"tenant-{i:03d}" for i in range(N)] + ODD


def many_spans() -> list[Span]:
    """One request per tenant in the last hour; tenant i (by list position) spends (i + 1) reads."""
    out = []
    for i, t in enumerate(tenants()):
        out.append(Span(f"p{i}", None, f"q{i}", f"feat-{i % 4}", endpoint=f"/e{i % 3}", user_id=t,
                        start_ns=NOW - HOUR // 2 + i * NANO, usage=(UsageItem("t_read", count=float(i + 1)),),
                        path=(f"feat-{i % 4}",)))  # fmt: skip
    return out


def cost(name: str) -> int:
    return (tenants().index(name) + 1) * READ


@pytest.fixture
def url(backend: Backend) -> str:
    backend.ingest(many_spans(), BOOK)
    return backend.url


def read(url: str, *calls: tuple[str, str, dict[str, Any]]) -> list[DimSnapshot]:
    """Open the dashboard at ``url`` and run ``dimension(dim, window, **kw)`` for each call."""

    async def go() -> list[DimSnapshot]:
        reads = await open_dashboard(url, clock=lambda: NOW, monotonic=lambda: 1.0).open()
        try:
            return [await reads.dimension(d, w, **kw) for d, w, kw in calls]
        finally:
            await reads.close()

    return asyncio.run(go())


@pytest.mark.parametrize("window", ["all", "30d", "24h", "1h"])
def test_a_page_is_the_top_n_and_others_is_exact(url: str, window: str) -> None:
    """limit=5: the five costliest tenants, and "others" is the rest of the window to the nano-dollar."""
    (page, full) = read(url, ("user", window, {"limit": 5}), ("user", window, {}))
    names = sorted(tenants(), key=lambda t: -cost(t))
    assert [r.key for r in page.rows] == names[:5]
    assert [r.cost_nano for r in page.rows] == [cost(t) for t in names[:5]]
    assert page.total_nano == full.total_nano == sum(cost(t) for t in tenants())
    assert page.values == page.matched == len(tenants())
    assert page.others_nano == sum(cost(t) for t in names[5:])
    assert page.others_values == len(tenants()) - 5
    # the page's rows carry the same figures as the same rows of the unbounded read
    assert list(page.rows) == [r for r in full.rows if r.key in set(names[:5])]


def test_pages_cover_every_value_once(url: str) -> None:
    """Offsets 0, 7, 14, ... step through every tenant once, in cost order; past the end is empty."""
    calls = [("user", "all", {"limit": 7, "offset": o}) for o in range(0, len(tenants()) + 7, 7)]
    pages = read(url, *calls)
    seen = [r.key for p in pages for r in p.rows]
    assert seen == sorted(tenants(), key=lambda t: -cost(t))
    assert pages[-1].rows == () and pages[-1].others_nano == pages[-1].total_nano
    assert pages[1].offset == 7


def test_search_is_a_literal_case_insensitive_substring(url: str) -> None:
    """'UPPER' finds 'Tenant-UPPER'; '%' and "'" match themselves only; matched counts the hits."""
    upper, odd, digits, none = read(
        url,
        ("user", "all", {"limit": 10, "search": "tenant-upper"}),
        ("user", "30d", {"limit": 10, "search": "%_OFF'"}),
        ("user", "all", {"limit": 2, "search": "-01"}),
        ("user", "all", {"limit": 10, "search": "no such tenant"}),
    )
    assert [r.key for r in upper.rows] == ["Tenant-UPPER"]
    assert [r.key for r in odd.rows] == ["50%_off'; --"] and odd.matched == 1
    # tenant-010 .. tenant-019 match "-01"; the two costliest of them come first
    assert digits.matched == 10 and [r.key for r in digits.rows] == ["tenant-019", "tenant-018"]
    assert digits.values == len(tenants()) and digits.total_nano == sum(cost(t) for t in tenants())
    assert none.rows == () and none.matched == 0 and none.others_nano == none.total_nano


def test_features_and_endpoints_page_too(url: str) -> None:
    """Features keep their fully-loaded cost and services on a page; endpoints page by cost."""
    feat, full_feat, ep = read(
        url, ("feature", "all", {"limit": 2}), ("feature", "all", {}), ("endpoint", "24h", {"limit": 1})
    )
    assert list(feat.rows) == list(full_feat.rows[:2]) and feat.rows[0].loaded_nano is not None
    assert feat.rows[0].services == {"dynamodb": feat.rows[0].cost_nano}
    assert feat.services == ("dynamodb",)
    per_ep: dict[str, int] = {}
    for i, t in enumerate(tenants()):
        per_ep[f"/e{i % 3}"] = per_ep.get(f"/e{i % 3}", 0) + cost(t)
    top = max(per_ep, key=lambda e: per_ep[e])
    assert [(r.key, r.cost_nano) for r in ep.rows] == [(top, per_ep[top])]
    assert ep.others_nano == sum(per_ep.values()) - per_ep[top] and ep.others_values == 2


def test_a_page_read_again_after_its_values_changed_is_exact(url: str, backend: Backend) -> None:
    """One dashboard reads a page, new spend moves two tenants into it (one on a new service), and the same
    page read again equals what a fresh dashboard reads: no row, service or sparkline of a value that left
    (ClickHouse reads a page's follow-ups for the values it showed last time beside the ranking)."""

    async def go() -> tuple[list[DimSnapshot], list[DimSnapshot]]:
        reads = await open_dashboard(url, clock=lambda: NOW, monotonic=lambda: 1.0).open()
        try:
            calls = [("user", w, {"limit": 5}) for w in ("all", "1h")] + [("feature", "all", {"limit": 2})]
            before = [await reads.dimension(d, w, **kw) for d, w, kw in calls]
            again = [await reads.dimension(d, w, **kw) for d, w, kw in calls]
            assert again == before  # nothing changed: the remembered values are the page's
            llm = UsageItem("t_llm", input_tokens=1000.0, output_tokens=100.0)
            backend.ingest(
                [
                    Span("new-1", None, "qn1", "feat-new", endpoint="/e0", user_id="tenant-000",
                         start_ns=NOW - 60 * NANO, usage=(llm,), path=("feat-new",)),
                    Span("new-2", None, "qn2", "feat-0", endpoint="/e1", user_id="tenant-001",
                         start_ns=NOW - 120 * NANO, usage=(UsageItem("t_read", count=500.0),), path=("feat-0",)),
                ],
                BOOK,
            )  # fmt: skip
            after = [await reads.dimension(d, w, **kw) for d, w, kw in calls]
        finally:
            await reads.close()
        fresh = await open_dashboard(url, clock=lambda: NOW, monotonic=lambda: 1.0).open()
        try:
            return after, [await fresh.dimension(d, w, **kw) for d, w, kw in calls]
        finally:
            await fresh.close()

    after, fresh = asyncio.run(go())
    assert after == fresh
    tenants_all = after[0]
    assert [r.key for r in tenants_all.rows][:2] == ["tenant-000", "tenant-001"]  # both moved into the page
    assert "bedrock" in tenants_all.rows[0].services and "bedrock" in tenants_all.services
    assert after[2].rows[0].key == "feat-new" and after[2].rows[0].loaded_nano == after[2].rows[0].cost_nano


def test_a_bad_page_is_a_clear_error(url: str) -> None:
    """limit 0 or above the maximum, and a negative offset, raise ValueError naming the argument."""
    for kw in ({"limit": 0}, {"limit": 10**6}, {"limit": 5, "offset": -1}):
        with pytest.raises(ValueError, match=r"limit|offset"):
            read(url, ("user", "all", kw))


def _requests(url: str, **kw: Any) -> list[str]:
    async def go() -> list[str]:
        reads = await open_dashboard(url, clock=lambda: NOW, monotonic=lambda: 1.0).open()
        try:
            return [r.request_id for r in await reads.requests(**kw)]
        finally:
            await reads.close()

    return asyncio.run(go())


def test_requests_search_the_whole_store_and_page(url: str) -> None:
    """Requests: a search finds a request by id, tenant or endpoint beyond the newest page; offsets page on."""
    newest = _requests(url, order="recent", limit=5)
    assert newest == [f"q{i}" for i in range(N + 1, N - 4, -1)]  # start times grow with i
    assert _requests(url, order="recent", limit=5, offset=5) == [f"q{i}" for i in range(N - 4, N - 9, -1)]
    assert _requests(url, order="recent", limit=5, search="Q3") == ["q31", "q30", "q3"]  # ids, case folded
    assert _requests(url, order="cost", limit=2, search="TENANT-00") == ["q9", "q8"]  # by tenant, costliest
    assert set(_requests(url, limit=100, search="/e2")) == {f"q{i}" for i in range(len(tenants())) if i % 3 == 2}
    assert _requests(url, search="50%_OFF'") == [f"q{N}"]
    assert _requests(url, search="nothing like it") == []
    with pytest.raises(ValueError, match=r"limit"):
        _requests(url, limit=0)


def test_trends_keep_the_top_features_and_sum_the_rest(url: str) -> None:
    """trends(limit=2): the two costliest features (feat-3, feat-2 here) and, per day, the others' exact sum."""

    async def go() -> tuple[Any, Any]:
        reads = await open_dashboard(url, clock=lambda: NOW, monotonic=lambda: 1.0).open()
        try:
            return await reads.trends(3, limit=2), await reads.trends(3)
        finally:
            await reads.close()

    top, full = asyncio.run(go())
    per_feature = {f"feat-{k}": sum(cost(t) for i, t in enumerate(tenants()) if i % 4 == k) for k in range(4)}
    best = sorted(per_feature, key=lambda f: (-per_feature[f], f))
    assert top.features == tuple(best[:2]) and top.others_features == 2
    assert top.cost == {f: full.cost[f] for f in best[:2]}
    assert top.others == tuple(sum(full.cost[f][i] for f in best[2:]) for i in range(3))
    assert sum(top.others) == per_feature[best[2]] + per_feature[best[3]]
    assert full.others == () and full.others_features == 0


def test_api_top_n_of_all_time_is_the_head_of_the_full_list(url: str) -> None:
    """``aggregate_by_*(limit=n)``, no filter (SQLite: from dash_all by cost), equals the head of the full list."""
    from spendtrace.server.store.base import open_store

    store = open_store(url)
    try:
        for agg in (store.aggregate_by_user, store.aggregate_by_feature, store.aggregate_by_endpoint):
            full = agg()
            for n in (1, 3, len(full) + 5):
                assert agg(limit=n) == full[:n]
    finally:
        store.close()


def test_api_total_of_all_time_is_the_sum_of_the_values(url: str) -> None:
    """``total()`` with no filter (SQLite: from dash_all) equals the sum over every tenant, to the nano-dollar."""
    from spendtrace.server.store.base import open_store

    store = open_store(url)
    try:
        t = store.total()
        users = store.aggregate_by_user()
        assert t["cost_nano"] == sum(r["cost_nano"] for r in users) == sum(cost(x) for x in tenants())
        assert t["request_count"] == sum(r["request_count"] for r in users) == len(tenants())
        assert t["transaction_count"] == len(tenants()) and t["unpriced_count"] == 0
        assert store.total(user_id="tenant-003")["cost_nano"] == cost("tenant-003")
    finally:
        store.close()
