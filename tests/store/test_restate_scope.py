"""A calibration factor from the AWS bill scales AWS services only, on every backend (issue #15 item 7).

The factor ``reconcile()`` proposes compares the model with Cost Explorer, which bills AWS services
(Bedrock among them) and never OpenAI's or Anthropic's own APIs. Restating with it must leave those
alone; per-service ``factors`` still apply to any service they name.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from store_backends import Backend

from spendtrace.errors import ConfigError
from spendtrace.schema import Span, UsageItem
from spendtrace.server.model.reconcile import CalibrationFactor
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import AdminStore, ReadStore, open_store

NANO = 10**9
AT = int(dt.datetime(2026, 2, 3, 12, tzinfo=dt.UTC).timestamp()) * NANO
#: every key $0.0001 per request = 100,000 nano
SERVICES = ("dynamodb", "bedrock", "openai", "anthropic", "stripe")
BOOK = PriceBook([PriceEntry(key=f"t_{s}", service=s, per_request=Decimal("0.0001")) for s in SERVICES], name="t")
UNIT = 100_000


@pytest.fixture
def store(backend: Backend) -> ReadStore:
    """One span per service on 2026-02-03, each used 10 times ($0.001)."""
    spans = [
        Span(f"s-{s}", None, f"r-{s}", "app", start_ns=AT, usage=(UsageItem(f"t_{s}", s, count=10.0),), path=("app",))
        for s in SERVICES
    ]
    backend.ingest(spans, BOOK)
    return open_store(backend.url)


def services(store: ReadStore) -> dict[str, int]:
    return {r["service"]: r["cost_nano"] for r in store.aggregate_by_service()}


def test_a_factor_scales_aws_services_and_leaves_direct_llm_spend_alone(store: ReadStore) -> None:
    """x2: DynamoDB and Bedrock double; OpenAI, Anthropic and a user's own key stay; undo restores."""
    assert isinstance(store, AdminStore)
    rid = store.restate_historical_costs(factor=2.0, start_date="2026-02-03", end_date="2026-02-04")
    doubled, same = 20 * UNIT, 10 * UNIT
    assert services(store) == {"dynamodb": doubled, "bedrock": doubled, "openai": same, "anthropic": same,
                               "stripe": same}  # fmt: skip
    assert store.total()["cost_nano"] == 2 * doubled + 3 * same
    assert {r["request_id"]: r["cost_nano"] for r in store.get_request_cost(limit=10)}["r-openai"] == same
    store.undo_restatement(rid)
    assert services(store) == dict.fromkeys(SERVICES, same)
    # named services are scaled whatever they are
    store.restate_historical_costs(factors={"openai": 1.5}, start_date="2026-02-03", end_date="2026-02-04")
    assert services(store)["openai"] == 15 * UNIT and services(store)["dynamodb"] == same


def test_a_factor_from_a_partial_report_is_refused_unless_forced(store: ReadStore) -> None:
    """A factor that remembers days without actuals raises; ``force=True`` applies it."""
    assert isinstance(store, AdminStore)
    partial = CalibrationFactor(2.0, ("2026-02-04",))
    with pytest.raises(ConfigError, match="partial reconciliation"):
        store.restate_historical_costs(factor=partial, start_date="2026-02-03", end_date="2026-02-04")
    with pytest.raises(ConfigError, match="partial reconciliation"):
        store.restate_historical_costs(factors={"dynamodb": partial}, start_date="2026-02-03", end_date="2026-02-04")
    assert services(store)["dynamodb"] == 10 * UNIT
    store.restate_historical_costs(factor=partial, start_date="2026-02-03", end_date="2026-02-04", force=True)
    assert services(store)["dynamodb"] == 20 * UNIT
