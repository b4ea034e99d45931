"""The static default rates shipped in ``static_prices.json``, each with its source page and as-of date."""

from __future__ import annotations

import functools
import json
from importlib import resources

from spendtrace.errors import PricingError
from spendtrace.server.pricing._entry import PriceEntry

__all__ = ["static_entries"]


@functools.cache
def static_entries() -> tuple[PriceEntry, ...]:
    """Every entry of the shipped table (parsed once per process)."""
    try:
        text = resources.files("spendtrace.server.pricing").joinpath("static_prices.json").read_text(encoding="utf-8")
        raw = json.loads(text)["entries"]
    except (OSError, ValueError, KeyError) as exc:  # a broken install, not a user error
        raise PricingError(f"the shipped static price table is unreadable: {exc}") from exc
    return tuple(PriceEntry.from_dict(e, source="static") for e in raw)
