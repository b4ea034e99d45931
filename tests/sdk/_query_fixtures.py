"""Test data for the query and CLI tests: request trees recorded as real Spans, stored through the real ingest.

``store`` writes spans with ``prepare_batch`` + ``write_batch_sync``; ``Expect`` recomputes every
number straight from the spans and the rates written below (``PUBLISHED``), by the pricing rule the
product documents, reimplemented here. Nothing here calls ``spendtrace.server.pricing`` except to
build a book to feed the store (``book_of``), so a wrong rate in the shipped table or a wrong
rounding in the product makes the query tests fail.
"""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from independent_pricing import rated_nano

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.sqlite._dash import DIMS, GRAINS
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

NANO = 1_000_000_000
DAY_NS = 86_400 * NANO
INJECTION = "x'; DROP TABLE spans; --"
MARKUP = "[red]x"
USERS = ("tenant-acme", "tenant-globex", "tenant-initech", INJECTION, None)
ENDPOINTS = ("/api/search", "/api/recommend", MARKUP)
UNKNOWN_KEY = "mystery_api_call"


def _usage(rng: random.Random, feature: str) -> tuple[UsageItem, ...]:
    items = []
    if feature in ("search", "product_details", MARKUP):
        items.append(UsageItem("dynamodb_read", count=float(rng.randint(1, 5))))
    if feature in ("recommend", "search") and rng.random() < 0.7:
        items.append(
            UsageItem("bedrock_claude_3_haiku", input_tokens=rng.randint(100, 900), output_tokens=rng.randint(10, 300))
        )
    if feature in ("cache", "api") and rng.random() < 0.5:
        items.append(UsageItem("s3_get", count=1.0))
    if feature == INJECTION:
        items.append(UsageItem("s3_put", count=2.0))
    if rng.random() < 0.05:
        items.append(UsageItem(UNKNOWN_KEY, count=1.0))
    return tuple(items)


def make_spans(now_ns: int, n_requests: int = 150, seed: int = 7, days: int = 6) -> list[Span]:
    """Request trees (api -> search|recommend -> product_details x3, cache) spread over ``days`` days before ``now``.

    Some requests are sampled (weight 4), some spans fail, a few use a key no price covers, and
    user / endpoint / feature names include SQL- and markup-shaped strings.
    """
    rng = random.Random(seed)
    spans: list[Span] = []
    for r in range(n_requests):
        # any minute of the last `days` days, plus some seconds, so day/hour/minute buckets all get used
        t0 = now_ns - rng.randrange(days * 1440) * 60 * NANO + rng.randrange(60) * NANO
        rid = f"req-{r:04d}"
        user = rng.choice(USERS)
        endpoint = rng.choice(ENDPOINTS)
        weight = 4.0 if r % 10 == 3 else 1.0
        common = {"request_id": rid, "endpoint": endpoint, "user_id": user, "weight": weight}
        tree = [(f"{rid}-root", None, "api", ("api",))]
        mid_feature = rng.choice(("search", "recommend", INJECTION, MARKUP))
        tree.append((f"{rid}-mid", f"{rid}-root", mid_feature, ("api", mid_feature)))
        for k in range(rng.randint(0, 3)):
            tree.append((f"{rid}-pd{k}", f"{rid}-mid", "product_details", ("api", mid_feature, "product_details")))
        if rng.random() < 0.5:
            tree.append((f"{rid}-cache", f"{rid}-root", "cache", ("api", "cache")))
        for i, (sid, parent, feature, path) in enumerate(tree):
            spans.append(
                Span(
                    span_id=sid,
                    parent_id=parent,
                    feature=feature,
                    operation=f"op-{feature}",
                    start_ns=t0 + i * 1000,
                    duration_ns=rng.randrange(1, 50) * 1_000_000,
                    cpu_ns=1_000_000,
                    error=rng.random() < 0.05,
                    usage=_usage(rng, feature),
                    path=path,
                    **common,  # type: ignore[arg-type]
                )
            )
    return spans


def store(db_path: Path | str, spans: Iterable[Span], book: PriceBook, batch: int = 97) -> None:
    """Write ``spans`` through the real ingest path, in batches."""
    conn = connect(db_path)
    try:
        spans = list(spans)
        for i in range(0, len(spans), batch):
            write_batch_sync(conn, prepare_batch(spans[i : i + batch], book))
    finally:
        conn.close()


# --------------------------------------------------------------------------- rates written here
_M = 1_000_000


@dataclass(frozen=True)
class Rates:
    """USD per single billed unit (``count``, ``input_tokens``, ...) and the service, per usage key.

    ``since_ns``: the rates hold for spans starting at or after it (``Expect`` refuses older spans).
    """

    since_ns: int
    usd: Mapping[str, tuple[str, Mapping[str, Fraction]]]

    def scaled(self, factor: int) -> Rates:
        """Every rate multiplied by ``factor``."""
        return Rates(
            self.since_ns,
            {k: (svc, {u: r * factor for u, r in per.items()}) for k, (svc, per) in self.usd.items()},
        )


#: The providers' published rates for the keys ``make_spans`` uses (UNKNOWN_KEY has none: unpriced).
#: ``make_spans`` puts every span within days of its ``now`` (2026 in the tests), after DynamoDB's
#: on-demand price cut of 2024-11-01, so one rate per key covers the dataset.
PUBLISHED = Rates(
    since_ns=int(datetime(2024, 11, 1, tzinfo=UTC).timestamp()) * 1_000_000_000,
    usd={
        # https://aws.amazon.com/dynamodb/pricing/on-demand/ : $0.125 per million read request units
        # (us-east-1, since 2024-11-01; $0.25 before)
        "dynamodb_read": ("dynamodb", {"count": Fraction("0.125") / _M}),
        # https://aws.amazon.com/bedrock/pricing/ : Anthropic Claude 3 Haiku, on-demand,
        # $0.00025 per 1,000 input tokens and $0.00125 per 1,000 output tokens
        "bedrock_claude_3_haiku": (
            "bedrock",
            {"input_tokens": Fraction("0.00025") / 1000, "output_tokens": Fraction("0.00125") / 1000},
        ),
        # https://aws.amazon.com/s3/pricing/ : S3 Standard requests, $0.0004 per 1,000 GET and
        # $0.005 per 1,000 PUT (us-east-1)
        "s3_get": ("s3", {"count": Fraction("0.0004") / 1000}),
        "s3_put": ("s3", {"count": Fraction("0.005") / 1000}),
    },
)

# The rule of spendtrace/server/pricing/_book.py, written again from its docstring: tokens and
# GB-seconds need a rate (else the item is unpriced); a count or bytes adds only where there is a
# rate for it, and an item with nothing billed is unpriced; the exact USD amount is rounded once
# per item to nano-dollars, half to even; the span's weight multiplies each item's rounded cost,
# exactly on the weight's binary value, again rounded half to even.
def item_nano(item: UsageItem, rates: Rates = PUBLISHED) -> tuple[int | None, str]:
    """(unweighted nano-dollars, or None if unpriced; service) of one item at ``rates`` (the shared rule)."""
    return rated_nano(item, rates.usd)


def weighted_nano(weight: float, unweighted: int) -> int:
    """An item's cost under a sampling weight: ``weight * cost`` exactly, rounded half to even."""
    return round(Fraction(weight) * unweighted)


#: ``PriceEntry`` field and its unit (per request, per 1M tokens) for each ``UsageItem`` field ``book_of`` knows.
_ENTRY_FIELDS = {
    "count": ("per_request", 1),
    "input_tokens": ("per_1m_input_tokens", _M),
    "output_tokens": ("per_1m_output_tokens", _M),
}


def book_of(rates: Rates) -> PriceBook:
    """A price book charging ``rates``, to feed the store with (``Expect`` never reads a book)."""
    entries = []
    for key, (service, per_unit) in rates.usd.items():
        kw: dict[str, Decimal] = {}
        for unit, rate in per_unit.items():
            name, scale = _ENTRY_FIELDS[unit]
            published = rate * scale
            kw[name] = Decimal(published.numerator) / Decimal(published.denominator)
            assert kw[name] == published, (key, unit)  # exact: every rate here is a short decimal
        entries.append(PriceEntry(key, service, **kw))  # type: ignore[arg-type]
    return PriceBook(entries, name="test rates")


@dataclass
class Priced:
    """One span with its cost recomputed from the rates."""

    span: Span
    cost: int
    unpriced: int
    services: dict[str, int]
    unweighted: int


@dataclass
class Expect:
    """Every expected number, computed from the spans and ``rates`` only."""

    spans: list[Span]
    rates: Rates = PUBLISHED
    priced: list[Priced] = field(init=False)

    def __post_init__(self) -> None:
        self.priced = []
        for s in self.spans:
            if s.usage and s.start_ns < self.rates.since_ns:
                raise ValueError(f"span {s.span_id} starts before the rates written here apply")
            cost = unw = unpriced = 0
            services: dict[str, int] = defaultdict(int)
            for item in s.usage:
                c, svc = item_nano(item, self.rates)
                if c is None:
                    unpriced += 1
                    continue
                wc = weighted_nano(s.weight, c)
                cost += wc
                unw += c
                services[svc] += wc
            self.priced.append(Priced(s, cost, unpriced, dict(services), unw))

    def select(self, start_ns: int | None = None, end_ns: int | None = None, **names: str) -> list[Priced]:
        """Spans with start in [start, end) whose feature / user_id / endpoint equal ``names`` ('' = None)."""
        out = []
        for p in self.priced:
            s = p.span
            if start_ns is not None and s.start_ns < start_ns:
                continue
            if end_ns is not None and s.start_ns >= end_ns:
                continue
            if any((getattr(s, k) or "") != v for k, v in names.items()):
                continue
            out.append(p)
        return out

    def by(self, dim: str, priced: list[Priced] | None = None) -> dict[str, dict[str, object]]:
        """Per value of ``dim``: cost, spans, requests (root spans), calls, unpriced, errors, services."""
        out: dict[str, dict[str, object]] = {}
        for p in self.priced if priced is None else priced:
            k = getattr(p.span, dim) or ""
            row = out.setdefault(
                k, {"cost": 0, "spans": 0, "requests": 0, "calls": 0.0, "unpriced": 0, "errors": 0, "services": {}}
            )
            row["cost"] += p.cost  # type: ignore[operator]
            row["spans"] += 1  # type: ignore[operator]
            row["requests"] += p.span.parent_id is None  # type: ignore[operator]
            row["calls"] += p.span.weight  # type: ignore[operator]
            row["unpriced"] += p.unpriced  # type: ignore[operator]
            row["errors"] += p.span.error  # type: ignore[operator]
            svc: dict[str, int] = row["services"]  # type: ignore[assignment]
            for name, c in p.services.items():
                svc[name] = svc.get(name, 0) + c
        return out

    def loaded(self, priced: list[Priced] | None = None) -> dict[str, int]:
        """Fully-loaded cost: each span's cost added once to every distinct feature on its path."""
        out: dict[str, int] = defaultdict(int)
        for p in self.priced if priced is None else priced:
            for f in dict.fromkeys(p.span.path or (p.span.feature,)):
                out[f] += p.cost
        return dict(out)


def dash_mismatches(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """``dash_*`` rows that differ from the sums of the rollup rows they mirror (either side missing counts).

    All-zero dashboard rows are left out: restating a bucket to nothing leaves them behind, harmlessly.
    """
    sums = "cost_nano, spans, errors, requests, unpriced, var_nano2"
    bad: list[tuple[Any, ...]] = []
    for g in GRAINS:
        for dim in DIMS:
            wide = {
                r[:3]: r[3:]
                for r in conn.execute(
                    f"SELECT service, {dim}, bucket, {', '.join(f'SUM({c})' for c in sums.split(', '))} "
                    f"FROM rollup_{g} GROUP BY service, {dim}, bucket"
                )
            }
            dash = {
                r[:3]: r[3:]
                for r in conn.execute(
                    f"SELECT service, value, bucket, {sums} FROM dash_{g} "
                    "WHERE dim = ? AND NOT (cost_nano = 0 AND spans = 0 AND unpriced = 0)",
                    (dim,),
                )
            }
            for key in wide.keys() | dash.keys():
                w, d = wide.get(key), dash.get(key)
                if w is None or d is None or w[:5] != d[:5] or w[5] != pytest.approx(d[5]):
                    bad.append((g, dim, key, w, d))
    # dash_all (kept by triggers) is dash_day summed over every day, value for value; gone with its last day
    has_all = conn.execute("SELECT count(*) FROM meta WHERE key = 'dash_all'").fetchone()[0]
    if has_all:
        per_day = {
            r[:3]: r[3:]
            for r in conn.execute(
                f"SELECT dim, service, value, {', '.join(f'SUM({c})' for c in sums.split(', '))} FROM dash_day "
                "GROUP BY dim, service, value"
            )
        }
        every = {r[:3]: r[3:] for r in conn.execute(f"SELECT dim, service, value, {sums} FROM dash_all")}
        for key in per_day.keys() | every.keys():
            p, a = per_day.get(key), every.get(key)
            if p is None or a is None or p[:5] != a[:5] or p[5] != pytest.approx(a[5]):
                bad.append(("all", key, p, a))
    return bad
