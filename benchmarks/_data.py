"""Synthetic spend data for benchmarks: realistic request trees, stored through the real ingest path.

A ``Shape`` says how much (spans, days, tenants, and optionally features and endpoints);
``generate`` yields batches of ``Span``s in time order. With ``features`` and ``endpoints`` left at 0
it is the small shop: eight endpoints, each a fixed tree of features. With them set (the scale
benchmark: 100,000 tenants, 10,000 features, 2,000 endpoints over a year) every endpoint is a
request tree of 2-6 spans whose root feature is fixed and whose other features are drawn per
request; endpoints, features and tenants are all drawn with a Zipf (1/rank) skew, so a few are
hot and most have a handful of requests. Either way: Bedrock / OpenAI / DynamoDB / S3 / SQS usage,
a key no price covers, 2% of requests sampled at 10%. ``cached_db`` (SQLite) and ``cached_store``
(SQLite or chDB) build the store once through the real ingest path (``prepare_batch`` then the
backend's batch write, rollups included) and keep it under /tmp keyed by the shape.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from spendtrace.server.store.sqlite._retention import apply_retention

__all__ = ["ENDPOINTS", "NOW_NS", "Shape", "build_db", "cached_db", "cached_store", "generate"]

#: 2026-11-02 12:00 UTC, "now" for generated data (the tests' fixed clock).
NOW_NS = 1_793_620_800_000_000_000
CACHE_DIR = Path(os.environ.get("SPENDTRACE_BENCH_CACHE", "/tmp/spendtrace-bench"))

_U = UsageItem
# endpoint -> list of (feature, parent index or -1, usage items)
ENDPOINTS: dict[str, list[tuple[str, int, tuple[UsageItem, ...]]]] = {
    "/api/search": [
        ("api", -1, ()),
        ("search", 0, (_U("dynamodb_read", count=4.0),)),
        ("product_details", 1, (_U("dynamodb_read", count=1.0),)),
        ("product_details", 1, (_U("dynamodb_read", count=1.0),)),
        ("product_details", 1, (_U("dynamodb_read", count=1.0),)),
        ("cache", 0, (_U("s3_get", count=1.0),)),
    ],
    "/api/recommend": [
        ("api", -1, ()),
        ("ai_recommendations", 0, (_U("bedrock_claude_3_haiku", input_tokens=900, output_tokens=220),)),
        ("product_details", 1, (_U("dynamodb_read", count=2.0),)),
        ("cache", 0, (_U("s3_get", count=1.0),)),
    ],
    "/api/chat": [
        ("api", -1, ()),
        ("chat", 0, (_U("openai_gpt4o", input_tokens=1500, output_tokens=400),)),
        ("embeddings", 1, (_U("bedrock_titan_embed_text_v2", input_tokens=300),)),
        ("history", 1, (_U("dynamodb_read", count=3.0), _U("dynamodb_write", count=1.0))),
    ],
    "/api/checkout": [
        ("api", -1, ()),
        ("checkout", 0, (_U("dynamodb_write", count=2.0),)),
        ("payments", 1, (_U("sqs_send", count=1.0),)),
        ("inventory", 1, (_U("dynamodb_write", count=3.0),)),
        ("receipts", 1, (_U("s3_put", count=1.0, bytes=40_000),)),
    ],
    "/api/upload": [
        ("api", -1, ()),
        ("uploads", 0, (_U("s3_put", count=1.0, bytes=2_000_000),)),
        ("thumbnails", 1, (_U("s3_get", count=1.0), _U("s3_put", count=3.0))),
    ],
    "/api/profile": [
        ("api", -1, ()),
        ("profile", 0, (_U("dynamodb_read", count=1.0),)),
    ],
    "/api/reports": [
        ("api", -1, ()),
        ("reports", 0, (_U("s3_list", count=2.0), _U("s3_get", count=20.0))),
        ("ai_summaries", 1, (_U("bedrock_claude_3_sonnet", input_tokens=4000, output_tokens=600),)),
        ("legacy_export", 1, (_U("mainframe_export", count=1.0),)),  # a key no price covers
    ],
    "/jobs/batch": [
        ("batch_processing", -1, (_U("sqs_receive", count=10.0),)),
        ("batch_item", 0, (_U("dynamodb_write", count=1.0),)),
        ("batch_item", 0, (_U("dynamodb_write", count=1.0),)),
    ],
}
_WEIGHTS = {"/api/search": 30, "/api/profile": 25, "/api/recommend": 12, "/api/chat": 8, "/api/checkout": 8}


@dataclass(frozen=True)
class Shape:
    """How much data: total spans, spread over ``days`` days before ``now_ns``, from ``tenants`` tenants."""

    spans: int = 5_000_000
    days: int = 30
    tenants: int = 100
    seed: int = 1
    now_ns: int = NOW_NS
    features: int = 0  # 0 (with endpoints 0): the eight fixed endpoint trees
    endpoints: int = 0

    def key(self) -> str:
        """A short stable id of the shape (and of this generator's version) for cache file names."""
        d = asdict(self)
        if not (self.features or self.endpoints):  # the small shop keeps its cache key (and cached files)
            d.pop("features")
            d.pop("endpoints")
        return hashlib.sha256(repr(("v2", d)).encode()).hexdigest()[:12]

    @property
    def scaled(self) -> bool:
        """Generated endpoints and features instead of the eight fixed trees."""
        return bool(self.features or self.endpoints)


def generate(shape: Shape, batch: int = 5000) -> Iterator[list[Span]]:
    """Batches of spans (whole requests, in time order) adding up to at least ``shape.spans``."""
    if shape.scaled:
        yield from _generate_scaled(shape, batch)
        return
    rng = random.Random(shape.seed)
    endpoints = list(ENDPOINTS)
    ep_weights = [_WEIGHTS.get(e, 4) for e in endpoints]
    avg = sum(len(ENDPOINTS[e]) * w for e, w in zip(endpoints, ep_weights, strict=True)) / sum(ep_weights)
    n_requests = int(shape.spans / avg) + 1
    tenants = [f"tenant-{i:04d}" for i in range(shape.tenants)]
    tenant_weights = [1.0 / (i + 1) for i in range(shape.tenants)]
    t_start = shape.now_ns - shape.days * 86_400 * 1_000_000_000
    step = (shape.now_ns - t_start) // n_requests
    out: list[Span] = []
    made = 0
    for r in range(n_requests):
        endpoint = rng.choices(endpoints, ep_weights)[0]
        user = None if endpoint.startswith("/jobs") else rng.choices(tenants, tenant_weights)[0]
        weight = 10.0 if rng.random() < 0.02 else 1.0
        t = t_start + r * step + rng.randrange(step)
        rid = f"r{r:08x}"
        tree = ENDPOINTS[endpoint]
        paths: list[tuple[str, ...]] = []
        for i, (feature, parent, usage) in enumerate(tree):
            base = paths[parent] if parent >= 0 else ()
            path = base if feature in base else (*base, feature)
            paths.append(path)
            out.append(
                Span(
                    span_id=f"{rid}.{i}",
                    parent_id=None if parent < 0 else f"{rid}.{parent}",
                    request_id=rid,
                    feature=feature,
                    operation=feature,
                    endpoint=endpoint,
                    user_id=user,
                    start_ns=t + i * 1_000_000,
                    duration_ns=(len(tree) - i) * 3_000_000,
                    cpu_ns=1_000_000,
                    error=rng.random() < 0.01,
                    usage=usage,
                    weight=weight,
                    path=path,
                )
            )
        made += len(tree)
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


# usage a span of the scaled shape may carry, with how often (the last: a key no price covers)
_POOL: list[tuple[tuple[UsageItem, ...], float]] = [
    ((), 30),
    ((_U("dynamodb_read", count=2.0),), 25),
    ((_U("dynamodb_write", count=1.0),), 10),
    ((_U("s3_get", count=1.0),), 10),
    ((_U("s3_put", count=1.0, bytes=40_000),), 5),
    ((_U("sqs_send", count=1.0),), 5),
    ((_U("bedrock_claude_3_haiku", input_tokens=900, output_tokens=220),), 8),
    ((_U("openai_gpt4o", input_tokens=1500, output_tokens=400),), 4),
    ((_U("bedrock_titan_embed_text_v2", input_tokens=300),), 2.9),
    ((_U("mainframe_export", count=1.0),), 0.1),
]


def _zipf_cum(n: int) -> list[float]:
    """Cumulative 1/rank weights of ``n`` items (for ``bisect`` draws in O(log n))."""
    return list(itertools.accumulate(1.0 / (i + 1) for i in range(n)))


def _generate_scaled(shape: Shape, batch: int) -> Iterator[list[Span]]:
    """The scale shape: ``endpoints`` request trees over ``features`` features, ``tenants`` tenants, all Zipf-skewed."""
    rng = random.Random(shape.seed)
    n_feat = max(1, shape.features or 50)
    n_ep = max(1, shape.endpoints or 20)
    features = [f"feature-{i:05d}" for i in range(n_feat)]
    endpoints = [f"/api/v1/e{i:04d}" for i in range(n_ep)]
    tenants = [f"tenant-{i:06d}" for i in range(shape.tenants)]
    # each endpoint: its root feature and tree shape (parent index per span), fixed
    trees = []
    for i in range(n_ep):
        size = rng.randint(2, 6)
        trees.append((features[(i * 7919) % n_feat], [-1] + [rng.randrange(j) for j in range(1, size)]))
    cum_ep, cum_feat, cum_ten = _zipf_cum(n_ep), _zipf_cum(n_feat), _zipf_cum(len(tenants))
    pool = [u for u, _ in _POOL]
    cum_pool = list(itertools.accumulate(w for _, w in _POOL))

    def draw(cum: list[float]) -> int:
        return min(len(cum) - 1, bisect.bisect(cum, rng.random() * cum[-1]))

    t_start = shape.now_ns - shape.days * 86_400 * 1_000_000_000
    per_span = (shape.now_ns - t_start) // max(1, shape.spans)  # time advances with the spans made: ends at now
    out: list[Span] = []
    made = 0
    for r in itertools.count():
        if made >= shape.spans:
            break
        e = draw(cum_ep)
        root, parents = trees[e]
        # 40% of requests from a tenant drawn uniformly (the long tail that signed up and tried it), the rest
        # Zipf-skewed; one endpoint in 50 is a job, with no tenant
        who = rng.randrange(len(tenants)) if rng.random() < 0.4 else draw(cum_ten)
        user = tenants[who] if tenants and e % 50 else None
        weight = 10.0 if rng.random() < 0.02 else 1.0
        t = t_start + made * per_span + rng.randrange(max(1, per_span))
        rid = f"r{r:08x}"
        paths: list[tuple[str, ...]] = []
        for i, parent in enumerate(parents):
            feature = root if i == 0 else features[draw(cum_feat)]
            base = paths[parent] if parent >= 0 else ()
            path = base if feature in base else (*base, feature)
            paths.append(path)
            out.append(
                Span(
                    span_id=f"{rid}.{i}",
                    parent_id=None if parent < 0 else f"{rid}.{parent}",
                    request_id=rid,
                    feature=feature,
                    operation=feature,
                    endpoint=endpoints[e],
                    user_id=user,
                    start_ns=t + i * 1_000_000,
                    duration_ns=(len(parents) - i) * 3_000_000,
                    cpu_ns=1_000_000,
                    error=rng.random() < 0.01,
                    usage=pool[draw(cum_pool)] if i else (),
                    weight=weight,
                    path=path,
                )
            )
        made += len(parents)
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def build_db(path: Path, shape: Shape) -> dict[str, float]:
    """Store ``shape``'s spans at ``path`` through the real ingest path; returns spans and seconds taken."""
    book = PriceBook.default()
    conn = connect(path)
    n = 0
    t0 = time.perf_counter()
    try:
        for spans in generate(shape, batch=20_000 if shape.scaled else 5000):
            write_batch_sync(conn, prepare_batch(spans, book))
            n += len(spans)
        apply_retention(conn, now_ns=shape.now_ns)  # minute rollups older than 2 days go, as in production
        conn.execute("PRAGMA optimize")
    finally:
        conn.close()
    return {"spans": n, "seconds": time.perf_counter() - t0}


def _upgrade(path: Path) -> None:
    """Bring a cached file's dashboard tables up to this checkout (what the next batch a worker writes would do)."""
    from spendtrace.server.store.sqlite._dash import dash_statements

    conn = connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql, _ in dash_statements({}):
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()


def cached_db(shape: Shape, *, log: bool = True) -> Path:
    """The database for ``shape``, built on first use and kept in ``CACHE_DIR`` between runs."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"spans-{shape.spans}-{shape.key()}.db"
    if path.exists():
        _upgrade(path)
        return path
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    if log:
        print(f"building {path} with prepare_batch + write_batch_sync (the real ingest path) ...", flush=True)
    stats = build_db(tmp, shape)
    if log:
        print(f"  stored {stats['spans']:,.0f} spans in {stats['seconds']:.0f} s", flush=True)
    tmp.rename(path)
    return path


def cached_store(shape: Shape, backend: str = "sqlite", *, log: bool = True) -> str:
    """A store URL holding ``shape``'s spans (``backend``: ``sqlite`` or ``chdb``), built once under ``CACHE_DIR``.

    chDB: every batch through ``prepare_batch`` and the ClickHouse store's ``write_batch`` (its
    materialized views fill the rollups), into database ``bench`` of a directory kept per shape.
    """
    if backend == "sqlite":
        return f"sqlite://{cached_db(shape, log=log).resolve()}"  # an absolute path: sqlite:///tmp/...
    if backend != "chdb":
        raise ValueError(f"unknown backend {backend!r} (sqlite or chdb)")
    from spendtrace.server.ingest.prepare import prepare_batch as prepare
    from spendtrace.server.store.clickhouse._client import connect as ch_connect
    from spendtrace.server.store.clickhouse._ingest import write_batch

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    root = CACHE_DIR / f"chdb-{shape.spans}-{shape.key()}"
    url = f"chdb://{root}?database=bench"
    if (root / "BUILT").exists():
        return url
    shutil.rmtree(root, ignore_errors=True)
    if log:
        print(f"building {url} with prepare_batch + write_batch (the ClickHouse ingest path) ...", flush=True)
    book = PriceBook.default()
    conn = ch_connect(url)
    n, t0 = 0, time.perf_counter()
    try:
        for spans in generate(shape, batch=50_000 if shape.scaled else 20_000):
            write_batch(conn, prepare(spans, book))
            n += len(spans)
        for table in ("rollup_day", "rollup_hour", "requests"):  # as merged as a store hours after its ingest
            conn.command(f"OPTIMIZE TABLE {table} FINAL")
    finally:
        conn.close()
    (root / "BUILT").write_text(str(n))
    if log:
        print(f"  stored {n:,} spans in {time.perf_counter() - t0:.0f} s", flush=True)
    return url
