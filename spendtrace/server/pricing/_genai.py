"""LLM rates from ``genai-prices`` (pydantic), turned into our own dated ``PriceEntry`` rows.

The SDK records the provider, the raw model id, the service tier and the Bedrock profile of each
LLM call (``UsageItem``); this module finds the model the way genai-prices does (its
provider-specific matching: ``gpt-4o-2024-05-13`` is not ``gpt-4o``, ``us.anthropic...`` is not
``global.anthropic...``) and compiles its prices into entries, one per date the price changes:

- key: ``<provider>:<raw model id, lower case>``, then ``|<context>=<value>`` for a service tier or
  processing mode that has prices of its own (``|service_tier=flex``, ``|processing=batch``), then
  ``|>200000`` when the call's input crossed a long-context threshold (genai-prices applies the
  tier's rate to *all* tokens of such a call, and so do we);
- rates: ``input_mtok`` etc. per 1M tokens. A cache rate genai-prices does not list falls back as
  genai-prices bills it (1-hour writes at the write rate, writes and reads at the input rate);
  ``output_mtok`` missing (embeddings) is 0, ``requests_kcount`` becomes ``per_request``;
- dates: every ``StartDateConstraint`` of the model's prices and of its matching variants starts an
  entry; the first entry starts at ``EPOCH`` (genai-prices uses its first price before any start).

genai-prices takes ~75 µs a call, so it is never called per item: ``GenaiPrices`` memoises the
model match per (provider, model) and the entries per (provider, model, context, band); a price
book asks it once per distinct key. Models it does not know give ``None`` (the caller leaves the
item unpriced under its raw id). Models priced by time of day (off-peak rates) are not supported
and are treated as unknown. Imported only by the pricing side, lazily: the SDK never loads it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from spendtrace.server.pricing._entry import EPOCH, PriceEntry

__all__ = ["PROVIDER_IDS", "GenaiPrices", "context_for", "load"]

#: Our provider names -> genai-prices provider ids.
PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic", "bedrock": "aws"}
_SERVICES = {"openai": "openai", "anthropic": "anthropic", "bedrock": "bedrock"}
_M = Decimal(1000)


def context_for(provider: str, tier: str | None) -> tuple[str, str] | None:
    """The genai-prices price context for a reported service tier, or None for standard rates.

    OpenAI reports ``default`` / ``flex`` / ``priority`` (and ``auto`` when it chose ``default``);
    Anthropic ``standard`` / ``priority`` / ``batch``. ``batch`` is a processing mode.
    """
    if not tier:
        return None
    tier = tier.lower()
    if tier == "batch":
        return ("processing", "batch")
    if provider == "openai" and tier not in ("default", "auto"):
        return ("service_tier", tier)
    if provider == "anthropic" and tier == "fast":
        return ("speed", "fast")
    return None


class GenaiPrices:
    """Dated entries per model from one genai-prices data snapshot (thread-safe, memoised)."""

    def __init__(self, snapshot: Any = None) -> None:
        import genai_prices
        from genai_prices import data_snapshot

        self._snapshot = snapshot if snapshot is not None else data_snapshot.get_snapshot()
        #: names the data in price-entry versions and the book version
        self.source = f"genai-prices-{genai_prices.__version__}"
        self._lock = threading.Lock()
        # (provider, model) -> (model info, genai provider, context keys the model prices, long-context thresholds)
        self._models: dict[tuple[str, str], tuple[Any, Any, frozenset[tuple[str, str]], tuple[int, ...]] | None] = {}
        self._entries: dict[str, tuple[PriceEntry, ...] | None] = {}

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickled as "the installed data" (a book travels to the writer process): rebuilt there by ``load``."""
        return (_load_required, ())

    # ------------------------------------------------------------------ matching
    def _model(self, provider: str, model: str) -> tuple[Any, Any, frozenset[tuple[str, str]], tuple[int, ...]] | None:
        ck = (provider, model)
        if ck in self._models:
            return self._models[ck]
        found = None
        pid = PROVIDER_IDS.get(provider)
        if pid is not None:
            try:
                gp, info = self._snapshot.find_provider_model(model, None, pid, None)
            except LookupError:
                info = None
            if info is not None and _dated_only(info):
                own = any(m is info for m in gp.models)  # fallback providers' variants do not apply
                contexts = frozenset(
                    (k, v) for var in (info.price_variants or ()) if own for k, v in var.when.items()
                )
                found = (info, gp, contexts, _thresholds(info))
        with self._lock:
            self._models[ck] = found
        return found

    def thresholds(self, provider: str, model: str) -> tuple[int, ...]:
        """The model's long-context input thresholds, ascending (empty for most models and unknown ones)."""
        found = self._model(provider, model.strip().lower())
        return () if found is None else found[3]

    def key_for(self, provider: str, model: str, tier: str | None, total_input: int) -> str | None:
        """The derived price key of a call, or None if genai-prices does not know the model."""
        model = model.strip().lower()
        found = self._model(provider, model)
        if found is None:
            return None
        _, _, contexts, thresholds = found
        key = f"{provider}:{model}"
        ctx = context_for(provider, tier)
        if ctx is not None and ctx in contexts:
            key += f"|{ctx[0]}={ctx[1]}"
        band = sum(1 for t in thresholds if total_input > t)
        if band:
            key += f"|>{thresholds[band - 1]}"
        return key

    def entries(self, key: str) -> tuple[PriceEntry, ...] | None:
        """The dated entries of a key ``key_for`` returned (None if the model has no token prices)."""
        if key in self._entries:
            return self._entries[key]
        head, *parts = key.split("|")
        provider, _, model = head.partition(":")
        found = self._model(provider, model)
        out: tuple[PriceEntry, ...] | None = None
        if found is not None:
            info, _, _, _ = found
            ctx: dict[str, str] = {}
            over = 0
            for part in parts:
                if part.startswith(">"):
                    over = int(part[1:]) + 1
                else:
                    k, _, v = part.partition("=")
                    ctx[k] = v
            out = self._compile(key, provider, info, ctx, over)
        with self._lock:
            self._entries[key] = out
        return out

    # ------------------------------------------------------------------ compiling
    def _compile(
        self, key: str, provider: str, info: Any, ctx: dict[str, str], total_input: int
    ) -> tuple[PriceEntry, ...] | None:
        starts = {EPOCH}
        if not isinstance(info.prices, _model_price_type()):
            starts.update(c.constraint.start_date for c in info.prices if c.constraint is not None)
        for var in info.price_variants or ():
            if var.constraint is not None and all(ctx.get(k) == v for k, v in var.when.items()):
                starts.add(var.constraint.start_date)
        out: list[PriceEntry] = []
        last: tuple[Any, ...] | None = None
        for d in sorted(starts):
            at = datetime(d.year, d.month, d.day, tzinfo=UTC)
            rates = _rates(info.get_prices(at, ctx or None), total_input)
            if rates is None or rates == last:
                continue
            last = rates
            out.append(
                PriceEntry(
                    key=key,
                    service=_SERVICES.get(provider, provider),
                    effective_from=d,
                    per_1m_input_tokens=rates[0],
                    per_1m_output_tokens=rates[1],
                    per_1m_cache_read_tokens=rates[2],
                    per_1m_cache_write_tokens=rates[3],
                    per_1m_cache_write_1h_tokens=rates[4],
                    per_request=rates[5],
                    source=self.source,
                    source_url=f"https://github.com/pydantic/genai-prices (model {info.id})",
                    unit="request",
                )
            )
        return tuple(out) or None


def _model_price_type() -> type:
    from genai_prices.types import ModelPrice

    return ModelPrice


def _dated_only(info: Any) -> bool:
    """False for models whose price depends on the time of day (not expressible as dated entries)."""
    from genai_prices.types import StartDateConstraint

    conds = [] if isinstance(info.prices, _model_price_type()) else [c.constraint for c in info.prices]
    conds += [v.constraint for v in info.price_variants or ()]
    return all(c is None or isinstance(c, StartDateConstraint) for c in conds)


def _thresholds(info: Any) -> tuple[int, ...]:
    """Every long-context tier start of the model, in any of its prices or variants, ascending."""
    from genai_prices.types import TieredPrices

    prices = [info.prices] if isinstance(info.prices, _model_price_type()) else [c.prices for c in info.prices]
    prices += [v.prices for v in info.price_variants or ()]
    starts = {t.start for p in prices for v in vars(p).values() if isinstance(v, TieredPrices) for t in v.tiers}
    return tuple(sorted(starts))


def _at(value: Any, total_input: int) -> Decimal | None:
    """A flat or tiered rate as genai-prices applies it to a call with ``total_input`` input tokens."""
    if value is None or isinstance(value, Decimal):
        return value
    price: Decimal = value.base
    for tier in reversed(value.tiers):
        if total_input > tier.start:
            price = tier.price
            break
    return price


def _rates(mp: Any, total_input: int) -> tuple[Any, ...] | None:
    """(input, output, cache read, 5-minute write, 1-hour write, per request) in USD, or None without token prices."""
    get = vars(mp).get
    inp = _at(get("input_mtok"), total_input)
    if inp is None:
        return None
    out = _at(get("output_mtok"), total_input)
    read = _at(get("cache_read_mtok"), total_input)
    write = _at(get("cache_write_mtok"), total_input)
    write_5m = _at(get("cache_write_5m_mtok"), total_input)
    write_1h = _at(get("cache_write_1h_mtok"), total_input)
    per_k = get("requests_kcount")
    return (
        inp,
        out if out is not None else Decimal(0),
        read if read is not None else inp,
        write_5m if write_5m is not None else (write if write is not None else inp),
        write_1h if write_1h is not None else (write if write is not None else inp),
        per_k / _M if isinstance(per_k, Decimal) else None,
    )


_default: GenaiPrices | None = None
_default_lock = threading.Lock()


def load() -> GenaiPrices | None:
    """The process-wide source over genai-prices' bundled data; None if the package is not installed."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                try:
                    _default = GenaiPrices()
                except ImportError:
                    return None
    return _default


def _load_required() -> GenaiPrices:
    source = load()
    if source is None:
        raise ImportError("genai-prices is not installed in this process (pip install 'spendtrace[pricing]')")
    return source
