"""Preparing a batch for storage: price every span and aggregate every delta, in pure Python (no I/O).

Money: an item's weighted cost is ``weighted_cost(span.weight, unweighted)`` (exact, ties to even);
a span's ``cost_nano`` is the sum of its items' weighted costs; ``var_nano2`` is
``w*(w-1)*c**2`` with ``c`` the span's unweighted cost (per service for service rows).

``spans.usage`` is a JSON array with one object per usage item: ``key``, ``service``, the non-zero
unit fields of ``UsageItem`` (``count``, ``input_tokens``, ``output_tokens``, ``cache_read_tokens``,
``cache_write_tokens``, ``cache_write_1h_tokens``, ``bytes``, ``gb_seconds``), ``cost_nano``
(weighted; 0 when unpriced), ``unit_cost_nano`` (unweighted, null when unpriced), ``priced`` and
``price_version`` (the entry id, null when unpriced). Root spans that ran on Lambda get one more
item, key ``lambda_gb_second`` / service ``lambda``, with ``memory_mb``, ``billed_ms`` and
``gb_seconds``. ``spans.price_version`` is the version of the whole book (``price_versions``).

Rollup rows: the ``service = ''`` row gets the span totals (cost, calls = weight, spans = 1,
errors, unpriced items, var); each service row gets that service's cost, unpriced items and var,
with ``calls``, ``spans``, ``errors`` and ``requests`` left 0 so sums over all rows never double
count. Hour and day deltas are the minute deltas summed. ``requests`` is left 0 here too: whether
a request is new depends on what is stored, so ``prepare_batch`` only records each request's
*head* span in the batch (``PreparedBatch.heads``: its earliest-starting root span if the batch
has one, else its earliest span; the first in batch order on a tie) and the writer adds 1 at the
head's rollup key for each request id not yet in the ``requests`` table (see ``_ingest``).

Item prices are memoised per (item, price entry, weight) and book, so repeated usage
(``dynamodb_read`` x3) is priced once. An LLM item with a model id is priced by the key
``PriceBook.key_of`` derives from its provider, model, tier and size (genai-prices rates, resolved
once per distinct key); its ``spans.usage`` object also carries ``provider``, ``model``,
``service_tier``, ``region`` and ``architecture`` when set, and an unknown model is counted
unpriced under ``<provider>:<model>``, its raw id (``unpriced_key``: the same for any book, so a
reprice can take the count back).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from spendtrace.schema import MAX_DURATION_NS, MAX_TIME_NS, MAX_UNITS, MAX_WEIGHT, Span, UsageItem
from spendtrace.server.model.ingest import SPAN_COLUMNS, BatchSummary, PreparedBatch
from spendtrace.server.pricing import (
    LAMBDA_COMPUTE_KEY,
    PriceBook,
    femto_to_nano,
    item_cost_femto,
    unpriced_key,
    weighted_cost,
)
from spendtrace.server.pricing._entry import guess_service

__all__ = ["MAX_SPAN_COST_NANO", "SPAN_COLUMNS", "BatchSummary", "PreparedBatch", "prepare_batch", "prepare_isolating"]

_json = msgspec.json.Encoder()
_MAX_WEIGHT = MAX_WEIGHT
#: Largest weighted cost of one span, nano-dollars ($1,000,000): no single call costs that, and a
#: batch of 9,000 such spans still sums within the stores' 64-bit integers.
MAX_SPAN_COST_NANO = 10**15
#: Largest value a 64-bit integer column (SQLite INTEGER, ClickHouse Int64) holds.
_INT64_MAX = 2**63 - 1
_UNIT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "bytes",
)


class _UsageOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One element of ``spans.usage`` (zero units are left out: None is omitted)."""

    key: str
    service: str
    count: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    bytes: int | None = None
    gb_seconds: float | None = None
    provider: str | None = None
    model: str | None = None
    service_tier: str | None = None
    region: str | None = None
    architecture: str | None = None
    cost_nano: int
    unit_cost_nano: int | None
    priced: bool
    price_version: str | None


def _item_json(item: UsageItem, service: str, unit_cost: int | None, cost: int, version: str) -> str:
    out = _UsageOut(
        key=item.key,
        service=service,
        count=item.count or None,
        input_tokens=item.input_tokens or None,
        output_tokens=item.output_tokens or None,
        cache_read_tokens=item.cache_read_tokens or None,
        cache_write_tokens=item.cache_write_tokens or None,
        cache_write_1h_tokens=item.cache_write_1h_tokens or None,
        bytes=item.bytes or None,
        gb_seconds=item.gb_seconds or None,
        cost_nano=cost,
        unit_cost_nano=unit_cost,
        priced=unit_cost is not None,
        price_version=version or None,
    )
    if item.provider is not None or item.model is not None or item.architecture is not None:
        # set only when present: the AWS items that dominate ingest skip five keyword arguments
        out.provider, out.model, out.service_tier = item.provider, item.model, item.service_tier
        out.region, out.architecture = item.region, item.architecture
    return _json.encode(out).decode()


#: (unweighted cost or None, weighted cost, service, usage JSON fragment, start (ns) of the entry's segment
#: for a last-segment entry (so a memo hit under the bare item checks the span is not older), else 0,
#: the key that priced it (``PriceBook.key_of``: the raw model id for LLM items))
_Priced = tuple[int | None, int, str, str, int, str]
_ALWAYS = -(2**63)


def _memo_for(book: PriceBook) -> dict[Any, _Priced]:
    """Priced items of ``book``: keyed by the item (latest entry, weight 1) or (item, entry index, weight)."""
    memo = _memos.get(book.version)
    if memo is None or len(memo) > 200_000:
        if len(_memos) > 8:
            _memos.clear()
        memo = _memos[book.version] = {}
    return memo


_memos: dict[str, dict[Any, _Priced]] = {}


def _price_memo(
    book: PriceBook, memo: dict[Any, _Priced], starts_get: Any, it: UsageItem, t: int, w: float
) -> _Priced:
    """Price ``it`` for a span starting at ``t`` with weight ``w`` through ``memo``.

    Unsampled items priced by the latest entry are memoised under the item itself (with the entry's
    start, see ``_Priced``); others under (item, entry index, weight).
    """
    if it.model is None and it.architecture is None:  # AWS services and older producers' items: by key
        pk = it.key
        st = starts_get(pk)
    else:
        pk = book.key_of(it)
        st = book.starts_of(pk)
    if st is None or len(st) == 1 or t >= st[-1]:
        seg = 0 if st is None else len(st) - 1
        since = _ALWAYS if st is None or len(st) == 1 else st[-1]
        if w == 1.0:
            priced = memo[it] = _price(book, it, pk, seg, 1.0, since)
            return priced
    else:
        seg = max(bisect_right(st, t) - 1, 0)
        since = 0
    mk = (it, seg, w)
    hit = memo.get(mk)
    if hit is None:
        hit = memo[mk] = _price(book, it, pk, seg, w, since)
    return hit


def _price(book: PriceBook, item: UsageItem, pk: str, seg: int, w: float, since: int) -> _Priced:
    """(unweighted cost or None, weighted cost, service, usage JSON fragment, ``since``) of one item."""
    _check_units(item)
    entry = book.entry_at(pk, seg)
    if entry is None:
        c, ver, svc = None, "", item.service or guess_service(item.key)
    else:
        femto = item_cost_femto(entry, item)
        c = None if femto is None else femto_to_nano(femto)
        ver, svc = entry.version, item.service or entry.service
    wc = 0 if c is None else weighted_cost(w, c)
    return c, wc, svc, _item_json(item, svc, c, wc, ver), since, pk


def _check_units(item: UsageItem) -> None:
    """Raise ``ValueError`` unless every unit of ``item`` is within the wire schema's storable bounds.

    Spans built in-process (local mode) are never decoded, so the schema's bounds are checked here
    too; an item is checked once per price memo, since the memo is keyed by the item itself.
    """
    if not (math.isfinite(item.count) and math.isfinite(item.gb_seconds)):
        raise ValueError(f"usage {item.key!r} has non-finite units (count={item.count}, gb_seconds={item.gb_seconds})")
    for name in ("count", "gb_seconds", *_UNIT_FIELDS):
        v = getattr(item, name)
        if not 0 <= v <= MAX_UNITS:
            raise ValueError(f"usage {item.key!r} has {name}={v}; expected 0 <= {name} <= {MAX_UNITS}")


def _check_span(s: Span) -> None:
    """Raise ``ValueError`` naming the first time field of ``s`` outside what the stores can hold."""
    for name, v, hi in (
        ("start_ns", s.start_ns, MAX_TIME_NS),
        ("duration_ns", s.duration_ns, MAX_DURATION_NS),
        ("cpu_ns", s.cpu_ns, MAX_DURATION_NS),
        ("lambda_memory_mb", s.lambda_memory_mb, 1_048_576),
    ):
        if not 0 <= v <= hi:
            raise ValueError(f"span {s.span_id!r} has {name}={v}; expected 0 <= {name} <= {hi}")


def _check_totals(total_cost: int, unpriced: dict[tuple[str, str, str], list[Any]]) -> None:
    """Raise ``ValueError`` if a sum of the batch no longer fits a 64-bit integer column."""
    if total_cost > _INT64_MAX:
        raise ValueError(f"the batch's cost {total_cost} nano-dollars overflows a 64-bit integer")
    for (key, _, _), u in unpriced.items():
        if max(u[2], u[3], u[4]) > _INT64_MAX:
            raise ValueError(f"the batch's unpriced {key!r} units overflow a 64-bit integer")


def _path_info(path: tuple[str, ...], feature: str) -> tuple[str, tuple[str, ...]]:
    """(path JSON, distinct features to add fully-loaded cost to: the path's, plus the span's own)."""
    key = (path, feature)
    hit = _path_cache.get(key)
    if hit is None:
        if len(_path_cache) > 100_000:
            _path_cache.clear()
        distinct = tuple(dict.fromkeys((*path, feature)))
        hit = _path_cache[key] = (_json.encode(path or (feature,)).decode(), distinct)
    return hit


_path_cache: dict[tuple[tuple[str, ...], str], tuple[str, tuple[str, ...]]] = {}


def _usage_json(frags: tuple[str, ...]) -> str:
    """The ``spans.usage`` JSON of these item fragments, one shared string per distinct list.

    Spans repeat the same usage, so sharing the string saves building it and lets a pickled batch
    (``spendtrace.server.store.sqlite._writer``) carry each distinct one once: about 70% of a batch's bytes, measured.
    """
    if len(_usage_cache) > 100_000:
        _usage_cache.clear()
    out = _usage_cache[frags] = "[" + ",".join(frags) + "]"
    return out


_usage_cache: dict[tuple[str, ...], str] = {}


def prepare_batch(spans: Iterable[Span], book: PriceBook, *, deltas: bool = True) -> PreparedBatch:
    """Price ``spans`` with ``book`` and compute every row and delta to store (pure, no I/O).

    ``deltas=False`` computes the ``spans`` rows, the totals and the summary only (``rollups``,
    ``loaded``, ``requests`` and ``heads`` left empty, ``PreparedBatch.deltas`` False): for a store
    whose materialized views derive them from the rows (ClickHouse), where they cost the pricing
    thread about a third of its time for nothing.

    Repeated ``span_id``s within the batch keep their first occurrence. A span the stores cannot
    hold raises ``ValueError`` naming it, so the caller can dead-letter it instead of failing the
    whole write: non-finite units or weight, a value outside the wire schema's bounds (spans made
    in-process are never decoded), a cost above ``MAX_SPAN_COST_NANO``, or batch sums past 64 bits.
    """
    seen: set[str] = set()
    seen_add = seen.add
    uniq: list[Span] = []
    uniq_add = uniq.append
    dups = 0
    memo = _memo_for(book)
    memo_get = memo.get
    starts_get = book.segment_starts().get
    book_version = book.version
    values: list[Any] = []
    add_row = values.extend
    # (minute, feature, user, endpoint) -> {service: [cost, calls, spans, errors, unpriced, var, requests]}
    groups: dict[tuple[int, str, str, str], dict[str, list[Any]]] = {}
    groups_get = groups.get
    # minute -> {distinct features of a path: [cost, calls, spans, var]}
    loaded_by_min: dict[int, dict[tuple[str, ...], list[Any]]] = {}
    requests: dict[str, list[Any]] = {}
    requests_get = requests.get
    # request_id -> minute dims of its head span so far; request_id -> start of its head if that is a root
    heads: dict[str, tuple[int, str, str, str]] = {}
    root_start: dict[str, int] = {}
    root_start_get = root_start.get
    unpriced_d: dict[tuple[str, str, str], list[Any]] = {}
    total_cost = 0
    total_unpriced = 0
    paths_get = _path_cache.get
    usages_get = _usage_cache.get
    last_mb = -1
    loaded_mb: dict[tuple[str, ...], list[Any]] = {}
    # without deltas: the summary's (minute, feature, user, endpoint) and fully-loaded feature sets
    seen_dims: set[tuple[int, str, str, str]] = set()
    seen_loaded: set[tuple[str, ...]] = set()
    no_group: dict[str, list[Any]] = {}

    for s in spans:
        if s.span_id in seen:
            dups += 1
            continue
        seen_add(s.span_id)
        uniq_add(s)
        t = s.start_ns
        w = s.weight
        if w != 1.0 and not 1.0 <= w <= _MAX_WEIGHT:
            raise ValueError(f"span {s.span_id!r} has weight {w}; expected 1 <= weight <= {_MAX_WEIGHT:g}")
        if not (0 <= t <= MAX_TIME_NS and s.duration_ns <= MAX_DURATION_NS and s.cpu_ns <= MAX_DURATION_NS):
            _check_span(s)
        feature = s.feature
        parent = s.parent_id
        mb = t // 60_000_000_000 * 60
        dims = (mb, feature, s.user_id or "", s.endpoint or "")
        if deltas:
            group = groups_get(dims)
            if group is None:
                group = groups[dims] = {"": [0, 0.0, 0, 0, 0, 0.0, 0]}
        else:
            seen_dims.add(dims)
            group = no_group  # service rows land here and are dropped
        cost = 0
        unw = 0
        n_unpriced = 0
        frags: list[str] = []
        # service -> unweighted cost, for the per-service variance of sampled spans
        per_svc: dict[str, int] | None = None if w == 1.0 or not deltas else {}
        for it in s.usage:
            # the common case (unsampled, price in force now) is one lookup under the item itself
            hit = memo_get(it) if w == 1.0 else None
            if hit is None or t < hit[4]:
                hit = _price_memo(book, memo, starts_get, it, t, w)
            c, wc, svc, frag, _, _ = hit
            frags.append(frag)
            r = group.get(svc)
            if r is None:
                r = group[svc] = [0, 0.0, 0, 0, 0, 0.0, 0]
            if c is None:
                n_unpriced += 1
                r[4] += 1
                _add_unpriced(unpriced_d, it, unpriced_key(it), svc, feature, t)
            else:
                cost += wc
                unw += c
                r[0] += wc
                if per_svc is not None:
                    per_svc[svc] = per_svc.get(svc, 0) + c
        if s.lambda_memory_mb > 0 and parent is None:
            c, wc, svc, frag, _ = _lambda_item(book, s, w)
            frags.append(frag)
            r = group.get(svc)
            if r is None:
                r = group[svc] = [0, 0.0, 0, 0, 0, 0.0, 0]
            if c is None:
                n_unpriced += 1
                r[4] += 1
                _add_unpriced(unpriced_d, None, LAMBDA_COMPUTE_KEY, svc, feature, t)
            else:
                cost += wc
                unw += c
                r[0] += wc
                if per_svc is not None:
                    per_svc[svc] = per_svc.get(svc, 0) + c
        if cost > MAX_SPAN_COST_NANO:
            raise ValueError(
                f"span {s.span_id!r} costs {cost} nano-dollars (weighted); the most one span may cost is "
                f"{MAX_SPAN_COST_NANO} (${MAX_SPAN_COST_NANO // 10**9:,})"
            )
        var = 0.0
        if w != 1.0:
            k = w * (w - 1.0)
            var = k * unw * unw
            if per_svc is not None:
                for svc, su in per_svc.items():
                    group[svc][5] += k * su * su
        pinfo = paths_get((s.path, feature))
        if pinfo is None:
            pinfo = _path_info(s.path, feature)
        fkey = tuple(frags)
        usage_json = usages_get(fkey)
        if usage_json is None:
            usage_json = _usage_json(fkey)
        err = 1 if s.error else 0
        add_row(
            (
                s.span_id,
                parent,
                s.request_id,
                feature,
                s.operation,
                s.endpoint,
                s.user_id,
                t,
                s.duration_ns,
                s.cpu_ns,
                err,
                s.error_type,
                w,
                pinfo[0],
                usage_json,
                cost,
                n_unpriced,
                var,
                book_version,
            )
        )
        total_cost += cost
        total_unpriced += n_unpriced
        if not deltas:
            seen_loaded.add(pinfo[1])
            continue
        is_root = 1 if parent is None else 0
        r = group[""]
        r[0] += cost
        r[1] += w
        r[2] += 1
        r[3] += err
        r[4] += n_unpriced
        r[5] += var
        if mb != last_mb:
            last_mb = mb
            lm = loaded_by_min.get(mb)
            if lm is None:
                lm = loaded_by_min[mb] = {}
            loaded_mb = lm
        # fully-loaded: accumulate per distinct-feature tuple (shared by a request tree's spans),
        # expanded to one row per feature after the loop
        lr = loaded_mb.get(pinfo[1])
        if lr is None:
            loaded_mb[pinfo[1]] = [cost, w, 1, var]
        else:
            lr[0] += cost
            lr[1] += w
            lr[2] += 1
            lr[3] += var
        end = t + s.duration_ns
        rid = s.request_id
        q = requests_get(rid)
        if q is None:
            heads[rid] = dims
            if is_root:
                root_start[rid] = t
            requests[rid] = [
                s.endpoint,
                s.user_id,
                feature if is_root else None,
                t,
                end,
                cost,
                1,
                err,
                n_unpriced,
                var,
            ]
        else:
            # the root's endpoint / user win; otherwise the first one seen
            if is_root:
                if s.endpoint is not None:
                    q[0] = s.endpoint
                if s.user_id is not None:
                    q[1] = s.user_id
                q[2] = feature
                rt = root_start_get(rid)
                if rt is None or t < rt:  # the earliest root is the head
                    root_start[rid] = t
                    heads[rid] = dims
            else:
                if q[0] is None:
                    q[0] = s.endpoint
                if q[1] is None:
                    q[1] = s.user_id
                if t < q[3] and rid not in root_start:  # no root yet: the earliest span is the head
                    heads[rid] = dims
            if t < q[3]:
                q[3] = t
            if end > q[4]:
                q[4] = end
            q[5] += cost
            q[6] += 1
            q[7] += err
            q[8] += n_unpriced
            q[9] += var

    _check_totals(total_cost, unpriced_d)
    if not deltas:
        return _rows_only(book, uniq, values, unpriced_d, total_cost, total_unpriced, dups, seen_dims, seen_loaded)
    minute = {(*dims, svc): r for dims, group in groups.items() for svc, r in group.items()}
    loaded_min: dict[tuple[int, str], list[Any]] = {}
    for mb, lm in loaded_by_min.items():
        for feats, v in lm.items():
            for f in feats:
                lr = loaded_min.get((mb, f))
                if lr is None:
                    loaded_min[(mb, f)] = list(v)
                else:
                    for i in range(4):
                        lr[i] += v[i]
    rollups = {"minute": minute, "hour": _coarsen(minute, 3600), "day": _coarsen(minute, 86400)}
    loaded = {
        "minute": loaded_min,
        "hour": _coarsen_loaded(loaded_min, 3600),
        "day": _coarsen_loaded(loaded_min, 86400),
    }
    summary = _summary(minute, (k[1] for k in loaded_min), [s.start_ns for s in uniq])
    return PreparedBatch(
        book=book,
        spans=uniq,
        span_values=values,
        rollups=rollups,
        loaded=loaded,
        requests=requests,
        unpriced=unpriced_d,
        cost_nano=total_cost,
        unpriced_items=total_unpriced,
        duplicates_in_batch=dups,
        summary=summary,
        heads=heads,
    )


def _summary(dims: Iterable[tuple[Any, ...]], loaded_features: Iterable[str], starts: list[int]) -> BatchSummary:
    """What a batch touched, from its (bucket, feature, user_id, endpoint, ...) keys and span starts."""
    dims = list(dims)
    return BatchSummary(
        features=frozenset(d[1] for d in dims),
        loaded_features=frozenset(loaded_features),
        users=frozenset(d[2] for d in dims) - {""},
        endpoints=frozenset(d[3] for d in dims) - {""},
        min_start_ns=min(starts) if starts else None,
        max_start_ns=max(starts) if starts else None,
    )


def _rows_only(
    book: PriceBook,
    uniq: list[Span],
    values: list[Any],
    unpriced: dict[tuple[str, str, str], list[Any]],
    total_cost: int,
    total_unpriced: int,
    dups: int,
    dims: set[tuple[int, str, str, str]],
    loaded: set[tuple[str, ...]],
) -> PreparedBatch:
    """The ``PreparedBatch`` of ``prepare_batch(..., deltas=False)``: rows, totals and summary, no deltas."""
    summary = _summary(dims, (f for feats in loaded for f in feats), values[7::SPAN_COLUMNS])
    return PreparedBatch(
        book=book,
        spans=uniq,
        span_values=values,
        rollups={},
        loaded={},
        requests={},
        unpriced=unpriced,
        cost_nano=total_cost,
        unpriced_items=total_unpriced,
        duplicates_in_batch=dups,
        summary=summary,
        deltas=False,
    )


def prepare_isolating(
    spans: Sequence[Span], book: PriceBook, *, deltas: bool = True
) -> tuple[PreparedBatch, list[tuple[int, str]]]:
    """``prepare_batch`` of every span that can be priced and stored, and why the others cannot.

    Returns the batch of the good spans and ``(index in spans, reason)`` for each span left out
    (``cannot be stored: span 'x' has start_ns=...``; ``pricing failed: ...`` for any other error),
    so one bad span costs only itself. Spans each fine alone whose sums would pass 64 bits
    (thousands of $1M spans in one batch) keep the longest prefix that fits.
    """
    try:
        return prepare_batch(spans, book, deltas=deltas), []
    except Exception:  # find the span(s) responsible below
        pass
    rejected: list[tuple[int, str]] = []
    good: list[int] = []
    for i, s in enumerate(spans):
        try:
            prepare_batch([s], book, deltas=deltas)
        except Exception as exc:
            what = "cannot be stored" if isinstance(exc, ValueError) else "pricing failed"
            rejected.append((i, f"{what}: {exc}"))
        else:
            good.append(i)
    try:
        return prepare_batch([spans[i] for i in good], book, deltas=deltas), rejected
    except ValueError as exc:
        lo, hi = min(1, len(good)), len(good)  # good[:lo] prepares together; good[:hi + 1] may not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                prepare_batch([spans[i] for i in good[:mid]], book, deltas=deltas)
            except ValueError:
                hi = mid - 1
            else:
                lo = mid
        rejected.extend((i, f"cannot be stored: {exc}; left out of its batch") for i in good[lo:])
        return prepare_batch([spans[i] for i in good[:lo]], book, deltas=deltas), sorted(rejected)


def _add_unpriced(
    d: dict[tuple[str, str, str], list[Any]], it: UsageItem | None, pk: str, svc: str, feature: str, t: int
) -> None:
    key = (pk, svc, feature)
    u = d.get(key)
    if u is None:
        u = d[key] = [0, 0.0, 0, 0, 0, t, t]
    u[0] += 1
    if it is not None:
        u[1] += it.count
        u[2] += it.input_tokens
        u[3] += it.output_tokens
        u[4] += it.bytes
    if t < u[5]:
        u[5] = t
    if t > u[6]:
        u[6] = t


def _lambda_item(book: PriceBook, s: Span, w: float) -> tuple[int | None, int, str, str, UsageItem | None]:
    """The synthetic compute item of a root span that ran on Lambda."""
    billed_ms, c, ver = book.price_lambda(s.lambda_memory_mb, s.duration_ns, s.start_ns, s.lambda_architecture)
    wc = 0 if c is None else weighted_cost(w, c)
    obj: dict[str, Any] = {
        "key": LAMBDA_COMPUTE_KEY,
        "service": "lambda",
        "memory_mb": s.lambda_memory_mb,
        **({"architecture": s.lambda_architecture} if s.lambda_architecture else {}),
        "billed_ms": billed_ms,
        "gb_seconds": s.lambda_memory_mb / 1024 * billed_ms / 1000,
        "cost_nano": wc,
        "unit_cost_nano": c,
        "priced": c is not None,
        "price_version": ver or None,
    }
    return c, wc, "lambda", _json.encode(obj).decode(), None


def _coarsen(
    minute: dict[tuple[int, str, str, str, str], list[Any]], size: int
) -> dict[tuple[int, str, str, str, str], list[Any]]:
    out: dict[tuple[int, str, str, str, str], list[Any]] = {}
    for (b, f, u, e, s), v in minute.items():
        key = (b - b % size, f, u, e, s)
        r = out.get(key)
        if r is None:
            out[key] = list(v)
        else:
            for i in range(7):
                r[i] += v[i]
    return out


def _coarsen_loaded(minute: dict[tuple[int, str], list[Any]], size: int) -> dict[tuple[int, str], list[Any]]:
    out: dict[tuple[int, str], list[Any]] = {}
    for (b, f), v in minute.items():
        key = (b - b % size, f)
        r = out.get(key)
        if r is None:
            out[key] = list(v)
        else:
            for i in range(4):
                r[i] += v[i]
    return out
