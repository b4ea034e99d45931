"""The store contract: what every backend's ``open_store(url)`` answers, checked against numbers written here.

Written against ``spendtrace.server.store.base`` only (plus the backend fixture's ``ingest``), and
run once per backend in ``conftest.BACKENDS``. Rates are the test's own (a made-up price book), so
every expected nano-dollar below is arithmetic on this page, not a call into the pricing code.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import pytest
from store_backends import Backend

from spendtrace.errors import ConfigError
from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import AdminStore, ReadStore, open_store, open_store_async

NANO = 10**9
HOUR = 3600 * NANO
DAY = 24 * HOUR
#: 2026-05-28T12:00:00Z: "today" for the data below.
NOW = int(dt.datetime(2026, 5, 28, 12, tzinfo=dt.UTC).timestamp()) * NANO
TODAY = "2026-05-28"
YESTERDAY = "2026-05-27"

#: t_read: $0.25 per million requests = 250 nano each. t_llm: $3 / $15 per million input / output
#: tokens = 3,000 / 15,000 nano per token. t_unknown has no price.
BOOK = PriceBook(
    [
        PriceEntry(key="t_read", service="dynamodb", per_request=Decimal("0.00000025")),
        PriceEntry(key="t_llm", service="bedrock", per_1m_input_tokens=Decimal(3), per_1m_output_tokens=Decimal(15)),
    ],
    name="contract",
)
READ = 250
LLM_IN, LLM_OUT = 3_000, 15_000
TENANT = "acme'; DROP TABLE spans; --"  # names are data, bound as parameters


def spans() -> list[Span]:
    """Three requests: two today (one nested), one yesterday; one item no price covers."""
    t1, t0 = NOW - HOUR, NOW - DAY
    return [
        Span("s1", None, "r1", "api", endpoint="/a", user_id=TENANT, start_ns=t1, duration_ns=NANO,
             usage=(UsageItem("t_read", count=4.0),), path=("api",)),
        Span("s2", "s1", "r1", "search", endpoint="/a", user_id=TENANT, start_ns=t1 + 1000,
             usage=(UsageItem("t_llm", input_tokens=100, output_tokens=10),), path=("api", "search")),
        Span("s3", None, "r2", "search", endpoint="/b", user_id="globex", start_ns=t1 + 2000,
             usage=(UsageItem("t_read", count=2.0), UsageItem("t_unknown", count=1.0)), path=("search",)),
        Span("s4", None, "r3", "api", endpoint="/a", user_id=TENANT, start_ns=t0,
             usage=(UsageItem("t_read", count=8.0),), path=("api",)),
    ]  # fmt: skip


# each span's direct cost, by hand
S1, S2, S3, S4 = 4 * READ, 100 * LLM_IN + 10 * LLM_OUT, 2 * READ, 8 * READ
TOTAL = S1 + S2 + S3 + S4


@pytest.fixture
def store(backend: Backend) -> ReadStore:
    backend.ingest(spans(), BOOK)
    return open_store(backend.url)


def by(rows: list[dict[str, object]], key: str) -> dict[object, object]:
    return {r[key]: r["cost_nano"] for r in rows}


def test_open_store_gives_the_read_and_admin_roles(store: ReadStore) -> None:
    """What ``open_store`` returns implements the read and admin protocols."""
    assert isinstance(store, ReadStore) and isinstance(store, AdminStore)


def test_totals_and_aggregates_equal_the_hand_computed_costs(store: ReadStore) -> None:
    """Total, per feature / tenant / endpoint / service, exact to the nano-dollar; unpriced counted, not $0."""
    total = store.total()
    assert total["cost_nano"] == TOTAL == 453_500
    assert total["unpriced_count"] == 1
    assert total["request_count"] == 3
    assert by(store.aggregate_by_feature(), "feature") == {"api": S1 + S4, "search": S2 + S3}
    assert by(store.aggregate_by_user(), "user_id") == {TENANT: S1 + S2 + S4, "globex": S3}
    assert by(store.aggregate_by_endpoint(), "endpoint") == {"/a": S1 + S2 + S4, "/b": S3}
    services = {r["service"]: (r["cost_nano"], r["unpriced_count"]) for r in store.aggregate_by_service()}
    # the unknown key's service is guessed from its name ("t_unknown" -> "t"): listed, unpriced, not $0
    assert services == {"dynamodb": (S1 + S3 + S4, 0), "bedrock": (S2, 0), "t": (0, 1)}


def test_filters_and_windows(store: ReadStore) -> None:
    """``start`` is inclusive, ``end`` exclusive; name filters bind the SQL-shaped tenant as data."""
    assert store.total(start=TODAY)["cost_nano"] == S1 + S2 + S3
    assert store.total(end=TODAY)["cost_nano"] == S4
    assert store.total(user_id=TENANT)["cost_nano"] == S1 + S2 + S4
    assert store.total(feature="search", endpoint="/b")["cost_nano"] == S3
    assert store.total(user_id="nobody")["cost_nano"] == 0


def test_fully_loaded_cost_adds_what_a_feature_triggered(store: ReadStore) -> None:
    """api triggered search in r1: its fully-loaded cost includes that call."""
    rows = {r["feature"]: r for r in store.get_feature_cost_breakdown()}
    assert rows["api"]["direct_cost_nano"] == S1 + S4
    assert rows["api"]["fully_loaded_cost_nano"] == S1 + S2 + S4
    assert rows["search"]["fully_loaded_cost_nano"] == S2 + S3


def test_request_tree_and_request_costs(store: ReadStore) -> None:
    """One request's spans depth-first with direct and subtree cost; requests by cost."""
    tree = store.get_request_subtree("r1")
    assert [(n["span_id"], n["depth"], n["direct_cost_nano"], n["subtree_cost_nano"]) for n in tree] == [
        ("s1", 0, S1, S1 + S2),
        ("s2", 1, S2, S2),
    ]
    assert [n["span_id"] for n in store.get_transaction_subtree("s2")] == ["s2"]
    costly = store.get_request_cost(limit=3, order="cost")
    assert [r["request_id"] for r in costly] == ["r1", "r3", "r2"]
    assert store.get_request_subtree("no-such-request") == []


def test_daily_trend_is_zero_filled(store: ReadStore) -> None:
    """Three UTC days ending today, oldest first, with a zero for the empty day."""
    trend = store.get_cost_trend(days=3, now=NOW)
    assert [r["date"] for r in trend] == ["2026-05-26", YESTERDAY, TODAY]
    assert [round(r["total_cost"] * NANO) for r in trend] == [0, S4, S1 + S2 + S3]


def test_ingesting_the_same_spans_again_changes_nothing(backend: Backend, store: ReadStore) -> None:
    """Spans are idempotent on span_id: a replay of the whole batch counts nothing twice."""
    backend.ingest(spans(), BOOK)
    assert store.total()["cost_nano"] == TOTAL
    assert by(store.aggregate_by_feature(), "feature") == {"api": S1 + S4, "search": S2 + S3}


def test_change_token_moves_when_another_writer_commits(backend: Backend, store: ReadStore) -> None:
    """Readers refresh only when the token moved; a write through another connection moves it."""
    before = store.change_token()
    assert store.change_token() == before
    backend.ingest([Span("s5", None, "r5", "api", start_ns=NOW - HOUR, usage=(UsageItem("t_read", count=1.0),))], BOOK)
    assert store.change_token() != before
    assert store.total()["cost_nano"] == TOTAL + READ


def test_restatement_scales_the_range_exactly_and_undo_restores_it(store: ReadStore) -> None:
    """Factor 2 on yesterday doubles yesterday only; undo gives back every nano-dollar."""
    assert isinstance(store, AdminStore)
    rid = store.restate_historical_costs(factor=2.0, start_date=YESTERDAY, end_date=TODAY, why="contract")
    assert store.total()["cost_nano"] == TOTAL + S4
    assert store.total(start=TODAY)["cost_nano"] == S1 + S2 + S3
    assert by(store.aggregate_by_user(), "user_id") == {TENANT: S1 + S2 + 2 * S4, "globex": S3}
    store.undo_restatement(rid)
    assert store.total()["cost_nano"] == TOTAL
    assert by(store.aggregate_by_feature(), "feature") == {"api": S1 + S4, "search": S2 + S3}


def test_retention_drops_raw_spans_and_keeps_the_totals(store: ReadStore) -> None:
    """With raw spans kept one day, yesterday's request tree is gone, its cost still in every total."""
    assert isinstance(store, AdminStore)
    store.set_retention(raw_data_days=1)
    store.apply_retention(now_ns=NOW + HOUR)
    assert store.get_request_subtree("r3") == []
    assert [n["span_id"] for n in store.get_request_subtree("r1")] == ["s1", "s2"]
    assert store.total()["cost_nano"] == TOTAL
    assert by(store.aggregate_by_feature(), "feature") == {"api": S1 + S4, "search": S2 + S3}


def test_async_variant_answers_the_same(backend: Backend, store: ReadStore) -> None:
    """``open_store_async`` runs the same queries, awaited."""

    async def read() -> tuple[dict[str, object], list[dict[str, object]]]:
        astore = open_store_async(backend.url)
        try:
            return await astore.total(), await astore.aggregate_by_user()
        finally:
            await astore.close()

    total, users = asyncio.run(read())
    assert total["cost_nano"] == TOTAL
    assert by(users, "user_id") == {TENANT: S1 + S2 + S4, "globex": S3}


def test_unknown_url_scheme_is_a_clear_error() -> None:
    """A scheme no backend registered names the known ones; nothing is created."""
    with pytest.raises(ConfigError, match="unknown store URL scheme 'postgres'"):
        open_store("postgres://db/x")
    with pytest.raises(ConfigError, match="empty"):
        open_store("")


def test_metric_values_are_the_totals(store: ReadStore) -> None:
    """What ``/metrics`` exposes: totals per feature and service, spans, unpriced items; nothing fired yet."""
    v = store.store_metric_values()
    assert (v["cost_nano"], v["spans"], v["unpriced"], v["dead_letters"]) == (TOTAL, 4, 1, 0)
    assert (v["alerts_fired"], v["webhook_failures"]) == (0, 0)
    assert dict(v["features"]) == {"api": S1 + S4, "search": S2 + S3} and v["features_other_nano"] == 0
    top = store.store_metric_values(1)  # only the costliest feature by name; the other one's spend is summed
    assert top["features"] == [("search", S2 + S3)] and top["features_other_nano"] == S1 + S4
    assert dict(v["services"]) == {"dynamodb": S1 + S3 + S4, "bedrock": S2, "t": 0}
