"""``prepare_batch`` prices each span with the entry in force when it started, whatever the memo holds."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from spendtrace.schema import Span, UsageItem
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook
from spendtrace.server.pricing._entry import PriceEntry

_CHANGE = date(2026, 6, 1)
_CHANGE_NS = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp()) * 10**9
_DAY_NS = 86_400 * 10**9


def _book() -> PriceBook:
    return PriceBook(
        [
            PriceEntry("lookup", "db", per_request=Decimal("0.000001")),
            PriceEntry("lookup", "db", effective_from=_CHANGE, per_request=Decimal("0.000003")),
            PriceEntry("flat", "db", per_request=Decimal("0.000002")),
        ]
    )


@pytest.mark.parametrize("weight", [1.0, 4.0])
def test_spans_before_and_after_a_price_change_interleaved_get_their_own_entry(weight: float) -> None:
    """New-rate and old-rate spans of the same usage, alternating in one batch, each cost what the book says."""
    book = _book()
    item, flat = UsageItem("lookup", count=2.0), UsageItem("flat", count=1.0)
    starts = [_CHANGE_NS + _DAY_NS, _CHANGE_NS - _DAY_NS, _CHANGE_NS, _CHANGE_NS - 1, _CHANGE_NS + 5]
    spans = [
        Span(f"s{i}", None, f"r{i}", "f", start_ns=t, weight=weight, usage=(item, flat), path=("f",))
        for i, t in enumerate(starts * 2)
    ]
    # in nano-dollars, from the rates in _book(): 2 lookups + 1 flat, times the weight
    old_rate = (2 * 1_000 + 2_000) * int(weight)  # before the change: $0.000001 per lookup
    new_rate = (2 * 3_000 + 2_000) * int(weight)  # from 2026-06-01: $0.000003 per lookup
    batch = prepare_batch(spans, book)
    for span, row in zip(spans, batch.span_rows, strict=True):
        expected = new_rate if span.start_ns >= _CHANGE_NS else old_rate
        assert row[15] == expected, (span.start_ns, row[15], expected)
    costs = {row[7]: row[15] for row in batch.span_rows}
    assert (costs[_CHANGE_NS - 1], costs[_CHANGE_NS]) == (old_rate, new_rate)
