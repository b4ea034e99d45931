"""The original README's override API: ``AWSCostModel().api_costs[key] = rate`` and ``get_tracker().cost_model``.

``api_costs`` maps each key to its current default rate in USD per *unit*, where the unit is:
- request-priced keys (``dynamodb_read``, ``s3_get``, ``sqs_send``, ``aws_lambda_request`` ...): one unit of
  the usage item's ``count`` (a request, a DynamoDB read/write request unit, an SQS 64 KB chunk);
- token-priced keys (``bedrock_*``, ``openai_*``, ``anthropic_*``): one *input* token; setting it scales the
  key's output and cache rates by the same factor (a negotiated discount keeps the provider's ratios).
  Assign a dict ``{"input": .., "output": .., "cache_read": .., "cache_write": .., "cache_write_1h": ..}``
  (USD per token) to set each rate yourself;
- ``lambda_gb_second``: one GB-second; per-GB keys: one GiB.
Only values that differ from the defaults become overrides; they apply to all time (source ``user``).
``current_book()`` is the default book with the tracker's overrides applied, cached until they change.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from spendtrace.errors import PricingError
from spendtrace.server.pricing._book import PriceBook
from spendtrace.server.pricing._entry import EPOCH, PriceEntry, guess_service, to_decimal

__all__ = ["AWSCostModel", "Tracker", "current_book", "get_tracker", "set_base_book"]

_M = Decimal(1_000_000)
_TOKEN_FIELDS = {
    "input": "per_1m_input_tokens",
    "output": "per_1m_output_tokens",
    "cache_read": "per_1m_cache_read_tokens",
    "cache_write": "per_1m_cache_write_tokens",
    "cache_write_1h": "per_1m_cache_write_1h_tokens",
}


def _primary_rate(entry: PriceEntry) -> float:
    """The entry's rate in USD per unit as ``api_costs`` shows it."""
    if entry.per_1m_input_tokens is not None:
        return float(entry.per_1m_input_tokens / _M)
    for name in ("per_request", "per_gb_second", "per_gb"):
        value = getattr(entry, name)
        if value is not None:
            return float(value)
    return float((entry.per_1m_output_tokens or Decimal(0)) / _M)


def _override_entry(base: PriceEntry | None, key: str, value: object) -> PriceEntry:
    """The ``user`` entry for ``api_costs[key] = value``."""
    service = base.service if base is not None else guess_service(key)
    if isinstance(value, dict):
        kwargs: dict[str, Any] = {}
        for name, rate in value.items():
            field = _TOKEN_FIELDS.get(name) or (name if name.startswith("per_") else None)
            if field is None:
                raise PricingError(f"api_costs[{key!r}]: unknown rate {name!r}; use {', '.join(_TOKEN_FIELDS)}")
            dec = to_decimal(rate, f"api_costs[{key!r}][{name!r}]")
            kwargs[field] = dec * _M if field in _TOKEN_FIELDS.values() else dec
        return PriceEntry(key=key, service=service, effective_from=EPOCH, source="user", **kwargs)
    dec = to_decimal(value, f"api_costs[{key!r}]")
    if base is None or base.per_request is not None:
        unit = base.unit if base is not None else "request"
        return PriceEntry(key=key, service=service, effective_from=EPOCH, source="user", per_request=dec, unit=unit)
    if base.per_1m_input_tokens is not None:
        old = base.per_1m_input_tokens / _M
        kwargs = {}
        for field in _TOKEN_FIELDS.values():
            rate = getattr(base, field)
            if rate is not None:
                # scale every token rate by new/old (or set the input rate alone if the old one was 0)
                kwargs[field] = rate * dec / old if old else (dec * _M if field == "per_1m_input_tokens" else rate)
        return PriceEntry(key=key, service=service, effective_from=EPOCH, source="user", unit=base.unit, **kwargs)
    if base.per_gb_second is not None:
        return PriceEntry(key=key, service=service, source="user", unit=base.unit, per_gb_second=dec)
    return PriceEntry(key=key, service=service, source="user", unit=base.unit, per_gb=dec)


class AWSCostModel:
    """Per-key rates in USD per unit (see the module docstring), starting from the default price book."""

    def __init__(self, book: PriceBook | None = None) -> None:
        self._base = book if book is not None else _base_book()
        self._defaults: dict[str, float] = {k: _primary_rate(e) for k, e in self._base.current_rates().items()}
        #: key -> USD per unit; edit freely.
        self.api_costs: dict[str, Any] = dict(self._defaults)

    def overrides(self) -> list[PriceEntry]:
        """The ``user`` entries for every value changed from (or added to) the defaults."""
        out = []
        for key, value in sorted(self.api_costs.items()):
            if key in self._defaults and not isinstance(value, dict) and value == self._defaults[key]:
                continue
            base = self._base.current_rates().get(key)
            out.append(_override_entry(base, key, value))
        return out

    def fingerprint(self) -> tuple[tuple[str, str], ...]:
        """A hashable summary of the current values (changes when any rate changes)."""
        return tuple(sorted((k, repr(v)) for k, v in self.api_costs.items()))

    def book(self) -> PriceBook:
        """The default book with this model's overrides applied."""
        over = self.overrides()
        return self._base.with_overrides(over, name=f"{self._base.name}+user") if over else self._base


class Tracker:
    """Process-wide pricing state: ``cost_model`` (None: the defaults) feeds ``current_book()``."""

    def __init__(self) -> None:
        self.cost_model: AWSCostModel | None = None


_tracker = Tracker()
_lock = threading.Lock()
_base: PriceBook | None = None
_cached: tuple[Any, PriceBook] | None = None


def _base_book() -> PriceBook:
    return _base if _base is not None else PriceBook.default()


def get_tracker() -> Tracker:
    """The process-wide tracker; set ``get_tracker().cost_model = model`` to apply your rates."""
    return _tracker


def set_base_book(book: PriceBook | None) -> None:
    """Replace the book overrides apply on (e.g. one loaded with a prices file); None restores the static one."""
    global _base, _cached
    with _lock:
        _base = book
        _cached = None


def current_book() -> PriceBook:
    """The book in-process pricing uses: the base book plus ``get_tracker().cost_model``'s overrides.

    Cached; recomputed when the model object, any of its rates or the base book changes.
    """
    global _cached
    model = _tracker.cost_model
    base = _base_book()
    stamp = (id(base), id(model), model.fingerprint() if model is not None else None)
    cached = _cached
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _lock:
        if model is None:
            book = base
        else:
            over = model.overrides()
            book = base.with_overrides(over, name=f"{base.name}+user") if over else base
        _cached = (stamp, book)
        return book
