"""The price book: usage key -> dated rate entries, and the exact cost of one usage item.

How a cost is computed (exact, deterministic, reproducible from ``PriceEntry.femto``):

    femto = count*R.request + input*R.input_token + output*R.output_token
          + cache_read*R.cache_read_token + cache_write*R.cache_write_token
          + cache_write_1h*R.cache_write_1h_token + bytes*R.gib/2**30 + gb_seconds*R.gb_second

with every product exact (integers, or the exact binary value of a float unit as a
``Fraction``), then ``nano = round(femto / 10**6)`` rounding half to even, once per item.
That is the item's *unweighted* cost; the storage layer multiplies by the span's weight
(see ``weighted_cost``). Tokens and GB-seconds without a rate make the item unpriced; a
``count`` or ``bytes`` without a rate only describes the call (an LLM call is one request)
and adds nothing, unless nothing else in the item has a rate, in which case it is unpriced.
Lambda compute is priced per GB-second with the duration rounded up to the next
millisecond, as AWS bills it (``lambda_compute_cost``).

Which entries price an item (``PriceBook.key_of``): an item without a ``model`` (older producers,
AWS services, ``add_api_call`` with a key) by its ``key``, as always. An LLM item with a ``model`` by
what its bill depends on: ``<provider>:<model>`` with its service tier and long-context band, rates
from genai-prices (``_genai``), unless an override names that key, the bare ``<provider>:<model>``, or
the item's ``key`` (user and file overrides win). The SDK keys LLM items ``<provider>:<model>``
itself; spans recorded before it did carry a model-family key (``bedrock_claude_3_haiku``), which an
override of that name still prices. A model genai-prices does not know is unpriced under
``<provider>:<model>`` (never $0, never another model's price), except the few with a local row
(``LOCAL_LLM_KEYS``, keyed by provider and raw model id; a Bedrock id matches it with its ARN or
inference-profile geography removed). Architecture-dependent AWS rates (Lambda arm64) get the suffix
``_<architecture>`` when the book has such a key.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from spendtrace.schema import UsageItem
from spendtrace.server.pricing._entry import PriceEntry, guess_service

if TYPE_CHECKING:
    from spendtrace.server.pricing._genai import GenaiPrices

logger = logging.getLogger("spendtrace.pricing")

__all__ = [
    "LAMBDA_COMPUTE_KEY",
    "LOCAL_LLM_KEYS",
    "PriceBook",
    "femto_to_nano",
    "lambda_compute_cost",
    "legacy_llm_keys",
    "unpriced_key",
    "weighted_cost",
]

#: Key under which root spans on Lambda are priced for compute (GB-seconds), service ``lambda``.
LAMBDA_COMPUTE_KEY = "lambda_gb_second"

_GIB = 2**30

#: Static LLM rows kept for models genai-prices (0.2.5) does not price, keyed by provider and raw
#: model id; every other LLM item with a model is priced from genai-prices. Rates, source page and
#: date of each are in ``static_prices.json`` (tests check genai-prices still lacks every one).
LOCAL_LLM_KEYS = frozenset(
    {
        "bedrock:amazon.titan-text-premier-v1:0",
        "bedrock:amazon.titan-embed-image-v1",
        "bedrock:cohere.embed-english-v3",
        "bedrock:cohere.embed-multilingual-v3",
        "bedrock:meta.llama3-1-405b-instruct-v1:0",
    }
)
#: The family keys the SDK gave those five models before it keyed calls by model id: spans recorded
#: then keep the row of that name, so they price exactly as they did (same rates, same entry version).
_LEGACY_LOCAL_KEYS = frozenset(
    {
        "bedrock_titan_text_premier",
        "bedrock_titan_embed_image",
        "bedrock_cohere_embed_english_v3",
        "bedrock_cohere_embed_multilingual_v3",
        "bedrock_llama3_1_405b",
    }
)
#: Geographies of Bedrock cross-region inference profiles (``us.meta.llama3-...``, ``global.anthropic...``).
_GEOGRAPHIES = frozenset({"us", "eu", "apac", "us-gov", "ca", "jp", "au", "in", "global"})
_LLM_SERVICES = frozenset({"bedrock", "openai", "anthropic"})
_EXAMPLE_IDS = {
    "openai": "gpt-4o-2024-08-06",
    "anthropic": "claude-sonnet-4-5-20250929",
    "bedrock": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
}
_CACHE_LIMIT = 200_000


def unpriced_key(item: UsageItem) -> str:
    """The key unpriced usage of ``item`` is counted under: its raw ``<provider>:<model>`` id, else its key.

    A function of the item alone (not of any book), so a reprice can take exactly that count back
    once a price covers the item.
    """
    if item.model is None:
        return item.key
    return f"{item.provider or item.service}:{item.model.strip().lower()}"


def _foundation_key(provider: str, bare: str) -> str:
    """``bedrock:<foundation model id>`` of a Bedrock ``bare`` key (no ARN, no profile geography), else ``bare``."""
    if provider != "bedrock":
        return bare
    model = bare.removeprefix("bedrock:")
    if model.startswith("arn:"):
        model = model.rsplit("/", 1)[-1]
    head, dot, rest = model.partition(".")
    if dot and "." in rest and head in _GEOGRAPHIES:
        model = rest
    return f"bedrock:{model}"


@functools.cache
def legacy_llm_keys() -> frozenset[str]:
    """The model-family keys of the static table (``openai_gpt4o``, ``bedrock_claude_3_haiku`` ...).

    The SDK's auto-instrumentation keyed LLM calls by them before it keyed them by model id; they stay
    valid keys for ``add_api_call`` and for spans recorded then.
    """
    from spendtrace.server.pricing._static import static_entries

    return frozenset(e.key for e in static_entries() if e.service in _LLM_SERVICES and ":" not in e.key)


_warned_legacy: set[str] = set()


def _warn_legacy_overrides(keys: Iterable[str]) -> None:
    """Say once per key that an override of a family key no longer reaches auto-instrumented LLM calls."""
    legacy = legacy_llm_keys()
    for key in sorted(set(keys)):
        if key in legacy and key not in _warned_legacy:
            _warned_legacy.add(key)
            provider = key.split("_", 1)[0]
            logger.warning(
                "spendtrace: the price override %r names a model-family key: it prices usage recorded under that "
                "key (add_api_call(%r, ...), and LLM calls recorded before the SDK keyed them by model id), not "
                "the calls auto-instrumentation records now; for those, also override '%s:<model id>' with the id "
                "the usage shows (e.g. '%s:%s'; DEPLOYMENT.md, 'Where the prices come from')",
                key, key, provider, provider, _EXAMPLE_IDS.get(provider, "<model id>"),
            )  # fmt: skip


def femto_to_nano(femto: int | Fraction) -> int:
    """Femto-dollars to nano-dollars, rounding half to even."""
    if isinstance(femto, int):
        q, r = divmod(femto, 1_000_000)
        if r > 500_000 or (r == 500_000 and q & 1):
            q += 1
        return q
    return round(femto / 1_000_000)


def weighted_cost(weight: float, unweighted_nano: int) -> int:
    """``round(weight * cost)`` computed exactly on the weight's binary value, ties to even."""
    if weight == 1.0:
        return unweighted_nano
    if isinstance(weight, int) or weight.is_integer():
        return int(weight) * unweighted_nano
    return round(Fraction(weight) * unweighted_nano)


def _units(value: float) -> int | Fraction:
    if isinstance(value, int):  # a Python caller may build a UsageItem with int units
        return value
    return int(value) if value.is_integer() else Fraction(value)


def item_cost_femto(entry: PriceEntry, item: UsageItem) -> int | Fraction | None:
    """Exact cost of ``item`` at ``entry``'s rates in femto-dollars, or None if it cannot be priced.

    Tokens and GB-seconds are always billable: a non-zero amount with no rate makes the item
    unpriced. ``count`` and ``bytes`` are billable only where the entry has a rate for them;
    otherwise they describe the call (an LLM call is one request, an S3 GET moves N bytes) and
    cost nothing by themselves. An item none of whose non-zero units has a rate is unpriced.
    """
    r = entry.femto
    total: int | Fraction = 0
    billed = False
    count = item.count
    if count and r.request is not None:
        total += _units(count) * r.request
        billed = True
    for units, rate in (
        (item.input_tokens, r.input_token),
        (item.output_tokens, r.output_token),
        (item.cache_read_tokens, r.cache_read_token),
        (item.cache_write_tokens, r.cache_write_token),
        (item.cache_write_1h_tokens, r.cache_write_1h_token),
    ):
        if units:
            if rate is None:
                return None
            total += units * rate
            billed = True
    if item.bytes and r.gib is not None:
        total += Fraction(item.bytes * r.gib, _GIB)
        billed = True
    if item.gb_seconds:
        if r.gb_second is None:
            return None
        total += _units(item.gb_seconds) * r.gb_second
        billed = True
    if not billed and (count or item.bytes):
        return None
    if isinstance(total, Fraction) and total.denominator == 1:
        return int(total)
    return total


def lambda_compute_cost(entry: PriceEntry, memory_mb: int, duration_ns: int) -> tuple[int, int] | None:
    """(billed ms, unweighted nano-dollars) of a Lambda invocation: GB-s = MB/1024 x ceil(ms)/1000."""
    rate = entry.femto.gb_second
    if rate is None:
        return None
    billed_ms = -(-duration_ns // 1_000_000)
    femto = Fraction(memory_mb * billed_ms * rate, 1024 * 1000)
    return billed_ms, femto_to_nano(femto)


class PriceBook:
    """Dated rates per usage key; ``price(item, at_ns)`` uses the entry in force at ``at_ns``.

    Before a key's first ``effective_from`` the first entry applies (a span cannot predate the
    service it used, and an estimate beats nothing there). Keys with no entry are unpriced:
    ``price`` returns ``None``, never 0. Books are immutable; ``with_overrides`` makes a new one.
    """

    def __init__(
        self, entries: Iterable[PriceEntry] = (), *, name: str = "custom", llm: GenaiPrices | None = None
    ) -> None:
        by_key: dict[str, dict[Any, PriceEntry]] = {}
        for e in entries:
            by_key.setdefault(e.key, {})[e.effective_from] = e  # later entries for the same date win
        self._entries: dict[str, tuple[PriceEntry, ...]] = {
            k: tuple(v[d] for d in sorted(v)) for k, v in sorted(by_key.items())
        }
        self._starts: dict[str, tuple[int, ...]] = {
            k: tuple(e.effective_from_ns for e in es) for k, es in self._entries.items()
        }
        self.name = name
        self._cache: dict[tuple[UsageItem, int], tuple[int | None, str, str]] = {}
        canon = json.dumps([e.to_dict() for es in self._entries.values() for e in es], sort_keys=True)
        if llm is not None:
            canon += "\n" + llm.source
        self._version = "pb-" + hashlib.sha256(canon.encode()).hexdigest()[:16]
        self._llm = llm
        #: keys with an override (user, file, AWS Pricing API): they win over genai-prices
        self._overridden = frozenset(k for k, es in self._entries.items() if any(e.source != "static" for e in es))
        # (provider, model, tier, long-context band, key) -> price key; (provider, model) -> thresholds;
        # genai-derived keys' entries
        self._resolved: dict[tuple[Any, ...], str] = {}
        self._thresholds: dict[tuple[str, str], tuple[int, ...]] = {}
        self._derived: dict[str, tuple[PriceEntry, ...]] = {}
        self._derived_starts: dict[str, tuple[int, ...]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its memos (a prepared batch carries its book to the writer process)."""
        state = dict(self.__dict__)
        state["_cache"], state["_resolved"], state["_thresholds"] = {}, {}, {}
        return state

    # ----------------------------------------------------------------- construction
    @classmethod
    def default(cls) -> PriceBook:
        """The static defaults shipped with spendtrace (``static_prices.json``) and LLM rates from genai-prices.

        Without the genai-prices package (an app recording to a local store with no server extra),
        LLM items with a model id are unpriced unless an override prices them; a warning says so once.
        """
        return _default_book()

    @classmethod
    def static(cls) -> PriceBook:
        """The static table alone (no genai-prices): AWS services, the local LLM rows and the legacy family keys."""
        return _static_book()

    @classmethod
    def load(
        cls,
        prices_file: str | os.PathLike[str] | None = None,
        *,
        aws_pricing: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> PriceBook:
        """The default book, refreshed from the AWS Pricing API, with a file's overrides on top.

        ``prices_file`` is JSON or TOML mapping key -> rates (see ``spendtrace.server.pricing._overrides``);
        a malformed file raises ``PricingError``. ``aws_pricing=True`` fetches current AWS rates
        (cached on disk for a day) and falls back to the static table on any failure (logged once);
        ``None`` (the default) does so when boto3 is installed and AWS credentials are configured
        (``SPENDTRACE_AWS_PRICING=0`` / ``1`` forces it off / on); ``False`` never asks AWS.
        """
        book = cls.default()
        from spendtrace.server.pricing._aws import aws_entries, aws_pricing_wanted

        if aws_pricing if aws_pricing is not None else aws_pricing_wanted():
            entries = aws_entries(cache_dir=cache_dir)
            if entries is not None:
                book = book.with_overrides(entries, name=f"{book.name}+aws")
        if prices_file is not None:
            from spendtrace.server.pricing._overrides import load_overrides

            book = book.with_overrides(load_overrides(prices_file), name=f"{book.name}+{os.fspath(prices_file)}")
        return book

    def with_overrides(self, entries: Iterable[PriceEntry], *, name: str | None = None) -> PriceBook:
        """A new book where, per overridden key, the override entries replace this book's from their
        earliest ``effective_from`` on (older entries of that key stay in force before it)."""
        over: dict[str, list[PriceEntry]] = {}
        for e in entries:
            over.setdefault(e.key, []).append(e)
        _warn_legacy_overrides(over)
        merged: list[PriceEntry] = []
        for key, es in self._entries.items():
            if key in over:
                first = min(e.effective_from for e in over[key])
                merged.extend(e for e in es if e.effective_from < first)
            else:
                merged.extend(es)
        for added in over.values():
            merged.extend(added)
        return PriceBook(merged, name=name or f"{self.name}+overrides", llm=self._llm)

    # ----------------------------------------------------------------- look-ups
    @property
    def version(self) -> str:
        """Content hash of every entry: identical books have identical versions."""
        return self._version

    def keys(self) -> list[str]:
        """Every priced key, sorted."""
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self, key: str | None = None) -> list[PriceEntry]:
        """All entries (or one key's), oldest first."""
        if key is not None:
            return list(self._entries.get(key, ()))
        return [e for es in self._entries.values() for e in es]

    def entry_for(self, key: str, at_ns: int) -> PriceEntry | None:
        """The entry of ``key`` in force at ``at_ns`` (ns since the epoch, UTC), or None if unknown."""
        es = self._entries.get(key) or self._derived.get(key)
        starts = self.starts_of(key)
        if es is None or starts is None:
            return None
        i = bisect_right(starts, at_ns) - 1
        return es[i if i >= 0 else 0]

    def key_of(self, item: UsageItem) -> str:
        """The key whose entries price ``item`` (see the module docstring); memoised, cheap on a hit."""
        model = item.model
        if model is None:
            if item.architecture is None:
                return item.key
            arch = f"{item.key}_{item.architecture.lower()}"
            return arch if arch in self._entries else item.key
        provider = item.provider or item.service
        # long-context band: how many of the model's input thresholds this call's input (cache included) crossed
        thresholds = self._thresholds.get((provider, model))
        if thresholds is None:
            thresholds = () if self._llm is None else self._llm.thresholds(provider, model)
            self._thresholds[(provider, model)] = thresholds
        band = 0
        if thresholds:
            total = item.input_tokens + item.cache_read_tokens + item.cache_write_tokens + item.cache_write_1h_tokens
            band = sum(1 for t in thresholds if total > t)
        ck = (provider, model, item.service_tier, band, item.key)
        hit = self._resolved.get(ck)
        if hit is not None:
            return hit
        key = self._resolve(provider, model, item.service_tier, thresholds[band - 1] + 1 if band else 0, item.key)
        if len(self._resolved) > _CACHE_LIMIT:
            self._resolved.clear()
        self._resolved[ck] = key
        return key

    def _resolve(self, provider: str, model: str, tier: str | None, total: int, legacy: str) -> str:
        bare = f"{provider}:{model.strip().lower()}"
        if legacy in self._overridden:  # an override of the item's own key (a family key on older spans)
            return legacy
        derived = None if self._llm is None else self._llm.key_for(provider, model, tier, total)
        for key in (derived, bare):
            if key is not None and key in self._entries:  # an override of the raw model id
                return key
        if derived is not None and self._llm is not None:
            if derived not in self._derived:
                es = self._llm.entries(derived)
                if es is None:
                    return bare
                self._derived_starts[derived] = tuple(e.effective_from_ns for e in es)
                self._derived[derived] = es
            return derived
        if legacy in _LEGACY_LOCAL_KEYS and legacy in self._entries:
            return legacy
        local = _foundation_key(provider, bare)
        return local if local in self._entries else bare

    def starts_of(self, key: str) -> tuple[int, ...] | None:
        """Start (ns) of each entry of ``key`` (a book key or one ``key_of`` derived), None if unknown."""
        st = self._starts.get(key)
        return st if st is not None else self._derived_starts.get(key)

    def segment_starts(self) -> Mapping[str, tuple[int, ...]]:
        """key -> start (ns) of each of its entries; entry ``i`` is in force from ``starts[i]``."""
        return self._starts

    def entry_at(self, key: str, index: int) -> PriceEntry | None:
        """Entry number ``index`` (oldest first) of ``key``, or None if the key is unknown."""
        es = self._entries.get(key)
        if es is None:
            es = self._derived.get(key)
        return None if es is None else es[index]

    def service_of(self, key: str) -> str:
        """The service a key is billed under (its entries', else guessed from the key)."""
        es = self._entries.get(key)
        return es[-1].service if es else guess_service(key)

    def price(self, item: UsageItem, at_ns: int) -> tuple[int | None, str]:
        """(unweighted cost in nano-dollars or None if unpriced, version id of the entry used or '')."""
        cost, version, _ = self.price_item(item, at_ns)
        return cost, version

    def price_item(self, item: UsageItem, at_ns: int) -> tuple[int | None, str, str]:
        """Like ``price`` plus the service to attribute the item to; memoised per (item, entry)."""
        key = self.key_of(item)
        starts = self.starts_of(key)
        if starts is None:
            return None, "", item.service or guess_service(item.key)
        i = bisect_right(starts, at_ns) - 1 if len(starts) > 1 else 0
        if i < 0:
            i = 0
        ck = (item, i)
        hit = self._cache.get(ck)
        if hit is not None:
            return hit
        entry = self.entry_at(key, i)
        assert entry is not None
        femto = item_cost_femto(entry, item)
        result = (
            None if femto is None else femto_to_nano(femto),
            entry.version,
            item.service or entry.service,
        )
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[ck] = result
        return result

    def price_lambda(
        self, memory_mb: int, duration_ns: int, at_ns: int, architecture: str | None = None
    ) -> tuple[int, int | None, str]:
        """(billed ms, unweighted nano-dollars or None, version) of a root span's Lambda compute.

        ``architecture="arm64"`` uses the ``lambda_gb_second_arm64`` rate when the book has one.
        """
        key = LAMBDA_COMPUTE_KEY
        if architecture is not None and f"{key}_{architecture.lower()}" in self._entries:
            key = f"{key}_{architecture.lower()}"
        entry = self.entry_for(key, at_ns)
        billed_ms = -(-duration_ns // 1_000_000)
        if entry is None:
            return billed_ms, None, ""
        res = lambda_compute_cost(entry, memory_mb, duration_ns)
        return billed_ms, (None if res is None else res[1]), entry.version

    def to_json(self) -> str:
        """Every entry as a JSON array (what ``price_versions.book`` stores)."""
        return json.dumps([e.to_dict() for e in self.entries()], sort_keys=True)

    def current_rates(self) -> Mapping[str, PriceEntry]:
        """The latest entry of every key."""
        return {k: es[-1] for k, es in self._entries.items()}

    def __repr__(self) -> str:
        return f"PriceBook({self.name!r}, {len(self)} keys, version={self.version})"


@functools.cache
def _static_book() -> PriceBook:
    """The static defaults as a book (shared: books are immutable)."""
    from spendtrace.server.pricing._static import static_entries

    return PriceBook(static_entries(), name="static")


@functools.cache
def _default_book() -> PriceBook:
    """The static defaults with genai-prices' LLM rates when the package is installed (shared)."""
    from spendtrace.server.pricing import _genai

    llm = _genai.load()
    if llm is None:
        logger.warning("spendtrace: genai-prices is not installed; LLM usage with a model id is left unpriced "
                       "(install spendtrace[consumer] or add overrides)")  # fmt: skip
        return _static_book()
    return PriceBook(_static_book().entries(), name=f"static+{llm.source}", llm=llm)
