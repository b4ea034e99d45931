"""Repricing usage that older SDKs and ingests counted unpriced under a model-family key, on every backend.

Before the SDK keyed LLM calls by model id, an item carried a family key (``openai_gpt_9_turbo``) next
to its model id. ClickHouse's view counts unpriced usage by the item's key, so such items are listed
under the family key there; SQLite ingests from before the reprice work counted some of them under
that key too (the row such an ingest left is made here by renaming the row today's ingest writes, the
only difference between the two). A reprice that prices them must empty that row, and its undo
must put it back.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal

from store_backends import Backend

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import AdminStore, open_store

NANO = 10**9
NOW = int(dt.datetime(2026, 5, 28, 12, tzinfo=dt.UTC).timestamp()) * NANO
TODAY, TOMORROW = "2026-05-28", "2026-05-29"
FAMILY = "openai_gpt_9_turbo"
#: no price for gpt-9-turbo, then $2 / $8 per million input / output tokens
BOOK = PriceBook([PriceEntry(key="t_read", service="dynamodb", per_request=Decimal("0.00000025"))])
BOOK2 = BOOK.with_overrides([PriceEntry(key="openai:gpt-9-turbo", service="openai", per_1m_input_tokens=Decimal(2),
                                        per_1m_output_tokens=Decimal(8))])  # fmt: skip


def listed(store: AdminStore) -> list[tuple[str, str, int]]:
    return [(u["key"], u["feature"], u["items"]) for u in store.unpriced_usage()]  # type: ignore[attr-defined]


def test_unpriced_usage_counted_under_a_family_key_is_taken_back_by_a_reprice(backend: Backend) -> None:
    """Two calls an older SDK recorded (family key + model id): listed under the family key, emptied by the
    reprice that prices them, listed again after its undo."""
    old = UsageItem(FAMILY, "openai", 1.0, 1000, 100, provider="openai", model="gpt-9-turbo")
    spans = [Span(f"s{i}", None, f"r{i}", "chat", start_ns=NOW - 3600 * NANO + i, usage=(old,), path=("chat",))
             for i in range(2)]  # fmt: skip
    backend.ingest(spans, BOOK)
    if backend.name == "sqlite":
        db = backend.url.removeprefix("sqlite:///")
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE unpriced_usage SET key = ? WHERE key = 'openai:gpt-9-turbo'", (FAMILY,))
    store = open_store(backend.url)
    assert isinstance(store, AdminStore)
    assert listed(store) == [(FAMILY, "chat", 2)]

    result = store.reprice(start_date=TODAY, end_date=TOMORROW, book=BOOK2)
    assert result.spans_changed == 2
    assert listed(store) == []
    assert store.total()["cost_nano"] == 2 * (1000 * 2_000 + 100 * 8_000)

    assert result.id is not None
    store.undo_restatement(result.id)
    assert listed(store) == [(FAMILY, "chat", 2)]
