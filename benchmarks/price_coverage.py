"""What share of current OpenAI, Anthropic and Bedrock model ids gets a price? (issue #14's measure)

    python benchmarks/price_coverage.py [--list-unpriced]

The ids: every model of genai-prices' bundled data for the providers ``openai``, ``anthropic`` and
``aws`` (Bedrock) that has a text-token input price (chat and embedding models; image-, audio- and
video-only models are left out) and is not marked deprecated, plus the models of the local rows
(``LOCAL_LLM_KEYS``). Bedrock ids genai-prices names ``regional.<id>`` are called as ``<id>`` (the
in-region endpoint). Each id becomes one call's usage item built by the SDK's own instrumentation
code (1,000 input and 100 output tokens), and the items are priced by ``prepare_batch`` with the
default book, the path a worker takes. Prints, per provider and in all, how many ids were priced.
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime

from genai_prices import data_snapshot

from spendtrace.schema import Span, UsageItem
from spendtrace.sdk.instrument import _anthropic, _bedrock, _openai
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook, _book

PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "aws": "bedrock"}
NOW = datetime.now(UTC)


def _text_priced(model: object) -> bool:
    """True when the model's price at ``NOW`` has a text input rate per token."""
    try:
        price = model.get_prices(NOW)  # type: ignore[attr-defined]
    except Exception:  # time-of-day prices and the like: counted, and left to the pricing path to judge
        return True
    return getattr(price, "input_mtok", None) is not None


def model_ids() -> list[tuple[str, str]]:
    """(our provider, model id as an app would call it) for every current chat / embedding model."""
    out: set[tuple[str, str]] = set()
    for provider in data_snapshot.get_snapshot().providers:
        ours = PROVIDERS.get(provider.id)
        if ours is None:
            continue
        for model in provider.models:
            if model.deprecated or not _text_priced(model):
                continue
            out.add((ours, model.id.removeprefix("regional.") if ours == "bedrock" else model.id))
    for key in getattr(_book, "LOCAL_LLM_KEYS", ()):
        provider, sep, model_id = key.partition(":")
        if sep:
            out.add((provider, model_id))
    return sorted(out)


def usage_item(provider: str, model_id: str) -> UsageItem:
    """The item the SDK records for one call of ``model_id`` with 1,000 input and 100 output tokens."""
    if provider == "openai":
        return _openai.usage_item(model_id, {"prompt_tokens": 1000, "completion_tokens": 100})
    if provider == "anthropic":
        return _anthropic.usage_item(model_id, {"input_tokens": 1000, "output_tokens": 100})
    tokens = _bedrock._Tokens()
    tokens.converse({"inputTokens": 1000, "outputTokens": 100})
    item = tokens.item(model_id)
    assert item is not None
    return item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list-unpriced", action="store_true", help="print every id left unpriced")
    args = parser.parse_args()
    ids = model_ids()
    at = int(NOW.timestamp()) * 1_000_000_000
    spans = [Span(f"s{i}", None, f"s{i}", "coverage", start_ns=at, usage=(usage_item(p, m),))
             for i, (p, m) in enumerate(ids)]  # fmt: skip
    batch = prepare_batch(spans, PriceBook.default())
    unpriced = {ids[i] for i, row in enumerate(batch.span_rows) if row[16]}
    total, priced = Counter(p for p, _ in ids), Counter(p for p, m in ids if (p, m) not in unpriced)
    for provider in sorted(total):
        print(f"{provider:10} {priced[provider]:4} of {total[provider]:4} ids priced")
    n = len(ids)
    k = n - len(unpriced)
    print(f"{'all':10} {k:4} of {n:4} ids priced ({k / n:.1%})")
    if args.list_unpriced:
        for provider, model_id in sorted(unpriced):
            print(f"  unpriced: {provider}:{model_id}")


if __name__ == "__main__":
    main()
