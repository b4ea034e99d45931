"""Synthetic spend data for benchmarks: realistic request trees, stored through the real ingest path.

A ``Shape`` says how much (spans, days, tenants); ``generate`` yields batches of ``Span``s in time
order (eight endpoints, each a fixed tree of features, tenants drawn with a Zipf-like skew,
Bedrock / OpenAI / DynamoDB / S3 / SQS usage, 2% of requests sampled at 10%); ``cached_db``
builds the database once with ``prepare_batch`` + ``write_batch_sync`` (then applies the default
retention, as the workers would) and keeps it under /tmp keyed by the shape.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from spendtrace.server.store.sqlite._retention import apply_retention

__all__ = ["ENDPOINTS", "NOW_NS", "Shape", "build_db", "cached_db", "generate"]

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

    def key(self) -> str:
        """A short stable id of the shape (and of this generator's version) for cache file names."""
        return hashlib.sha256(repr(("v2", asdict(self))).encode()).hexdigest()[:12]


def generate(shape: Shape, batch: int = 5000) -> Iterator[list[Span]]:
    """Batches of spans (whole requests, in time order) adding up to at least ``shape.spans``."""
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


def build_db(path: Path, shape: Shape) -> dict[str, float]:
    """Store ``shape``'s spans at ``path`` through the real ingest path; returns spans and seconds taken."""
    book = PriceBook.default()
    conn = connect(path)
    n = 0
    t0 = time.perf_counter()
    try:
        for spans in generate(shape):
            write_batch_sync(conn, prepare_batch(spans, book))
            n += len(spans)
        apply_retention(conn, now_ns=shape.now_ns)  # minute rollups older than 2 days go, as in production
        conn.execute("PRAGMA optimize")
    finally:
        conn.close()
    return {"spans": n, "seconds": time.perf_counter() - t0}


def cached_db(shape: Shape, *, log: bool = True) -> Path:
    """The database for ``shape``, built on first use and kept in ``CACHE_DIR`` between runs."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"spans-{shape.spans}-{shape.key()}.db"
    if path.exists():
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
