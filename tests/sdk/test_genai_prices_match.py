"""The dated entries derived from genai-prices charge what genai-prices charges, for every model it knows.

For each OpenAI, Anthropic and AWS Bedrock model in the installed genai-prices data: an id that
genai-prices matches to it, every price context it has (service tiers, batch), every date a price
starts, and usages with cache reads, 5-minute and 1-hour writes and long context. Our cost must equal
genai-prices' ``calc_price`` rounded to the nano-dollar.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import data_snapshot, types

from spendtrace.schema import UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.pricing._entry import date_to_ns

_OURS = {"openai": "openai", "anthropic": "anthropic", "aws": "bedrock"}
#: (input, cache read, 5-minute write, 1-hour write, output): small, cached, and over every long-context threshold
_USAGES = [(1234, 0, 0, 0, 567), (900, 3000, 700, 500, 250), (150_000, 60_000, 30_000, 20_000, 4_000)]


def _refs(clause: Any) -> Iterator[str]:
    """Literal ids a match clause names (equals, starts-with, contains, ends-with), depth first."""
    for name in ("equals", "starts_with", "contains", "ends_with"):
        value = getattr(clause, name, None)
        if isinstance(value, str):
            yield value
    for name in ("or_", "and_"):
        for sub in getattr(clause, name, None) or ():
            yield from _refs(sub)


def _has_token_price(model: Any) -> bool:
    """Whether any of the model's prices is per token (audio, image and moderation models have none)."""
    prices = [model.prices] if isinstance(model.prices, types.ModelPrice) else [c.prices for c in model.prices]
    return any(getattr(p, "input_mtok", None) is not None for p in prices)


def _cases() -> Iterator[tuple[str, str, Any]]:
    snap = data_snapshot.get_snapshot()
    for provider in snap.providers:
        if provider.id not in _OURS:
            continue
        for model in provider.models:
            if not _has_token_price(model):
                continue  # not an LLM row of ours: nothing to compare
            for ref in (model.id, *_refs(model.match)):
                try:
                    _, found = snap.find_provider_model(ref, None, provider.id, None)
                except LookupError:
                    continue
                if found is model:
                    yield provider.id, ref, model
                    break


def _dates(model: Any) -> list[date]:
    starts = {date(2024, 1, 1), date(2026, 12, 1)}
    for c in [] if isinstance(model.prices, types.ModelPrice) else model.prices:
        if isinstance(c.constraint, types.StartDateConstraint):
            starts.add(c.constraint.start_date)
    for v in model.price_variants or ():
        if isinstance(v.constraint, types.StartDateConstraint):
            starts.add(v.constraint.start_date)
    return sorted(starts)


def _tiers(provider: str, model: Any) -> list[str | None]:
    """Service tiers as the APIs report them, for each price context the model has."""
    tiers: list[str | None] = [None]
    for v in model.price_variants or ():
        for k, val in v.when.items():
            tier = "batch" if (k, val) == ("processing", "batch") else val if k == "service_tier" else None
            if tier is not None and tier not in tiers:
                tiers.append(tier)
    return tiers


CASES = list(_cases())


def test_every_known_model_of_the_three_providers_is_found() -> None:
    """genai-prices knows a few hundred models of these providers, and we found an id for nearly every one."""
    snap = data_snapshot.get_snapshot()
    total = sum(1 for p in snap.providers if p.id in _OURS for m in p.models if _has_token_price(m))
    assert len(CASES) >= 0.95 * total > 200


@pytest.mark.parametrize(("provider", "ref", "model"), CASES, ids=[f"{p}:{r}" for p, r, _ in CASES])
def test_derived_entries_match_genai_prices(provider: str, ref: str, model: Any) -> None:
    """Same cost as ``genai_prices.calc_price`` for every date, tier and usage shape (to the nano-dollar)."""
    book = PriceBook.default()
    ours = _OURS[provider]
    priced = 0
    for d in _dates(model):
        at = datetime(d.year, d.month, d.day, 12, tzinfo=UTC)
        for tier in _tiers(provider, model):
            ctx = None if tier is None else ({"processing": "batch"} if tier == "batch" else {"service_tier": tier})
            for inp, read, w5, w1, out in _USAGES:
                usage = genai_prices.Usage(
                    input_tokens=inp + read + w5 + w1,
                    cache_read_tokens=read,
                    cache_write_tokens=w5 + w1,
                    cache_write_1h_tokens=w1,
                    output_tokens=out,
                )
                try:
                    expected = genai_prices.calc_price(usage, ref, provider_id=provider, genai_request_timestamp=at,
                                                       price_context=ctx)  # fmt: skip
                except (LookupError, ValueError):
                    continue
                if expected.model_price.input_mtok is None:
                    continue  # no token price (audio, images): not an LLM row of ours
                item = UsageItem("x", ours, 1.0, inp, out, read, w5, w1, provider=ours, model=ref, service_tier=tier)
                got, version = book.price(item, date_to_ns(d) + 12 * 3600 * 10**9)
                want = int((expected.total_price * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
                assert got == want, (ref, d, tier, (inp, read, w5, w1, out), version)
                priced += 1
    assert priced > 0, f"{ref}: no date, tier or usage shape was compared"
