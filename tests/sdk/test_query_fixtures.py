"""``Expect``, the reference the query tests compare against, prices from the rates written in ``_query_fixtures``.

It never reads the price book the store was fed: fed other rates, the store moves and ``Expect`` does not.
"""

from __future__ import annotations

import sqlite3
from fractions import Fraction
from pathlib import Path

import pytest
from _query_fixtures import PUBLISHED, UNKNOWN_KEY, Expect, Rates, book_of, make_spans, store

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite import SQLiteStorage

NOW = 1_793_620_800_000_000_000  # 2026-11-02 12:00 UTC, the fixed_now_ns instant

#: Made-up rates whose costs fall between nano-dollars, to pin the rounding rule.
HALF = Rates(0, {"half": ("made-up", {"count": Fraction(1, 2 * 10**9)})})  # $0.5e-9 per call
LLM = Rates(0, {"llm": ("made-up", {"input_tokens": Fraction(3, 10**6)})})  # $3 per 1M input tokens


def _span(sid: str, *usage: UsageItem, weight: float = 1.0) -> Span:
    return Span(sid, None, sid, "f", start_ns=NOW, weight=weight, usage=usage, path=("f",))


def _by_span(spans: list[Span], rates: Rates) -> dict[str, tuple[int, int, dict[str, int]]]:
    return {p.span.span_id: (p.cost, p.unpriced, p.services) for p in Expect(spans, rates).priced}


def _stored(tmp_path: Path, spans: list[Span], book: PriceBook) -> dict[str, int]:
    db = tmp_path / "costs.db"
    store(db, spans, book)
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT span_id, cost_nano FROM spans").fetchall())


def test_published_rates_give_the_numbers_written_here() -> None:
    """Hand-made spans cost, in nano-dollars, the products of the provider pages' rates worked out by hand."""
    spans = [
        _span(
            "mixed",
            UsageItem("dynamodb_read", count=3.0),  # 3 x $0.125/1M = 375
            UsageItem("bedrock_claude_3_haiku", count=1.0, input_tokens=1000, output_tokens=200),  # 250,000 + 250,000
            UsageItem("s3_put", count=2.0),  # 2 x $0.005/1000 = 10,000
            UsageItem(UNKNOWN_KEY, count=1.0),  # no rate: unpriced, not $0
        ),
        _span("sampled", UsageItem("s3_get", count=1.0), weight=4.0),  # 4 x $0.0004/1000 = 1,600
        _span("cache", UsageItem("bedrock_claude_3_haiku", input_tokens=10, cache_read_tokens=5)),  # no cache rate
    ]
    assert _by_span(spans, PUBLISHED) == {
        "mixed": (510_375, 1, {"dynamodb": 375, "bedrock": 500_000, "s3": 10_000}),
        "sampled": (1_600, 0, {"s3": 1_600}),
        "cache": (0, 1, {}),
    }


def test_rounding_is_once_per_item_then_per_weight_half_to_even(tmp_path: Path) -> None:
    """Half a nano-dollar rounds to even per item; the weight multiplies the rounded cost; the store agrees."""
    spans = [
        _span("one", UsageItem("half", count=1.0)),  # 0.5 -> 0
        _span("three", UsageItem("half", count=3.0)),  # 1.5 -> 2
        _span("two-items", UsageItem("half", count=1.0), UsageItem("half", count=3.0)),  # 0 + 2, not round(2.0)
        _span("w1.5", UsageItem("half", count=2.0), weight=1.5),  # 1 nano x 1.5 -> 2
        _span("w2.5", UsageItem("half", count=2.0), weight=2.5),  # 1 nano x 2.5 -> 2
        _span("w3.5", UsageItem("half", count=2.0), weight=3.5),  # 1 nano x 3.5 -> 4
        _span("w3-of-half", UsageItem("half", count=1.0), weight=3.0),  # round(0.5) x 3 = 0, not round(1.5)
    ]
    want = {"one": 0, "three": 2, "two-items": 2, "w1.5": 2, "w2.5": 2, "w3.5": 4, "w3-of-half": 0}
    assert {k: v[0] for k, v in _by_span(spans, HALF).items()} == want
    assert _stored(tmp_path, spans, book_of(HALF)) == want


def test_tokens_need_a_rate_and_a_count_without_one_adds_nothing(tmp_path: Path) -> None:
    """An LLM call's count is free where only tokens have a rate; tokens of a kind with no rate make it unpriced."""
    spans = [
        _span("call", UsageItem("llm", count=1.0, input_tokens=1_000)),  # $3/1M x 1,000 = $0.003
        _span("output", UsageItem("llm", count=1.0, input_tokens=1_000, output_tokens=5)),  # no output rate
        _span("count-only", UsageItem("llm", count=1.0)),  # nothing with a rate: unpriced
    ]
    assert _by_span(spans, LLM) == {
        "call": (3_000_000, 0, {"made-up": 3_000_000}),
        "output": (0, 1, {}),
        "count-only": (0, 1, {}),
    }
    assert _stored(tmp_path, spans, book_of(LLM)) == {"call": 3_000_000, "output": 0, "count-only": 0}


@pytest.mark.parametrize("factor", [2, 10])
def test_a_store_fed_other_rates_differs_from_expect_by_exactly_that_factor(tmp_path: Path, factor: int) -> None:
    """The dataset stored at ``factor`` x the published rates: every total moves by the factor, Expect does not."""
    spans = make_spans(NOW, n_requests=60, seed=23)
    expect = Expect(spans)
    store(tmp_path / "x.db", spans, book_of(PUBLISHED.scaled(factor)))
    with SQLiteStorage(tmp_path / "x.db") as s:
        total = s.total()["cost_nano"]
        by_feature = {r["feature"]: r["cost_nano"] for r in s.aggregate_by_feature()}
    want = {k: v["cost"] for k, v in expect.by("feature").items()}
    assert sum(want.values()) > 0
    # every published rate is a whole number of nano-dollars per unit and weights are 1 or 4: no rounding
    assert total == factor * sum(p.cost for p in expect.priced)
    assert by_feature == {k: factor * v for k, v in want.items()}
    assert by_feature == {k: v["cost"] for k, v in Expect(spans, PUBLISHED.scaled(factor)).by("feature").items()}


def test_expect_refuses_spans_older_than_its_rates() -> None:
    """Before DynamoDB's 2024-11-01 price cut the published table's read rate does not hold: Expect says so."""
    old = Span("old", None, "old", "f", start_ns=PUBLISHED.since_ns - 1, usage=(UsageItem("dynamodb_read", count=1.0),))
    with pytest.raises(ValueError, match="before the rates"):
        Expect([old])
