"""Unpriced usage per feature in the Live screen, and what a reprice does to it, at 150x36 and 80x24."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from _snap import screen_text
from _tui_helpers import SIZE, settle

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import open_store
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from tui.screens.dimension import LiveScreen
from tui.widgets.keyed_table import KeyedTable

BOOK = PriceBook([PriceEntry(key="t_read", service="dynamodb", per_request=Decimal("0.00000025"))], name="t")
PRICED = BOOK.with_overrides(
    [PriceEntry(key="openai:gpt-9", service="openai", per_1m_input_tokens=Decimal(2), per_1m_output_tokens=Decimal(8))]
)


def _llm(i: int) -> UsageItem:
    return UsageItem("openai_gpt_9", "openai", count=1.0, input_tokens=i, output_tokens=i, provider="openai",
                     model="gpt-9")  # fmt: skip


@pytest.fixture
def db(db_path: Path, fixed_now_ns: int) -> Path:
    """chat used the unpriced model three times, search twice; billing used priced reads only."""
    t = fixed_now_ns - 600 * 10**9
    spans = [Span(f"c{i}", None, f"rc{i}", "chat", start_ns=t + i, usage=(_llm(100),), path=("chat",))
             for i in range(3)]  # fmt: skip
    spans += [Span(f"s{i}", None, f"rs{i}", "search", start_ns=t + 10 + i, usage=(_llm(10),), path=("search",))
              for i in range(2)]  # fmt: skip
    spans.append(Span("b", None, "rb", "billing", start_ns=t + 20, usage=(UsageItem("t_read", count=4.0),),
                      path=("billing",)))  # fmt: skip
    conn = connect(db_path)
    try:
        write_batch_sync(conn, prepare_batch(spans, BOOK))
    finally:
        conn.close()
    return db_path


def _unpriced_column(table: KeyedTable) -> dict[str, int]:
    col = list(table.specs).index("unpriced")
    return {k: table.row_values(k)[col] for k in table.ordered_keys()}


@pytest.mark.parametrize("size", [SIZE, (80, 24)])
async def test_live_shows_unpriced_usage_per_feature_until_a_reprice_prices_it(
    db: Path, make_app, fixed_now_ns: int, size: tuple[int, int]
) -> None:  # type: ignore[no-untyped-def]
    """Per-feature counts in the table and the left-out line name the features; after the reprice, none."""
    app = make_app(db)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, LiveScreen)
        table = app.screen.query_one("#main", KeyedTable)
        assert _unpriced_column(table) == {"chat": 3, "search": 2, "billing": 0}
        text = screen_text(app)
        assert "unpriced 5" in text.splitlines()[0] or "unpr 5" in text.splitlines()[0].lower()
        assert "openai:gpt-9 ×3 in chat" in text and "×2 in search" in text

        day = dt.datetime.fromtimestamp(fixed_now_ns / 1e9, dt.UTC).date()
        with open_store(db) as store:
            store.reprice(start_date=day, end_date=day + dt.timedelta(days=1), book=PRICED)
        await settle(app, pilot)
        assert _unpriced_column(table) == {"chat": 0, "search": 0, "billing": 0}
        text = screen_text(app)
        assert "every usage item priced" in text and "gpt-9" not in text
