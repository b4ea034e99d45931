"""Calls priced as the provider bills them: real SDK clients record, the default price book prices.

Each expected cost is computed here from the provider's public list price (the page is cited next
to the rates), never read from the price book: nano-dollars = sum of tokens x USD per 1M tokens x 1000.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import anthropic
import boto3
import httpx2
import openai
import pytest
from botocore.stub import Stubber

import spendtrace
from spendtrace.schema import Span, UsageItem
from spendtrace.sdk.instrument import auto_instrument, uninstrument
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook

#: When the calls are priced: after every price these cases use took effect.
AT = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 1_000_000_000

OPENAI_PRICING = "https://platform.openai.com/docs/pricing"  # standard, flex, priority and fine-tuning tables
ANTHROPIC_PRICING = "https://docs.anthropic.com/en/docs/about-claude/pricing"  # incl. long context and cache TTLs
BEDROCK_PRICING = "https://aws.amazon.com/bedrock/pricing/"  # global vs geo / in-region inference profiles
LAMBDA_PRICING = "https://aws.amazon.com/lambda/pricing/"  # x86 vs Arm GB-second


def nano(*pairs: tuple[int, str]) -> int:
    """Cost in nano-dollars of (tokens, USD per 1M tokens) pairs, rounded once, half to even."""
    usd_e9 = sum((Decimal(n) * Decimal(rate) * 1000 for n, rate in pairs), Decimal(0))
    return int(usd_e9.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def cost(item: UsageItem) -> int | None:
    """What the default book charges for ``item`` at ``AT``."""
    return PriceBook.default().price(item, AT)[0]


@pytest.fixture
def instrumented() -> Iterator[None]:
    """openai, anthropic and boto3 instrumented for the test, removed afterwards."""
    auto_instrument(only=["openai", "anthropic", "boto3"])
    try:
        yield
    finally:
        uninstrument()


def _items(spans: list[Span]) -> list[UsageItem]:
    return [u for s in spans for u in s.usage]


# ----------------------------------------------------------------------------- OpenAI


def _openai(doc: dict[str, Any]) -> openai.OpenAI:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=doc))
    return openai.OpenAI(api_key="test", http_client=httpx2.Client(transport=transport))


def _chat(model: str, prompt: int, cached: int, completion: int, tier: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_790_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}},
    }  # fmt: skip
    if tier is not None:
        doc["service_tier"] = tier
    return doc


def _openai_item(doc: dict[str, Any], spans: list[Span], request_model: str = "gpt-4o") -> UsageItem:
    with spendtrace.track(feature="chat"):
        _openai(doc).chat.completions.create(model=request_model, messages=[{"role": "user", "content": "hi"}])
    (item,) = _items(spans)
    return item


def test_a_dated_openai_snapshot_is_priced_as_itself(instrumented: None, spans: list[Span]) -> None:
    """gpt-4o-2024-05-13 costs $5 / $15 per 1M, not gpt-4o's $2.50 / $10 (OPENAI_PRICING)."""
    item = _openai_item(_chat("gpt-4o-2024-05-13", 1000, 0, 200), spans)
    assert (item.provider, item.model) == ("openai", "gpt-4o-2024-05-13")
    assert cost(item) == nano((1000, "5"), (200, "15"))


@pytest.mark.parametrize(
    ("model", "tier", "rates"),
    [
        # gpt-5 flex: $0.625 input, $0.0625 cached, $5 output (OPENAI_PRICING, "Flex" table)
        ("gpt-5-2025-08-07", "flex", ("0.625", "0.0625", "5")),
        # gpt-4o priority: $4.25 input, $2.125 cached, $17 output (OPENAI_PRICING, "Priority" table)
        ("gpt-4o-2024-08-06", "priority", ("4.25", "2.125", "17")),
        # the default tier, as reported, is the standard price: gpt-4o $2.50 / $1.25 / $10
        ("gpt-4o-2024-08-06", "default", ("2.5", "1.25", "10")),
    ],
)
def test_openai_service_tier_from_the_response_sets_the_rate(
    instrumented: None, spans: list[Span], model: str, tier: str, rates: tuple[str, str, str]
) -> None:
    """The tier the response reports (not the one asked for) is recorded and priced."""
    item = _openai_item(_chat(model, 3000, 1024, 500, tier=tier), spans)
    assert (item.model, item.service_tier, item.input_tokens, item.cache_read_tokens) == (model, tier, 1976, 1024)
    assert cost(item) == nano((1976, rates[0]), (1024, rates[1]), (500, rates[2]))


def test_a_streamed_flex_response_records_its_tier(instrumented: None, spans: list[Span]) -> None:
    """Stream chunks report service_tier too: a flex gpt-5 stream is billed $0.625 / $5 (OPENAI_PRICING, "Flex")."""

    def chunk(content: str | None, usage: dict[str, Any] | None = None) -> str:
        choices = [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
        return json.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1_790_000_000,
                           "model": "gpt-5-2025-08-07", "service_tier": "flex", "choices": choices,
                           "usage": usage})  # fmt: skip

    body = "".join(f"data: {d}\n\n" for d in (chunk("Hi"), chunk(None, {"prompt_tokens": 900, "completion_tokens": 70,
                                                                        "total_tokens": 970}), "[DONE]"))  # fmt: skip
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())
    )
    client = openai.OpenAI(api_key="test", http_client=httpx2.Client(transport=transport))
    with spendtrace.track(feature="stream"):
        assert [c.choices[0].delta.content for c in client.chat.completions.create(model="gpt-5", messages=[],
                                                                                  stream=True)] == ["Hi"]  # fmt: skip
    (item,) = _items(spans)
    assert (item.model, item.service_tier) == ("gpt-5-2025-08-07", "flex")
    assert cost(item) == nano((900, "0.625"), (70, "5"))


def test_fine_tuned_models_get_their_base_models_fine_tuned_rate(instrumented: None, spans: list[Span]) -> None:
    """ft:gpt-4o-mini-2024-07-18:org::id is billed at fine-tuned gpt-4o-mini rates, $0.30 / $1.20 (OPENAI_PRICING)."""
    model = "ft:gpt-4o-mini-2024-07-18:acme::9xYz"
    item = _openai_item(_chat(model, 800, 0, 100), spans, request_model=model)
    assert item.model == model
    assert cost(item) == nano((800, "0.30"), (100, "1.20"))


def test_an_unknown_fine_tuned_model_stays_unpriced_under_its_raw_id(instrumented: None, spans: list[Span]) -> None:
    """A fine-tune genai-prices has no rate for is unpriced and listed by its raw id, never $0."""
    model = "ft:gpt-4.1-2025-04-14:acme::q1"
    with spendtrace.track(feature="tuned"):
        _openai(_chat(model, 800, 0, 100)).chat.completions.create(model=model, messages=[])
    batch = prepare_batch([s.__class__(**{**_fields(s), "start_ns": AT}) for s in spans], PriceBook.default())
    assert batch.cost_nano == 0 and batch.unpriced_items == 1
    assert list(batch.unpriced) == [(f"openai:{model}", "openai", "tuned")]
    usage = json.loads(batch.span_rows[0][14])
    assert (usage[0]["model"], usage[0]["priced"], usage[0]["unit_cost_nano"]) == (model, False, None)


def _fields(span: Span) -> dict[str, Any]:
    return {f: getattr(span, f) for f in span.__struct_fields__}


# ----------------------------------------------------------------------------- Anthropic


def _anthropic_sse(events: list[dict[str, Any]]) -> anthropic.Anthropic:
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    )
    return anthropic.Anthropic(api_key="test", http_client=httpx2.Client(transport=transport))


def _message(model: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}  # fmt: skip


def test_anthropic_stream_with_cumulative_delta_keeps_one_hour_writes(instrumented: None, spans: list[Span]) -> None:
    """message_delta repeats the cumulative usage without the TTL split: 1-hour writes stay at the 1-hour rate.

    claude-haiku-4-5: $1 input, $1.25 5-minute write, $2 1-hour write, $0.10 cache read, $5 output (ANTHROPIC_PRICING).
    """
    start_usage = {"input_tokens": 30, "output_tokens": 1, "cache_read_input_tokens": 500,
                   "cache_creation_input_tokens": 1000,
                   "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600}}  # fmt: skip
    events = [
        {"type": "message_start", "message": _message("claude-haiku-4-5-20251001", start_usage)},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"input_tokens": 30, "output_tokens": 80, "cache_read_input_tokens": 500,
                   "cache_creation_input_tokens": 1000}},
        {"type": "message_stop"},
    ]  # fmt: skip
    client = _anthropic_sse(events)
    with (
        spendtrace.track(feature="chat"),
        client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=[]) as stream,
    ):
        assert stream.get_final_text() == "Hi"
    (item,) = _items(spans)
    assert (item.cache_write_tokens, item.cache_write_1h_tokens, item.output_tokens) == (400, 600, 80)
    assert cost(item) == nano((30, "1"), (500, "0.10"), (400, "1.25"), (600, "2"), (80, "5"))


def test_anthropic_long_context_rate_applies_to_every_token(instrumented: None, spans: list[Span]) -> None:
    """Over 200k input tokens (cache included) Sonnet 4.5 bills $6 / $0.60 read / $22.50 output (ANTHROPIC_PRICING)."""
    usage = {"input_tokens": 150_000, "output_tokens": 1_000, "cache_read_input_tokens": 60_000,
             "cache_creation_input_tokens": 0, "service_tier": "standard"}  # fmt: skip
    doc = {**_message("claude-sonnet-4-5-20250929", usage), "content": [{"type": "text", "text": "hi"}]}
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=doc))
    client = anthropic.Anthropic(api_key="test", http_client=httpx2.Client(transport=transport))
    with spendtrace.track(feature="long"):
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[])
    (item,) = _items(spans)
    assert (item.model, item.service_tier) == ("claude-sonnet-4-5-20250929", "standard")
    assert cost(item) == nano((150_000, "6"), (60_000, "0.60"), (1_000, "22.50"))
    short = UsageItem(item.key, item.service, 1.0, 150_000, 1_000, provider="anthropic", model=item.model)
    assert cost(short) == nano((150_000, "3"), (1_000, "15"))  # under 200k: the standard $3 / $15


# ----------------------------------------------------------------------------- Bedrock


def _converse(model_id: str, usage: dict[str, Any], spans: list[Span]) -> UsageItem:
    brt = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDTEST",
                       aws_secret_access_key="secret")  # fmt: skip
    with Stubber(brt) as stub:
        answer = {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
                  "usage": usage, "metrics": {"latencyMs": 10}}  # fmt: skip
        stub.add_response("converse", answer)
        with spendtrace.track(feature="chat"):
            brt.converse(modelId=model_id, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    (item,) = _items(spans)
    spans.clear()
    return item


@pytest.mark.parametrize(
    ("model_id", "geo", "rates"),
    [
        # global cross-region profile: Claude Sonnet 4.5 $3 input, $0.30 cache read, $15 output (BEDROCK_PRICING)
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "global", ("3", "0.30", "15")),
        # geographic (us., eu.) and in-region endpoints: 10% more, $3.30 / $0.33 / $16.50 (BEDROCK_PRICING)
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "us", ("3.30", "0.33", "16.50")),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu", ("3.30", "0.33", "16.50")),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", None, ("3.30", "0.33", "16.50")),
    ],
)
def test_bedrock_geo_and_in_region_profiles_cost_more_than_global(
    instrumented: None, spans: list[Span], model_id: str, geo: str | None, rates: tuple[str, str, str]
) -> None:
    """The profile prefix is recorded and priced: geo and in-region rates are 10% over global ones."""
    item = _converse(model_id, {"inputTokens": 1200, "outputTokens": 300, "totalTokens": 2500,
                                "cacheReadInputTokens": 1000}, spans)  # fmt: skip
    assert (item.provider, item.model, item.region) == ("bedrock", model_id, geo)
    assert cost(item) == nano((1200, rates[0]), (1000, rates[1]), (300, rates[2]))


def test_mistral_large_3_is_not_priced_as_mistral_large_2(instrumented: None, spans: list[Span]) -> None:
    """mistral.mistral-large-3-675b-instruct: $0.50 / $1.50 per 1M (BEDROCK_PRICING), not Large 2's $4 / $12."""
    item = _converse("mistral.mistral-large-3-675b-instruct", {"inputTokens": 2000, "outputTokens": 400,
                                                               "totalTokens": 2400}, spans)  # fmt: skip
    assert cost(item) == nano((2000, "0.50"), (400, "1.50"))


def test_a_model_genai_prices_lacks_keeps_its_local_row(instrumented: None, spans: list[Span]) -> None:
    """cohere.embed-english-v3 is not in genai-prices: the static row ($0.10 per 1M, BEDROCK_PRICING) prices it."""
    item = _converse("cohere.embed-english-v3", {"inputTokens": 4000, "outputTokens": 0, "totalTokens": 4000}, spans)
    assert cost(item) == nano((4000, "0.10"))


# ----------------------------------------------------------------------------- AWS services


def test_lambda_arm64_gb_seconds_use_the_arm_rate() -> None:
    """Arm GB-seconds cost $0.0000133334, x86 ones $0.0000166667 (LAMBDA_PRICING, first 6B GB-s tier)."""
    arm = UsageItem("lambda_gb_second", "lambda", gb_seconds=1000.0, provider="lambda", architecture="arm64")
    x86 = UsageItem("lambda_gb_second", "lambda", gb_seconds=1000.0, provider="lambda", architecture="x86_64")
    assert cost(arm) == round(Decimal(1000) * Decimal("0.0000133334") * 10**9)
    assert cost(x86) == round(Decimal(1000) * Decimal("0.0000166667") * 10**9)


def test_a_lambda_root_span_on_arm64_is_billed_at_the_arm_gb_second_rate() -> None:
    """A root span on a 1024 MB arm64 function for 1500.2 ms bills 1.501 GB-s at $0.0000133334 (LAMBDA_PRICING)."""
    base = Span("r", None, "r", "api", start_ns=AT, duration_ns=1_500_200_000, lambda_memory_mb=1024)
    arm = Span("a", None, "a", "api", start_ns=AT, duration_ns=1_500_200_000, lambda_memory_mb=1024,
               lambda_architecture="arm64")  # fmt: skip
    batch = prepare_batch([base, arm], PriceBook.default())
    gb_s = Decimal(1024) / 1024 * Decimal(1501) / 1000  # billed per started millisecond
    x86_cost, arm_cost = (round(gb_s * Decimal(rate) * 10**9) for rate in ("0.0000166667", "0.0000133334"))
    assert [row[15] for row in batch.span_rows] == [x86_cost, arm_cost]
    assert json.loads(batch.span_rows[1][14])[0]["architecture"] == "arm64"


def test_overrides_still_win_over_genai_prices() -> None:
    """A negotiated rate for a raw model id, or for the legacy key, replaces genai-prices' rate."""
    item = UsageItem("openai_gpt4o", "openai", 1.0, 1000, 100, provider="openai", model="gpt-4o-2024-05-13")
    from spendtrace.server.pricing import PriceEntry

    by_model = PriceBook.default().with_overrides(
        [PriceEntry("openai:gpt-4o-2024-05-13", "openai", per_1m_input_tokens=1, per_1m_output_tokens=2, source="user")]
    )
    by_key = PriceBook.default().with_overrides(
        [PriceEntry("openai_gpt4o", "openai", per_1m_input_tokens=3, per_1m_output_tokens=4, source="user")]
    )
    assert by_model.price(item, AT)[0] == nano((1000, "1"), (100, "2"))
    assert by_key.price(item, AT)[0] == nano((1000, "3"), (100, "4"))


def test_genai_prices_is_asked_once_per_model_not_per_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pricing 2,000 calls of one model with different sizes matches the model and compiles its entries once."""
    from spendtrace.server.pricing._genai import GenaiPrices

    source = GenaiPrices()
    calls = {"match": 0, "compile": 0}
    find, compile_ = source._snapshot.find_provider_model, source._compile

    def counting_find(*args: Any) -> Any:
        calls["match"] += 1
        return find(*args)

    def counting_compile(*args: Any) -> Any:
        calls["compile"] += 1
        return compile_(*args)

    monkeypatch.setattr(source._snapshot, "find_provider_model", counting_find)
    monkeypatch.setattr(source, "_compile", counting_compile)
    book = PriceBook(PriceBook.static().entries(), llm=source)
    spans = [
        Span(f"s{i}", None, f"s{i}", "chat", start_ns=AT, usage=(
            UsageItem("x", "openai", 1.0, 100 + i, 10 + i % 7, provider="openai", model="gpt-4o-2024-05-13"),))
        for i in range(2000)
    ]  # fmt: skip
    batch = prepare_batch(spans, book)
    assert batch.unpriced_items == 0
    assert batch.cost_nano == sum(nano((100 + i, "5"), (10 + i % 7, "15")) for i in range(2000))
    assert calls == {"match": 1, "compile": 1}
