"""Re-pricing stored spans with a price book: new usage JSON and the exact deltas of every total (pure, no I/O).

A backend reads the stored spans of a range (``StoredSpan``), feeds them to ``Repricer.add`` and
applies what it gathers: each changed span's new ``usage`` / ``cost_nano`` / ``unpriced`` /
``var_nano2``, and the change (new - old) of every rollup row (``rollup_*`` per service and the
span-level ``service = ''`` row; ``loaded_*`` for each distinct feature on the span's path),
``requests`` row and ``unpriced_usage`` row those spans fed at ingest. Adding deltas (rather than
recomputing a bucket) is what keeps rows right that also hold spans outside the reprice (other
features, spans already aged out of raw retention).

Each item is priced exactly as ``prepare_batch`` prices it at ingest (same entry in force at the
span's start, same weighting and JSON), from the units and model fields its ``usage`` object kept;
the synthetic Lambda compute item from its memory size and the span's duration. An item keeps the
service it was stored under, except an unpriced one stored under the service guessed from its key,
which takes its new price entry's service (what a fresh ingest would do).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from spendtrace.schema import UsageItem
from spendtrace.server.ingest.prepare import _price
from spendtrace.server.pricing import LAMBDA_COMPUTE_KEY, PriceBook, weighted_cost
from spendtrace.server.pricing._entry import guess_service

__all__ = ["GRAIN_SECONDS", "Repricer", "SpanChange", "StoredSpan"]

GRAIN_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_json = msgspec.json.Encoder()


class StoredSpan(NamedTuple):
    """The stored columns of one span that re-pricing reads."""

    span_id: str
    request_id: str
    feature: str
    user_id: str | None
    endpoint: str | None
    start_ns: int
    duration_ns: int
    weight: float
    path: str
    usage: str
    cost_nano: int
    unpriced: int
    var_nano2: float


class SpanChange(NamedTuple):
    """One span whose priced items changed: its old and new stored values."""

    span_id: str
    start_ns: int
    request_id: str
    old_usage: str
    old_cost_nano: int
    old_unpriced: int
    old_var_nano2: float
    new_usage: str
    new_cost_nano: int
    new_unpriced: int
    new_var_nano2: float


def _item_of(d: dict[str, Any], service: str) -> UsageItem:
    return UsageItem(
        key=d["key"],
        service=service,
        count=float(d.get("count") or 0.0),
        input_tokens=int(d.get("input_tokens") or 0),
        output_tokens=int(d.get("output_tokens") or 0),
        cache_read_tokens=int(d.get("cache_read_tokens") or 0),
        cache_write_tokens=int(d.get("cache_write_tokens") or 0),
        cache_write_1h_tokens=int(d.get("cache_write_1h_tokens") or 0),
        bytes=int(d.get("bytes") or 0),
        gb_seconds=float(d.get("gb_seconds") or 0.0),
        provider=d.get("provider"),
        model=d.get("model"),
        service_tier=d.get("service_tier"),
        region=d.get("region"),
        architecture=d.get("architecture"),
    )


#: (service, unweighted cost or None, weighted cost, price version or None, JSON fragment, units for
#: ``unpriced_usage``: (count, input tokens, output tokens, bytes), the item it was priced as)
_New = tuple[str, int | None, int, str | None, str, tuple[float, int, int, int], UsageItem | None]


class Repricer:
    """Re-prices spans one at a time with ``book`` and gathers every delta to apply.

    ``unpriced_key`` names the ``unpriced_usage`` row the backend's ingest counts an unpriced item under
    (from its stored ``usage`` object and the ``UsageItem`` rebuilt from it, None for the Lambda compute
    item); ``counted_key`` (default: the same) the row an item stored unpriced was counted under, which
    differs for rows an older ingest wrote.
    """

    def __init__(
        self,
        book: PriceBook,
        unpriced_key: Callable[[dict[str, Any], UsageItem | None], str],
        counted_key: Callable[[dict[str, Any], UsageItem | None], str] | None = None,
    ) -> None:
        self.book = book
        self._ukey = unpriced_key
        self._counted = counted_key or unpriced_key
        self.spans_seen = 0
        #: spans whose priced items changed
        self.changed = 0
        #: grain -> (bucket, feature, user_id, endpoint, service) -> [cost, unpriced, var]
        self.rollups: dict[str, dict[tuple[int, str, str, str, str], list[Any]]] = {g: {} for g in GRAIN_SECONDS}
        #: grain -> (bucket, feature) -> [cost, var]
        self.loaded: dict[str, dict[tuple[int, str], list[Any]]] = {g: {} for g in GRAIN_SECONDS}
        #: request_id -> [cost, unpriced, var]
        self.requests: dict[str, list[Any]] = {}
        #: (key, service, feature) -> [items, count, input, output, bytes, first_ns | None, last_ns | None]
        #: (first / last only where items were added)
        self.unpriced: dict[tuple[str, str, str], list[Any]] = {}
        #: service -> [cost before, cost after, unpriced before, unpriced after] over every span seen
        self.services: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])

    # -- pricing one item ------------------------------------------------------------------------
    def _reprice_item(self, d: dict[str, Any], s: StoredSpan) -> _New:
        book, t, w = self.book, s.start_ns, s.weight
        if d.get("key") == LAMBDA_COMPUTE_KEY and "memory_mb" in d:
            _, c, ver = book.price_lambda(int(d["memory_mb"]), s.duration_ns, t, d.get("architecture"))
            wc = 0 if c is None else weighted_cost(w, c)
            out = {k: v for k, v in d.items() if k not in ("cost_nano", "unit_cost_nano", "priced", "price_version")}
            out.update(cost_nano=wc, unit_cost_nano=c, priced=c is not None, price_version=ver or None)
            return "lambda", c, wc, ver or None, _json.encode(out).decode(), (0.0, 0, 0, 0), None
        stored = str(d.get("service") or "")
        key = str(d["key"])
        service = "" if not d.get("priced") and stored == guess_service(key) else stored
        item = _item_of(d, service)
        pk = key if item.model is None and item.architecture is None else book.key_of(item)
        starts = book.starts_of(pk)
        seg = 0 if starts is None else max(bisect_right(starts, t) - 1, 0)
        c, wc, svc, frag, _, _ = _price(book, item, pk, seg, w, 0)
        entry = book.entry_at(pk, seg)
        version = None if entry is None else entry.version
        units = (item.count, item.input_tokens, item.output_tokens, item.bytes)
        return svc, c, wc, version, frag, units, item

    # -- one span ----------------------------------------------------------------------------------
    def add(self, s: StoredSpan) -> SpanChange | None:
        """Re-price one stored span: returns its change (None if nothing about it changed) and gathers its deltas."""
        self.spans_seen += 1
        items: list[dict[str, Any]] = json.loads(s.usage)
        w = s.weight
        k = w * (w - 1.0)
        changed = False
        frags: list[str] = []
        new_cost = new_unw = new_unpriced = 0
        # service -> [old cost, new cost, old unpriced, new unpriced, old unweighted, new unweighted]
        per_svc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
        moved: list[tuple[dict[str, Any], _New]] = []
        for d in items:
            new = self._reprice_item(d, s)
            svc, c, wc, ver, frag, _, _ = new
            frags.append(frag)
            old_svc = str(d.get("service") or "")
            old_priced = bool(d.get("priced"))
            old_c = d.get("unit_cost_nano") if old_priced else None
            old_wc = int(d.get("cost_nano") or 0) if old_priced else 0
            o = per_svc[old_svc]
            o[0] += old_wc
            o[2] += 0 if old_priced else 1
            o[4] += int(old_c or 0)
            n = per_svc[svc]
            n[1] += wc
            n[3] += 1 if c is None else 0
            n[5] += c or 0
            new_cost += wc
            new_unw += c or 0
            new_unpriced += 1 if c is None else 0
            if (old_svc, old_c, old_wc, old_priced, d.get("price_version")) != (svc, c, wc, c is not None, ver):
                changed = True
                moved.append((d, new))
        for svc, v in per_svc.items():
            acc = self.services[svc]
            acc[0] += v[0]
            acc[1] += v[1]
            acc[2] += v[2]
            acc[3] += v[3]
        if not changed:
            return None
        self.changed += 1
        new_var = k * new_unw * new_unw if w != 1.0 else 0.0
        d_cost, d_unp, d_var = new_cost - s.cost_nano, new_unpriced - s.unpriced, new_var - s.var_nano2
        mb = s.start_ns // 60_000_000_000 * 60
        user, endpoint, feature = s.user_id or "", s.endpoint or "", s.feature
        path = json.loads(s.path) if s.path else []
        features = dict.fromkeys([*path, feature])
        for grain, size in GRAIN_SECONDS.items():
            b = mb - mb % size
            roll = self.rollups[grain]
            _acc(roll, (b, feature, user, endpoint, ""), (d_cost, d_unp, d_var))
            for svc, v in per_svc.items():
                sv = k * (v[5] * v[5] - v[4] * v[4]) if w != 1.0 else 0.0
                if v[1] != v[0] or v[3] != v[2] or sv:
                    _acc(roll, (b, feature, user, endpoint, svc), (v[1] - v[0], v[3] - v[2], sv))
            loaded = self.loaded[grain]
            for f in features:
                _acc(loaded, (b, f), (d_cost, d_var))
        _acc(self.requests, s.request_id, (d_cost, d_unp, d_var))
        for d, (svc, c, _, _, _, units, item) in moved:
            if not d.get("priced"):
                old_item = None if item is None else _item_of(d, item.service)
                u = (float(d.get("count") or 0.0), int(d.get("input_tokens") or 0),
                     int(d.get("output_tokens") or 0), int(d.get("bytes") or 0))  # fmt: skip
                self._unpriced((self._counted(d, old_item), str(d.get("service") or ""), feature), -1, u, None)
            if c is None:
                self._unpriced((self._ukey(d, item), svc, feature), 1, units, s.start_ns)
        new_usage = "[" + ",".join(frags) + "]"
        return SpanChange(
            s.span_id, s.start_ns, s.request_id, s.usage, s.cost_nano, s.unpriced, s.var_nano2,
            new_usage, new_cost, new_unpriced, new_var,
        )  # fmt: skip

    def _unpriced(
        self, key: tuple[str, str, str], sign: int, units: tuple[float, int, int, int], t: int | None
    ) -> None:
        acc = self.unpriced.get(key)
        if acc is None:
            acc = self.unpriced[key] = [0, 0.0, 0, 0, 0, None, None]
        acc[0] += sign
        for i, u in enumerate(units, start=1):
            acc[i] += sign * u
        if t is not None:
            acc[5] = t if acc[5] is None else min(acc[5], t)
            acc[6] = t if acc[6] is None else max(acc[6], t)

    def service_changes(self) -> list[tuple[str, int, int, int, int]]:
        """(service, cost before, cost after, unpriced before, unpriced after) over every span seen, by service."""
        return [(svc, *v) for svc, v in sorted(self.services.items())]  # type: ignore[misc]


def _acc(d: dict[Any, list[Any]], key: Any, values: tuple[Any, ...]) -> None:
    acc = d.get(key)
    if acc is None:
        d[key] = list(values)
    else:
        for i, v in enumerate(values):
            acc[i] += v
