"""Repricing, on every backend: a price added for an unknown model turns its unpriced usage into spend.

Written against ``spendtrace.server.store.base`` only (plus the backend fixture's ``ingest``).
Every expected nano-dollar is computed here from literal rates (the test's own book), never by the
pricing code; every read a dashboard, the CLI or the API makes is compared with it, then the undo
must give back exactly what was there before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from store_backends import Backend

from spendtrace.errors import ConfigError, StorageError
from spendtrace.schema import Span, UsageItem
from spendtrace.server.model.reprice import RepriceResult
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import AdminStore, ReadStore, open_dashboard, open_store

NANO = 10**9
HOUR = 3600 * NANO
DAY = 24 * HOUR
#: 2026-05-28T12:00:00Z
NOW = int(dt.datetime(2026, 5, 28, 12, tzinfo=dt.UTC).timestamp()) * NANO
YESTERDAY, TODAY, TOMORROW = "2026-05-27", "2026-05-28", "2026-05-29"

#: t_read: $0.25 per million requests = 250 nano each. No price yet for the model gpt-9-turbo.
BOOK = PriceBook([PriceEntry(key="t_read", service="dynamodb", per_request=Decimal("0.00000025"))], name="before")
#: The price added afterwards: $2 / $8 per million input / output tokens = 2,000 / 8,000 nano per token.
GPT9 = PriceEntry(
    key="openai:gpt-9-turbo", service="openai", per_1m_input_tokens=Decimal(2), per_1m_output_tokens=Decimal(8)
)
BOOK2 = BOOK.with_overrides([GPT9], name="after")
IN, OUT, READ = 2_000, 8_000, 250


def llm(i: int, o: int) -> UsageItem:
    """An OpenAI call to a model no price covered when it was stored."""
    return UsageItem("openai_gpt_9_turbo", "openai", count=1.0, input_tokens=i, output_tokens=o,
                     provider="openai", model="gpt-9-turbo")  # fmt: skip


def spans() -> list[Span]:
    """Four requests: r1 (chat -> search), r2 (search), r3 yesterday, r5 sampled at 1/2."""
    t = NOW - HOUR
    return [
        Span("s1", None, "r1", "chat", endpoint="/chat", user_id="acme", start_ns=t,
             usage=(llm(1200, 300), UsageItem("t_read", count=4.0)), path=("chat",)),
        Span("s2", "s1", "r1", "search", endpoint="/chat", user_id="acme", start_ns=t + 1000,
             usage=(llm(500, 50),), path=("chat", "search")),
        Span("s3", None, "r2", "search", endpoint="/find", user_id="globex", start_ns=t + 2000,
             usage=(UsageItem("t_read", count=2.0), llm(100, 20)), path=("search",)),
        Span("s4", None, "r3", "chat", endpoint="/chat", user_id="acme", start_ns=NOW - DAY,
             usage=(llm(100, 10),), path=("chat",)),
        Span("s5", None, "r5", "chat", endpoint="/chat", user_id="acme", start_ns=t + 3000, weight=2.0,
             usage=(llm(10, 1),), path=("chat",)),
    ]  # fmt: skip


# by hand: each span's cost before (reads only) and after the price is added (weighted)
B1, B3 = 4 * READ, 2 * READ
A1 = 4 * READ + 1200 * IN + 300 * OUT  # 4,801,000
A2 = 500 * IN + 50 * OUT  # 1,400,000
A3 = 2 * READ + 100 * IN + 20 * OUT  # 360,500
A4 = 100 * IN + 10 * OUT  # 280,000
A5 = 2 * (10 * IN + 1 * OUT)  # weight 2: 56,000
LLM_AFTER = A1 - B1 + A2 + A3 - B3 + A4 + A5


@pytest.fixture
def store(backend: Backend) -> ReadStore:
    backend.ingest(spans(), BOOK)
    return open_store(backend.url)


def by(rows: list[dict[str, Any]], key: str, field: str = "cost_nano") -> dict[Any, Any]:
    return {r[key]: r[field] for r in rows}


def reads(url: str, store: ReadStore) -> dict[str, Any]:
    """Every read the CLI, the API and the TUI make, as exact integers (money and counts)."""

    async def dashboard() -> dict[str, Any]:
        d = await open_dashboard(url, clock=lambda: NOW).open()
        try:
            ov = await d.overview()
            dims = {dim: await d.dimension(dim) for dim in ("feature", "user", "endpoint")}
            reqs = await d.requests(order="cost")
            newest = await d.requests(order="recent")  # ClickHouse: request_index, its own copy of the deltas
            tr = await d.trends(days=3)
            unpriced = await d.unpriced()
        finally:
            await d.close()
        return {
            "overview": (ov.total_nano, ov.unpriced_items, ov.spans),
            **{
                f"dash_{dim}": {r.key: (r.cost_nano, r.loaded_nano, r.unpriced, dict(r.services)) for r in s.rows}
                for dim, s in dims.items()
            },
            "dash_requests": {r.request_id: (r.cost_nano, r.unpriced) for r in reqs},
            "dash_newest": [(r.request_id, r.cost_nano, r.unpriced) for r in newest],
            "dash_trend": {f: tr.cost[f] for f in tr.features},
            "dash_unpriced": sorted((u.feature, u.items) for u in unpriced),
        }

    total = store.total()
    return {
        "total": (total["cost_nano"], total["unpriced_count"], total["request_count"]),
        "today": store.total(start=TODAY)["cost_nano"],
        "last_2h": store.total(start=NOW - 2 * HOUR, end=NOW)["cost_nano"],
        "feature": by(store.aggregate_by_feature(), "feature"),
        "feature_unpriced": by(store.aggregate_by_feature(), "feature", "unpriced_count"),
        "user": by(store.aggregate_by_user(), "user_id"),
        "endpoint": by(store.aggregate_by_endpoint(), "endpoint"),
        "service": by(store.aggregate_by_service(), "service"),
        "loaded": by(store.get_feature_cost_breakdown(), "feature", "fully_loaded_cost_nano"),
        "requests": {r["request_id"]: r["cost_nano"] for r in store.get_request_cost(limit=10, order="cost")},
        "tree": [(n["span_id"], n["direct_cost_nano"], n["subtree_cost_nano"])
                 for n in store.get_request_subtree("r1")],
        "trend": [r["cost_nano"] for r in store.get_cost_trend(days=3, now=NOW)],
        "unpriced_items": sorted((u["feature"], u["items"]) for u in store.unpriced_usage()),
        **asyncio.run(dashboard()),
    }  # fmt: skip


def test_a_price_for_an_unknown_model_turns_unpriced_usage_into_exact_spend(backend: Backend, store: ReadStore) -> None:
    """After reprice every read agrees with the literal rates; undo gives back every figure exactly."""
    assert isinstance(store, AdminStore)
    before = reads(backend.url, store)
    assert before["total"] == (B1 + B3, 5, 4)
    assert before["feature_unpriced"] == {"chat": 3, "search": 2}
    assert before["unpriced_items"] == [("chat", 3), ("search", 2)]

    result = store.reprice(start_date=YESTERDAY, end_date=TOMORROW, book=BOOK2, who="test", why="gpt-9 priced")
    assert isinstance(result, RepriceResult) and result.id is not None
    assert (result.spans_seen, result.spans_changed) == (5, 5)
    svc = {s.service: (s.before_nano, s.after_nano, s.unpriced_before, s.unpriced_after) for s in result.services}
    assert svc == {"dynamodb": (B1 + B3, B1 + B3, 0, 0), "openai": (0, LLM_AFTER, 5, 0)}

    after = reads(backend.url, store)
    total = A1 + A2 + A3 + A4 + A5
    assert after["total"] == (total, 0, 4)
    assert after["today"] == after["last_2h"] == A1 + A2 + A3 + A5
    assert after["feature"] == {"chat": A1 + A4 + A5, "search": A2 + A3}
    assert after["feature_unpriced"] == {"chat": 0, "search": 0}
    assert after["user"] == {"acme": A1 + A2 + A4 + A5, "globex": A3}
    assert after["endpoint"] == {"/chat": A1 + A2 + A4 + A5, "/find": A3}
    assert after["service"] == {"dynamodb": B1 + B3, "openai": LLM_AFTER}
    assert after["loaded"] == {"chat": A1 + A2 + A4 + A5, "search": A2 + A3}
    assert after["requests"] == {"r1": A1 + A2, "r2": A3, "r3": A4, "r5": A5}
    assert after["tree"] == [("s1", A1, A1 + A2), ("s2", A2, A2)]
    assert after["trend"] == [0, A4, A1 + A2 + A3 + A5]
    assert after["unpriced_items"] == []
    assert after["overview"] == (total, 0, 5)
    assert {k: v[:3] for k, v in after["dash_feature"].items()} == {
        "chat": (A1 + A4 + A5, A1 + A2 + A4 + A5, 0),
        "search": (A2 + A3, A2 + A3, 0),
    }
    assert after["dash_feature"]["chat"][3] == {"dynamodb": B1, "openai": A1 - B1 + A4 + A5}
    assert {k: v[0] for k, v in after["dash_user"].items()} == after["user"]
    assert {k: v[0] for k, v in after["dash_endpoint"].items()} == after["endpoint"]
    assert after["dash_requests"] == {"r1": (A1 + A2, 0), "r2": (A3, 0), "r3": (A4, 0), "r5": (A5, 0)}
    assert sorted(after["dash_newest"]) == [("r1", A1 + A2, 0), ("r2", A3, 0), ("r3", A4, 0), ("r5", A5, 0)]
    assert after["dash_trend"]["chat"][-2:] == (A4, A1 + A5)
    assert after["dash_unpriced"] == []

    store.undo_restatement(result.id)
    assert reads(backend.url, store) == before


def test_reprice_is_limited_to_its_features_and_days(backend: Backend, store: ReadStore) -> None:
    """Only the named features' spans in the range change; requests keep their other spans' cost."""
    assert isinstance(store, AdminStore)
    result = store.reprice(start_date=TODAY, end_date=TOMORROW, features=["search"], book=BOOK2)
    assert (result.spans_seen, result.spans_changed, result.features) == (2, 2, ("search",))
    after = reads(backend.url, store)
    assert after["feature"] == {"chat": B1, "search": A2 + A3}
    assert after["feature_unpriced"] == {"chat": 3, "search": 0}
    assert after["requests"]["r1"] == B1 + A2
    assert after["loaded"] == {"chat": B1 + A2, "search": A2 + A3}
    assert after["unpriced_items"] == [("chat", 3)]


def test_a_dry_run_reports_the_change_and_stores_nothing(backend: Backend, store: ReadStore) -> None:
    """``dry_run`` gives the same per-service figures and leaves every read as it was."""
    assert isinstance(store, AdminStore)
    before = reads(backend.url, store)
    dry = store.reprice(start_date=YESTERDAY, end_date=TOMORROW, book=BOOK2, dry_run=True)
    assert dry.id is None and dry.dry_run and dry.spans_changed == 5
    assert (dry.before_nano, dry.after_nano, dry.unpriced_before, dry.unpriced_after) == (
        B1 + B3, B1 + B3 + LLM_AFTER, 5, 0,
    )  # fmt: skip
    assert reads(backend.url, store) == before


def test_reprice_with_the_same_book_changes_nothing(backend: Backend, store: ReadStore) -> None:
    """Re-pricing with the book that priced the spans finds nothing to change."""
    assert isinstance(store, AdminStore)
    before = reads(backend.url, store)
    result = store.reprice(start_date=YESTERDAY, end_date=TOMORROW, book=BOOK)
    assert result.spans_changed == 0 and result.delta_nano == 0
    assert reads(backend.url, store) == before


def test_undo_order_and_bad_ranges(backend: Backend, store: ReadStore) -> None:
    """A restatement made after a reprice is undone first; a reprice's range must be a real range."""
    assert isinstance(store, AdminStore)
    before = reads(backend.url, store)
    rp = store.reprice(start_date=YESTERDAY, end_date=TOMORROW, book=BOOK2)
    rid = store.restate_historical_costs(factor=2.0, start_date=TODAY, end_date=TOMORROW)
    with pytest.raises(StorageError, match="undo it first"):
        store.undo_restatement(rp.id)
    store.undo_restatement(rid)
    assert store.total()["cost_nano"] == A1 + A2 + A3 + A4 + A5
    store.undo_restatement(rp.id)
    with pytest.raises(StorageError, match="already undone"):
        store.undo_restatement(rp.id)
    assert reads(backend.url, store) == before
    with pytest.raises(ConfigError, match="after start_date"):
        store.reprice(start_date=TODAY, end_date=TODAY, book=BOOK2)
    with pytest.raises(ConfigError, match="list of feature names"):
        store.reprice(start_date=TODAY, end_date=TOMORROW, features="chat", book=BOOK2)


def test_lambda_compute_and_a_changed_rate_are_repriced(backend: Backend) -> None:
    """A Lambda root span stored before GB-seconds had a rate gets one; a changed read rate applies too."""
    t = NOW - HOUR
    backend.ingest(
        [Span("l1", None, "rl", "fn", start_ns=t, duration_ns=1_500_200_000, lambda_memory_mb=1024,
              lambda_architecture="arm64", usage=(UsageItem("t_read", count=2.0),), path=("fn",))],
        BOOK,
    )  # fmt: skip
    store = open_store(backend.url)
    assert isinstance(store, AdminStore)
    assert store.total()["unpriced_count"] == 1  # no GB-second rate in BOOK
    # $0.0000133334 per GB-s on arm64, and reads now $0.50 per million (500 nano each)
    book = BOOK.with_overrides([
        PriceEntry(key="lambda_gb_second_arm64", service="lambda", per_gb_second=Decimal("0.0000133334")),
        PriceEntry(key="t_read", service="dynamodb", per_request=Decimal("0.0000005")),
    ])  # fmt: skip
    result = store.reprice(start_date=TODAY, end_date=TOMORROW, book=book)
    gb_s = Decimal(1024) / 1024 * Decimal(1501) / 1000  # billed per started millisecond
    compute = round(gb_s * Decimal("0.0000133334") * NANO)
    assert result.spans_changed == 1
    assert store.total()["cost_nano"] == compute + 2 * 500 and store.total()["unpriced_count"] == 0
    assert by(store.aggregate_by_service(), "service") == {"dynamodb": 1000, "lambda": compute}
    assert store.get_request_cost(limit=1)[0]["cost_nano"] == compute + 1000
    store.undo_restatement(result.id)
    assert store.total()["cost_nano"] == 2 * READ and store.total()["unpriced_count"] == 1


def test_an_sdk_recorded_unknown_model_is_listed_under_its_model_id_on_every_backend(backend: Backend) -> None:
    """The SDK's item for a call to an unknown model is counted unpriced as ``openai:<model id>`` on SQLite and
    ClickHouse alike (the id a price is written for), and a reprice that prices it empties that row."""
    from spendtrace.sdk.instrument._openai import usage_item

    item = usage_item("GPT-9-Turbo", {"prompt_tokens": 1000, "completion_tokens": 100})
    backend.ingest([Span("u1", None, "ru", "chat", start_ns=NOW - HOUR, usage=(item,), path=("chat",))], BOOK)
    store = open_store(backend.url)
    assert isinstance(store, AdminStore)
    assert [(u["key"], u["feature"], u["items"]) for u in store.unpriced_usage()] == [("openai:gpt-9-turbo", "chat", 1)]
    result = store.reprice(start_date=TODAY, end_date=TOMORROW, book=BOOK2)
    assert result.spans_changed == 1
    assert store.unpriced_usage() == []
    assert store.total()["cost_nano"] == 1000 * IN + 100 * OUT


def test_a_reprice_failing_midway_on_clickhouse_is_taken_back_and_the_next_one_counts(tmp_path: Any) -> None:
    """ClickHouse has no transaction: a reprice whose ``requests`` insert is refused, after the rollups took
    theirs, leaves every read as before and no record; the next reprice then applies in full.

    Before, the rollups kept the failed attempt's deltas (spend moved with no record to undo), and the next
    reprice took the same id, so the engine dropped its delta rows as duplicates of the failed attempt's.
    """
    from store_backends import BACKENDS

    from spendtrace.server.store.clickhouse._client import connect

    backend = BACKENDS["chdb"](tmp_path)
    backend.ingest(spans(), BOOK)
    store = open_store(backend.url)
    assert isinstance(store, AdminStore)
    before = reads(backend.url, store)
    conn = connect(backend.url)
    try:
        conn.command("ALTER TABLE requests ADD CONSTRAINT refuse CHECK cost_nano < -1")
        with pytest.raises(StorageError, match="taken back"):
            store.reprice(start_date=YESTERDAY, end_date=TOMORROW, book=BOOK2)
        assert reads(backend.url, store) == before
        assert conn.tuples("SELECT count() FROM restatements") == [(0,)]
        conn.command("ALTER TABLE requests DROP CONSTRAINT refuse")
    finally:
        conn.close()
    result = store.reprice(start_date=YESTERDAY, end_date=TOMORROW, book=BOOK2)
    after = reads(backend.url, store)
    assert after["total"] == (A1 + A2 + A3 + A4 + A5, 0, 4)
    assert after["feature"] == {"chat": A1 + A4 + A5, "search": A2 + A3}
    assert after["requests"] == {"r1": A1 + A2, "r2": A3, "r3": A4, "r5": A5}
    assert after["loaded"] == {"chat": A1 + A2 + A4 + A5, "search": A2 + A3}
    store.undo_restatement(result.id)
    assert reads(backend.url, store) == before
