"""Pricing: the versioned price book that turns recorded usage into integer nano-dollars.

``PriceBook.default()`` is the static table shipped with spendtrace plus LLM rates from genai-prices
(``_genai``: dated entries per provider, raw model id, service tier and long-context band);
``PriceBook.load(prices_file=..., aws_pricing=True)`` adds AWS Pricing API rates and a file's overrides;
``AWSCostModel`` / ``get_tracker().cost_model`` are the original README's in-process overrides, applied
by ``current_book()``.
"""

from __future__ import annotations

from spendtrace.server.pricing._book import (
    LAMBDA_COMPUTE_KEY,
    PriceBook,
    femto_to_nano,
    item_cost_femto,
    lambda_compute_cost,
    unpriced_key,
    weighted_cost,
)
from spendtrace.server.pricing._entry import EPOCH, RATE_FIELDS, FemtoRates, PriceEntry
from spendtrace.server.pricing._model import AWSCostModel, Tracker, current_book, get_tracker, set_base_book
from spendtrace.server.pricing._overrides import load_overrides

__all__ = [
    "EPOCH",
    "LAMBDA_COMPUTE_KEY",
    "RATE_FIELDS",
    "AWSCostModel",
    "FemtoRates",
    "PriceBook",
    "PriceEntry",
    "Tracker",
    "current_book",
    "femto_to_nano",
    "get_tracker",
    "item_cost_femto",
    "lambda_compute_cost",
    "load_overrides",
    "set_base_book",
    "unpriced_key",
    "weighted_cost",
]
