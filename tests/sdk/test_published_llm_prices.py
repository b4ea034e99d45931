"""LLM token prices checked against the providers' published list prices, written out in this file.

The other pricing tests compute their expected money from the rates in ``static_prices.json``
itself, so a wrong number there (every cache-read rate ten times too high, say) passes them. Here
the rates are typed in by hand from the providers' public pricing pages, in USD per 1M tokens as
those pages show them (the per-1K Bedrock figures times 1000), and the expected cost of each call
is computed from them and the token counts of the provider's own response, never from the book.

Pages (list prices, on-demand, standard tier; Bedrock in us-east-1):

- Anthropic: https://docs.anthropic.com/en/docs/about-claude/pricing ("Model pricing": base input,
  5m cache writes = 1.25x input, 1h cache writes = 2x input, cache hits & refreshes = 0.1x input, output)
- OpenAI: https://openai.com/api/pricing/ (input, cached input, output)
- Amazon Bedrock: https://aws.amazon.com/bedrock/pricing/ (per 1,000 input / output / cache write /
  cache read tokens; prompt caching there covers Claude 3.7 Sonnet, Claude 3.5 Haiku and Amazon Nova)

When a provider changes a price, the static table gets a new dated entry; these tests price at
``AT`` (2026-03-01), so update the row here together with that entry.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import anthropic
import boto3
import httpx2
import openai
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

import spendtrace
from spendtrace import PriceBook, SQLiteStorage, UsageItem
from spendtrace.sdk.instrument import auto_instrument, uninstrument

ANTHROPIC_PAGE = "https://docs.anthropic.com/en/docs/about-claude/pricing"
OPENAI_PAGE = "https://openai.com/api/pricing/"
BEDROCK_PAGE = "https://aws.amazon.com/bedrock/pricing/"

#: When the calls are priced (no later entry in the static table may change these keys' rates).
AT = int(datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()) * 1_000_000_000


@dataclass(frozen=True)
class Published:
    """One model's list prices in USD per 1M tokens, as the page shows them (None: the page has no such price)."""

    page: str
    input: str
    output: str
    cache_read: str
    cache_write_5m: str | None = None
    cache_write_1h: str | None = None


PUBLISHED: dict[str, Published] = {
    # Anthropic's table: input, 5m write, 1h write, cache hit, output
    "anthropic_claude_opus_4_5": Published(ANTHROPIC_PAGE, "5", "25", "0.50", "6.25", "10"),
    "anthropic_claude_opus_4_1": Published(ANTHROPIC_PAGE, "15", "75", "1.50", "18.75", "30"),
    "anthropic_claude_sonnet_4_5": Published(ANTHROPIC_PAGE, "3", "15", "0.30", "3.75", "6"),
    "anthropic_claude_sonnet_4": Published(ANTHROPIC_PAGE, "3", "15", "0.30", "3.75", "6"),
    "anthropic_claude_3_7_sonnet": Published(ANTHROPIC_PAGE, "3", "15", "0.30", "3.75", "6"),
    "anthropic_claude_haiku_4_5": Published(ANTHROPIC_PAGE, "1", "5", "0.10", "1.25", "2"),
    "anthropic_claude_3_5_haiku": Published(ANTHROPIC_PAGE, "0.80", "4", "0.08", "1", "1.6"),
    "anthropic_claude_3_haiku": Published(ANTHROPIC_PAGE, "0.25", "1.25", "0.03", "0.30", "0.50"),
    # OpenAI's table: input, cached input, output (no cache-write price)
    "openai_gpt4o": Published(OPENAI_PAGE, "2.50", "10", "1.25"),
    "openai_gpt4o_mini": Published(OPENAI_PAGE, "0.15", "0.60", "0.075"),
    "openai_gpt4_1": Published(OPENAI_PAGE, "2", "8", "0.50"),
    "openai_gpt4_1_mini": Published(OPENAI_PAGE, "0.40", "1.60", "0.10"),
    "openai_gpt4_1_nano": Published(OPENAI_PAGE, "0.10", "0.40", "0.025"),
    "openai_gpt5": Published(OPENAI_PAGE, "1.25", "10", "0.125"),
    "openai_gpt5_mini": Published(OPENAI_PAGE, "0.25", "2", "0.025"),
    "openai_gpt5_nano": Published(OPENAI_PAGE, "0.05", "0.40", "0.005"),
    "openai_o3": Published(OPENAI_PAGE, "2", "8", "0.50"),
    "openai_o4_mini": Published(OPENAI_PAGE, "1.10", "4.40", "0.275"),
    # Bedrock's per-1K figures x 1000: input, output, cache read, cache write
    "bedrock_claude_3_5_haiku": Published(BEDROCK_PAGE, "0.80", "4", "0.08", "1"),
    "bedrock_claude_3_7_sonnet": Published(BEDROCK_PAGE, "3", "15", "0.30", "3.75"),
    "bedrock_nova_micro": Published(BEDROCK_PAGE, "0.035", "0.14", "0.00875"),
    "bedrock_nova_lite": Published(BEDROCK_PAGE, "0.06", "0.24", "0.015"),
    "bedrock_nova_pro": Published(BEDROCK_PAGE, "0.80", "3.20", "0.20"),
}


def usd_per_m(rate: str, tokens: int) -> Fraction:
    """``tokens`` at ``rate`` USD per 1M tokens, exactly."""
    return Fraction(Decimal(rate)) * tokens / 1_000_000


def nano(usd: Fraction) -> int:
    """USD to integer nano-dollars, half to even (the rounding the price book documents)."""
    return round(usd * 1_000_000_000)


def test_the_written_anthropic_rates_keep_the_pages_multipliers() -> None:
    """A typo in the table above (a digit or a decimal point off) shows as a broken 0.1x / 1.25x / 2x input ratio.

    The page rounds Claude Haiku 3's figures (0.025 shows as $0.03, 0.3125 as $0.30), hence the slack.
    """
    for key, p in PUBLISHED.items():
        if p.page != ANTHROPIC_PAGE:
            continue
        base = Decimal(p.input)
        for shown, multiple in ((p.cache_read, "0.1"), (p.cache_write_5m, "1.25"), (p.cache_write_1h, "2")):
            exact = base * Decimal(multiple)
            assert shown is not None and abs(Decimal(shown) - exact) <= exact / 4, (key, shown, multiple)


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_each_token_kind_costs_the_published_rate(key: str) -> None:
    """A million tokens of each kind cost exactly the published rate; kinds the page does not price stay unpriced."""
    book = PriceBook.default()
    p = PUBLISHED[key]
    kinds: dict[str, str | None] = {
        "input_tokens": p.input,
        "output_tokens": p.output,
        "cache_read_tokens": p.cache_read,
        "cache_write_tokens": p.cache_write_5m,
    }
    if p.page == ANTHROPIC_PAGE:  # only Anthropic's page lists a 1-hour write price
        kinds["cache_write_1h_tokens"] = p.cache_write_1h
    for field, rate in kinds.items():
        cost, version = book.price(UsageItem(key, **{field: 1_000_000}), AT)  # type: ignore[arg-type]
        if rate is None:
            assert cost is None, f"{key}.{field}: the page has no such price, so it must be unpriced, not {cost}"
        else:
            assert cost == nano(usd_per_m(rate, 1_000_000)), f"{key}.{field}: {cost} nano-USD, page says ${rate}/1M"
            assert version.startswith(f"{key}@")


def test_a_mixed_item_is_the_sum_of_its_published_parts() -> None:
    """Odd token counts of every kind together: the exact sum of the published rates, rounded once."""
    book = PriceBook.default()
    # 1234 input, 567 output, 8901 cache reads, 2345 5m writes, 678 1h writes on Claude Sonnet 4.5
    p = PUBLISHED["anthropic_claude_sonnet_4_5"]
    item = UsageItem(
        "anthropic_claude_sonnet_4_5",
        input_tokens=1234,
        output_tokens=567,
        cache_read_tokens=8901,
        cache_write_tokens=2345,
        cache_write_1h_tokens=678,
    )
    expected = (
        usd_per_m(p.input, 1234)
        + usd_per_m(p.output, 567)
        + usd_per_m(p.cache_read, 8901)
        + usd_per_m(p.cache_write_5m or "0", 2345)
        + usd_per_m(p.cache_write_1h or "0", 678)
    )
    assert expected == Fraction("0.02773905")  # by hand: 3702 + 8505 + 2670.3 + 8793.75 + 4068 micro-USD
    assert book.price(item, AT)[0] == nano(expected) == 27_739_050


# --------------------------------------------------------------------------- through the real SDK clients

_BOTO = {"region_name": "us-east-1", "aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret"}


def _openai_client(doc: dict[str, Any]) -> openai.OpenAI:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=doc))
    return openai.OpenAI(api_key="test", http_client=httpx2.Client(transport=transport))


def _anthropic_client(doc: dict[str, Any]) -> anthropic.Anthropic:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=doc))
    return anthropic.Anthropic(api_key="test", http_client=httpx2.Client(transport=transport))


def _chat(model: str, prompt: int, cached: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_760_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }  # fmt: skip


def openai_gpt4o_chat() -> Fraction:
    """Chat completion on gpt-4o: 1200 prompt tokens of which 1024 cached, 50 completion tokens."""
    client = _openai_client(_chat("gpt-4o-2024-08-06", 1200, 1024, 50))
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    p = PUBLISHED["openai_gpt4o"]  # cached tokens are part of the prompt: 176 at the input rate, 1024 at the cached
    return usd_per_m(p.input, 176) + usd_per_m(p.cache_read, 1024) + usd_per_m(p.output, 50)


def openai_gpt5_chat() -> Fraction:
    """Chat completion on gpt-5: 5000 prompt tokens of which 4096 cached, 300 completion tokens."""
    client = _openai_client(_chat("gpt-5-2025-08-07", 5000, 4096, 300))
    client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    p = PUBLISHED["openai_gpt5"]
    return usd_per_m(p.input, 904) + usd_per_m(p.cache_read, 4096) + usd_per_m(p.output, 300)


def openai_gpt41_mini_responses() -> Fraction:
    """Responses API on gpt-4.1-mini: 300 input tokens of which 200 cached, 40 output tokens."""
    doc = {
        "id": "resp_1", "object": "response", "created_at": 1_760_000_000, "status": "completed",
        "model": "gpt-4.1-mini-2025-04-14",
        "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "hi", "annotations": []}]}],
        "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 200}, "output_tokens": 40,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 340},
    }  # fmt: skip
    _openai_client(doc).responses.create(model="gpt-4.1-mini", input="hi")
    p = PUBLISHED["openai_gpt4_1_mini"]
    return usd_per_m(p.input, 100) + usd_per_m(p.cache_read, 200) + usd_per_m(p.output, 40)


def _message(model: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": usage}  # fmt: skip


def anthropic_sonnet_45_messages() -> Fraction:
    """Claude Sonnet 4.5: 20 input, 10 output, 5000 cache reads, 1000 5-minute and 2000 1-hour cache writes."""
    usage = {"input_tokens": 20, "output_tokens": 10, "cache_read_input_tokens": 5000,
             "cache_creation_input_tokens": 3000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}}  # fmt: skip
    client = _anthropic_client(_message("claude-sonnet-4-5-20250929", usage))
    client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    p = PUBLISHED["anthropic_claude_sonnet_4_5"]  # cache reads and writes come on top of input_tokens
    return (
        usd_per_m(p.input, 20)
        + usd_per_m(p.output, 10)
        + usd_per_m(p.cache_read, 5000)
        + usd_per_m(p.cache_write_5m or "0", 1000)
        + usd_per_m(p.cache_write_1h or "0", 2000)
    )


def anthropic_haiku_45_messages() -> Fraction:
    """Claude Haiku 4.5: 300 input, 120 output, 40000 cache reads, nothing written."""
    usage = {"input_tokens": 300, "output_tokens": 120, "cache_read_input_tokens": 40_000,
             "cache_creation_input_tokens": 0}  # fmt: skip
    client = _anthropic_client(_message("claude-haiku-4-5-20251001", usage))
    client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    p = PUBLISHED["anthropic_claude_haiku_4_5"]
    return usd_per_m(p.input, 300) + usd_per_m(p.output, 120) + usd_per_m(p.cache_read, 40_000)


def bedrock_claude_35_haiku_invoke_model() -> Fraction:
    """InvokeModel on Claude 3.5 Haiku (cross-region profile): 12 in, 30 out, 1000 cache reads, 500 cache writes."""
    body = {"type": "message", "content": [{"type": "text", "text": "hi"}],
            "usage": {"input_tokens": 12, "output_tokens": 30, "cache_read_input_tokens": 1000,
                      "cache_creation_input_tokens": 500}}  # fmt: skip
    data = json.dumps(body).encode()
    brt = boto3.client("bedrock-runtime", **_BOTO)  # type: ignore[call-overload]
    with Stubber(brt) as stub:
        stub.add_response(
            "invoke_model",
            {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"},
        )
        brt.invoke_model(modelId="us.anthropic.claude-3-5-haiku-20241022-v1:0", body=b"{}")
    p = PUBLISHED["bedrock_claude_3_5_haiku"]
    return (
        usd_per_m(p.input, 12)
        + usd_per_m(p.output, 30)
        + usd_per_m(p.cache_read, 1000)
        + usd_per_m(p.cache_write_5m or "0", 500)
    )


def bedrock_nova_pro_converse() -> Fraction:
    """Converse on Amazon Nova Pro: 2000 in, 400 out, 6000 cache reads."""
    brt = boto3.client("bedrock-runtime", **_BOTO)  # type: ignore[call-overload]
    with Stubber(brt) as stub:
        stub.add_response(
            "converse",
            {
                "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 2000, "outputTokens": 400, "totalTokens": 8400, "cacheReadInputTokens": 6000},
                "metrics": {"latencyMs": 10},
            },
        )
        brt.converse(modelId="amazon.nova-pro-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    p = PUBLISHED["bedrock_nova_pro"]
    return usd_per_m(p.input, 2000) + usd_per_m(p.output, 400) + usd_per_m(p.cache_read, 6000)


CALLS: list[Callable[[], Fraction]] = [
    openai_gpt4o_chat,
    openai_gpt5_chat,
    openai_gpt41_mini_responses,
    anthropic_sonnet_45_messages,
    anthropic_haiku_45_messages,
    bedrock_claude_35_haiku_invoke_model,
    bedrock_nova_pro_converse,
]


@pytest.fixture
def instrumented() -> Iterator[None]:
    """openai, anthropic and boto3 instrumented for the test, removed afterwards."""
    assert set(auto_instrument(only=["openai", "anthropic", "boto3"])) >= {"openai", "anthropic", "boto3"}
    try:
        yield
    finally:
        uninstrument()


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c.__name__)
def test_a_real_client_call_is_stored_at_the_published_price(
    call: Callable[[], Fraction], instrumented: None, export_reset: None, tmp_path: Path
) -> None:
    """The call's own usage numbers at the page's rates are what the local store records, to the nano-dollar."""
    db = tmp_path / "cost_data.db"
    spendtrace.configure(db=db)
    with spendtrace.track(feature="llm"):
        expected = call()
    assert spendtrace.flush().pending == 0
    with SQLiteStorage(db) as storage:
        total = storage.total()
    assert total["unpriced_count"] == 0
    assert total["cost_nano"] == nano(expected), (
        f"stored {total['cost_nano']} nano-USD, published rates give {expected}"
    )
