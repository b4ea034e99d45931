"""One rate card line: what a usage key costs per unit, from when, and where the number came from.

Rates are kept as exact ``Decimal`` USD amounts in the units providers publish them in (per
request, per 1M tokens, per GB, per GB-second) and compiled to integer *femto-dollars*
(1e-15 USD) per single unit for pricing, so costs are computed with integers and rounded once.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field, fields
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, NamedTuple

from spendtrace.errors import PricingError

__all__ = ["EPOCH", "RATE_FIELDS", "FemtoRates", "PriceEntry", "date_to_ns", "to_decimal"]

#: ``effective_from`` of rates that apply since as far back as we know.
EPOCH = date(1970, 1, 1)

#: Rate fields of ``PriceEntry``, in the order of ``FemtoRates``.
RATE_FIELDS: tuple[str, ...] = (
    "per_request",
    "per_1m_input_tokens",
    "per_1m_output_tokens",
    "per_1m_cache_read_tokens",
    "per_1m_cache_write_tokens",
    "per_1m_cache_write_1h_tokens",
    "per_gb",
    "per_gb_second",
)

_FEMTO = Decimal(10**15)
# Multipliers from a published rate to femto-dollars per single unit of the matching UsageItem field.
_SCALE: dict[str, Decimal] = {
    "per_request": _FEMTO,  # USD per unit of `count`
    "per_1m_input_tokens": Decimal(10**9),  # USD per 1M tokens -> fUSD per token
    "per_1m_output_tokens": Decimal(10**9),
    "per_1m_cache_read_tokens": Decimal(10**9),
    "per_1m_cache_write_tokens": Decimal(10**9),
    "per_1m_cache_write_1h_tokens": Decimal(10**9),
    "per_gb": _FEMTO,  # USD per GiB -> fUSD per GiB (bytes are divided by 2**30 when pricing)
    "per_gb_second": _FEMTO,  # USD per GB-second -> fUSD per GB-second
}


class FemtoRates(NamedTuple):
    """Integer femto-dollars per unit (``per_gb`` per GiB); ``None`` where the entry has no rate."""

    request: int | None
    input_token: int | None
    output_token: int | None
    cache_read_token: int | None
    cache_write_token: int | None
    cache_write_1h_token: int | None
    gib: int | None
    gb_second: int | None


def to_decimal(value: object, what: str) -> Decimal:
    """Parse a rate (str, int, float or Decimal) as a non-negative finite Decimal, or raise PricingError."""
    if isinstance(value, bool):
        raise PricingError(f"{what}: a rate must be a number, got a boolean")
    try:
        # floats go through repr so 0.000000275 means exactly that, not its binary neighbour
        dec = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError):
        raise PricingError(f"{what}: {value!r} is not a number") from None
    if not dec.is_finite() or dec < 0:
        raise PricingError(f"{what}: {value!r} must be a finite number >= 0")
    return dec


def date_to_ns(d: date) -> int:
    """Midnight UTC at the start of ``d``, in ns since the epoch."""
    return calendar.timegm(d.timetuple()) * 1_000_000_000


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """The rates of one usage key from ``effective_from`` (00:00 UTC) until the key's next entry.

    Every rate is USD in the unit its name says; ``per_request`` is per unit of the usage item's
    ``count`` (a request, a DynamoDB read/write request unit, an SQS request), ``per_gb`` is per
    GiB (2**30 bytes) of the item's ``bytes``. A rate left ``None`` means "no price": tokens or
    GB-seconds of that kind make an item unpriced rather than free (a ``count`` or ``bytes``
    without a rate only describes the call; see ``spendtrace.server.pricing._book``). ``source`` is ``static``,
    ``aws-pricing-api``, ``override:<file>`` or ``user``.
    """

    key: str
    service: str
    effective_from: date = EPOCH
    per_request: Decimal | None = None
    per_1m_input_tokens: Decimal | None = None
    per_1m_output_tokens: Decimal | None = None
    per_1m_cache_read_tokens: Decimal | None = None
    per_1m_cache_write_tokens: Decimal | None = None
    per_1m_cache_write_1h_tokens: Decimal | None = None
    per_gb: Decimal | None = None
    per_gb_second: Decimal | None = None
    source: str = "static"
    source_url: str = ""
    as_of: date | None = None
    #: What one unit of ``count`` is for this key (for people reading the book).
    unit: str = "request"
    _femto: FemtoRates = field(init=False, repr=False, compare=False, hash=False)
    _version: str = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.key:
            raise PricingError("a price entry needs a key")
        if not self.service:  # '' is reserved for the span-level rollup rows
            object.__setattr__(self, "service", guess_service(self.key))
        compiled: list[int | None] = []
        for name in RATE_FIELDS:
            raw = getattr(self, name)
            if raw is None:
                compiled.append(None)
                continue
            dec = raw if isinstance(raw, Decimal) else to_decimal(raw, f"{self.key}.{name}")
            if not dec.is_finite() or dec < 0:
                raise PricingError(f"{self.key}.{name}: {raw!r} must be a finite number >= 0")
            object.__setattr__(self, name, dec)
            # Rates finer than 1 femto-dollar per unit are rounded half-even to the nearest femto-dollar.
            compiled.append(int((dec * _SCALE[name]).to_integral_value(ROUND_HALF_EVEN)))
        if all(c is None for c in compiled):
            raise PricingError(f"{self.key}: a price entry needs at least one rate")
        object.__setattr__(self, "_femto", FemtoRates(*compiled))
        object.__setattr__(self, "_version", f"{self.key}@{self.effective_from.isoformat()}:{self.source}")

    @property
    def version(self) -> str:
        """Stable id of this entry, recorded on every usage item it priced: ``key@YYYY-MM-DD:source``."""
        return self._version

    @property
    def femto(self) -> FemtoRates:
        """The compiled integer rates (femto-dollars per unit) this entry prices with."""
        return self._femto

    @property
    def effective_from_ns(self) -> int:
        """``effective_from`` as ns since the epoch (00:00 UTC)."""
        return date_to_ns(self.effective_from)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (rates as decimal strings); the inverse of ``from_dict``."""
        out: dict[str, Any] = {
            "key": self.key,
            "service": self.service,
            "effective_from": self.effective_from.isoformat(),
        }
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value)
        out["unit"] = self.unit
        out["source"] = self.source
        if self.source_url:
            out["source_url"] = self.source_url
        if self.as_of is not None:
            out["as_of"] = self.as_of.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | None = None, key: str | None = None) -> PriceEntry:
        """Build an entry from a mapping like ``to_dict``'s; unknown fields raise PricingError."""
        data = dict(data)
        k = key if key is not None else data.pop("key", None)
        data.pop("key", None)
        if not isinstance(k, str) or not k:
            raise PricingError(f"price entry {data!r} has no key")
        allowed = {f.name for f in fields(cls) if f.init} - {"key"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise PricingError(
                f"{k}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(allowed))}"
            )
        kwargs: dict[str, Any] = {}
        for name in RATE_FIELDS:
            if data.get(name) is not None:
                kwargs[name] = to_decimal(data[name], f"{k}.{name}")
        for name in ("effective_from", "as_of"):
            if data.get(name) is not None:
                kwargs[name] = _parse_date(data[name], f"{k}.{name}")
        service = data.get("service")
        kwargs["service"] = str(service) if service else guess_service(k)
        for name in ("source_url", "unit"):
            if data.get(name) is not None:
                kwargs[name] = str(data[name])
        kwargs["source"] = source if source is not None else str(data.get("source", "static"))
        return cls(key=k, **kwargs)


def _parse_date(value: object, what: str) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise PricingError(f"{what}: {value!r} is not a date (YYYY-MM-DD)") from None


_SERVICE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("aws_lambda", "lambda"),
    ("lambda", "lambda"),
    ("dynamodb", "dynamodb"),
    ("s3", "s3"),
    ("sqs", "sqs"),
    ("sns", "sns"),
    ("bedrock", "bedrock"),
    ("openai", "openai"),
    ("anthropic", "anthropic"),
)


def guess_service(key: str) -> str:
    """The service a key belongs to when nobody said: its known prefix, else the part before ``_``."""
    for prefix, service in _SERVICE_PREFIXES:
        if key.startswith(prefix):
            return service
    return key.split("_", 1)[0] or key  # never '' (that is the span-level rollup row)
