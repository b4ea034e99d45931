"""LLM calls are keyed by their raw model id; spans keyed the old way (model-family keys) price as before.

The SDK keys an LLM usage item ``<provider>:<model id>`` and the price book finds its price from the
provider, the model id and the tier. Spans recorded before that carry a family key
(``bedrock_claude_3_haiku``) with or without the model id: they must decode and price exactly as
they did. Expected costs come from the providers' list prices (pages cited beside the rates).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import boto3
import msgspec
import pytest
from _old_wire import OldSpanOfOldItems, OldUsageItem
from botocore.stub import Stubber
from genai_prices import data_snapshot

import spendtrace
from spendtrace.schema import Span, UsageItem, decode_span, encode_span
from spendtrace.sdk.instrument import auto_instrument, uninstrument
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook, PriceEntry, _book
from spendtrace.server.pricing._book import LOCAL_LLM_KEYS
from spendtrace.server.pricing._static import static_entries

AT = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
OPENAI_PRICING = "https://platform.openai.com/docs/pricing"
BEDROCK_PRICING = "https://aws.amazon.com/bedrock/pricing/"


def nano(*pairs: tuple[int, str]) -> int:
    """Cost in nano-dollars of (tokens, USD per 1M tokens) pairs, rounded once, half to even."""
    usd_e9 = sum((Decimal(n) * Decimal(rate) * 1000 for n, rate in pairs), Decimal(0))
    return int(usd_e9.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def stored(span: Span, book: PriceBook | None = None) -> dict[str, Any]:
    """The ``spans.usage`` object the ingest stores for the span's one item."""
    batch = prepare_batch([span], book or PriceBook.default())
    (item,) = json.loads(batch.span_rows[0][14])
    return dict(item)


# ----------------------------------------------------------------------------- spans from older SDKs


def test_a_span_from_before_model_ids_prices_by_its_family_row() -> None:
    """bedrock_claude_3_haiku with no model: $0.25 / $1.25 per 1M tokens (BEDROCK_PRICING), the static row."""
    old = OldUsageItem("bedrock_claude_3_haiku", "bedrock", 1.0, 512, 128)
    wire = msgspec.msgpack.encode(OldSpanOfOldItems("s", None, "s", "chat", start_ns=AT, usage=(old,)))
    item = stored(decode_span(wire))
    assert item["cost_nano"] == nano((512, "0.25"), (128, "1.25"))
    assert item["price_version"] == "bedrock_claude_3_haiku@1970-01-01:static"


@pytest.mark.parametrize(
    ("key", "provider", "model", "rates", "version"),
    [
        # a dated snapshot with its own price: gpt-4o-2024-05-13 $5 / $15 per 1M (OPENAI_PRICING)
        ("openai_gpt4o", "openai", "gpt-4o-2024-05-13", ("5", "15"), None),
        # a model genai-prices lacks: Llama 3.1 405B $2.40 / $2.40 (BEDROCK_PRICING), the row of its family key
        ("bedrock_llama3_1_405b", "bedrock", "us.meta.llama3-1-405b-instruct-v1:0", ("2.40", "2.40"),
         "bedrock_llama3_1_405b@1970-01-01:static"),
    ],
)  # fmt: skip
def test_a_span_with_a_family_key_and_a_model_id_prices_as_before(
    key: str, provider: str, model: str, rates: tuple[str, str], version: str | None
) -> None:
    """Items the SDK keyed by family while already recording the model id decode and price by the model."""
    old = Span("s", None, "s", "chat", start_ns=AT, usage=(
        UsageItem(key, provider, 1.0, 1000, 200, provider=provider, model=model),))  # fmt: skip
    item = stored(decode_span(encode_span(old)))
    assert (item["key"], item["model"]) == (key, model)
    assert item["cost_nano"] == nano((1000, rates[0]), (200, rates[1]))
    if version is not None:
        assert item["price_version"] == version


# ----------------------------------------------------------------------------- models genai-prices lacks


@pytest.fixture
def instrumented() -> Iterator[None]:
    """boto3 instrumented for the test, removed afterwards."""
    auto_instrument(only=["boto3"])
    try:
        yield
    finally:
        uninstrument()


@pytest.mark.parametrize(
    ("model_id", "rates"),
    [
        # Llama 3.1 405B Instruct: $2.40 / $2.40 per 1M (BEDROCK_PRICING), also through a cross-region profile
        ("meta.llama3-1-405b-instruct-v1:0", ("2.40", "2.40")),
        ("us.meta.llama3-1-405b-instruct-v1:0", ("2.40", "2.40")),
        ("arn:aws:bedrock:us-west-2::foundation-model/meta.llama3-1-405b-instruct-v1:0", ("2.40", "2.40")),
        # Titan Text Premier: $0.50 / $1.50 per 1M (BEDROCK_PRICING)
        ("amazon.titan-text-premier-v1:0", ("0.50", "1.50")),
    ],
)
def test_a_call_to_a_model_genai_prices_lacks_is_keyed_by_its_id_and_priced_by_the_local_row(
    instrumented: None, spans: list[Span], model_id: str, rates: tuple[str, str]
) -> None:
    """Through a real boto3 client: the key is the id as called, the local row prices it."""
    brt = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDTEST",
                       aws_secret_access_key="secret")  # fmt: skip
    with Stubber(brt) as stub:
        stub.add_response("converse", {
            "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 3000, "outputTokens": 700, "totalTokens": 3700},
            "metrics": {"latencyMs": 10}})  # fmt: skip
        with spendtrace.track(feature="chat"):
            brt.converse(modelId=model_id, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    (span,) = spans
    (item,) = span.usage
    assert item.key == f"bedrock:{model_id.lower()}"
    assert stored(span)["cost_nano"] == nano((3000, rates[0]), (700, rates[1]))


def test_local_rows_are_only_for_models_genai_prices_lacks() -> None:
    """Each local row names a Bedrock model id genai-prices cannot price, with its source page and date."""
    snapshot = data_snapshot.get_snapshot()
    rows = {e.key: e for e in static_entries()}
    for key in sorted(LOCAL_LLM_KEYS):
        provider, _, model = key.partition(":")
        assert provider == "bedrock" and model
        try:
            _, found = snapshot.find_provider_model(model, None, "aws", None)
        except LookupError:
            found = None
        assert found is None, f"genai-prices prices {model} now: drop its local row"
        assert rows[key].source_url == BEDROCK_PRICING and rows[key].as_of is not None


# ----------------------------------------------------------------------------- overrides


def test_a_family_key_override_prices_its_key_and_says_what_to_write_for_model_ids(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An override of openai_gpt4o still prices items keyed so (add_api_call, older spans); model-id keys keep
    genai-prices' rate; a warning names the key form to override instead, once per key."""
    monkeypatch.setattr(_book, "_warned_legacy", set())  # other tests of this process may have warned already
    caplog.set_level(logging.WARNING, logger="spendtrace.pricing")
    negotiated = PriceEntry("openai_gpt4o", "openai", per_1m_input_tokens=2, per_1m_output_tokens=8,
                            source="override:prices.toml")  # fmt: skip
    book = PriceBook.default().with_overrides([negotiated])
    warned = [r.getMessage() for r in caplog.records if "openai_gpt4o" in r.getMessage()]
    assert len(warned) == 1 and "'openai:<model id>'" in warned[0] and "openai:gpt-4o-2024-08-06" in warned[0]
    PriceBook.default().with_overrides([negotiated])
    assert len([r for r in caplog.records if "openai_gpt4o" in r.getMessage()]) == 1

    manual = UsageItem("openai_gpt4o", "openai", 1.0, 1000, 100)
    older = UsageItem("openai_gpt4o", "openai", 1.0, 1000, 100, provider="openai", model="gpt-4o-2024-08-06")
    current = UsageItem("openai:gpt-4o-2024-08-06", "openai", 1.0, 1000, 100, provider="openai",
                        model="gpt-4o-2024-08-06")  # fmt: skip
    assert book.price(manual, AT)[0] == book.price(older, AT)[0] == nano((1000, "2"), (100, "8"))
    # gpt-4o-2024-08-06: $2.50 / $10 per 1M (OPENAI_PRICING)
    assert book.price(current, AT)[0] == nano((1000, "2.50"), (100, "10"))
    by_id = PriceBook.default().with_overrides([PriceEntry("openai:gpt-4o-2024-08-06", "openai",
                                                           per_1m_input_tokens=2, per_1m_output_tokens=8,
                                                           source="user")])  # fmt: skip
    assert by_id.price(current, AT)[0] == by_id.price(older, AT)[0] == nano((1000, "2"), (100, "8"))
