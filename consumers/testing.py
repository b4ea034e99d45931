"""Helpers shared by the pipeline tests and benchmarks: synthetic spans, producing, waiting for a drain.

Not used by the workers themselves. "Drained" is judged from the offsets stored in the database
against the produce acknowledgements, because the embedded broker's ListOffsets "latest" answers
the last batch's base offset rather than the high watermark (so ``end_offsets`` cannot say it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from aiokafka import AIOKafkaProducer

from spendtrace.errors import StorageError
from spendtrace.schema import Span, UsageItem, encode_span
from spendtrace.server.store.base import open_ingest_store
from spendtrace.server.topics import ensure_topics

__all__ = ["make_spans", "produce", "produce_spans", "stored_offsets", "wait_for"]

FEATURES = ("api", "search", "product_details", "ai_recommendations", "checkout")
TENANTS = ("tenant-acme", "tenant-globex", "tenant-initech")
ENDPOINTS = ("/api/search", "/api/recommend", "/api/checkout")


def make_spans(n: int, seed: int = 7, start_ns: int | None = None) -> list[Span]:
    """``n`` spans in requests of 4-5, shaped like the SDK's: nested features, 3 tenants, DynamoDB/Bedrock/S3."""
    rng = random.Random(seed)
    now = time.time_ns() - 3_600 * 10**9 if start_ns is None else start_ns
    spans: list[Span] = []
    r = 0
    while len(spans) < n:
        r += 1
        rid = f"req-{seed}-{r:09d}"
        tenant, endpoint = rng.choice(TENANTS), rng.choice(ENDPOINTS)
        t0 = now + r * 1_000_000
        root = f"{rid}-0"
        spans.append(Span(root, None, rid, "api", None, endpoint, tenant, t0, 5_000_000, 1_000_000, path=("api",)))
        parent = root
        path: tuple[str, ...] = ("api",)
        for depth, feat in enumerate(rng.sample(FEATURES[1:], rng.randint(3, 4)), 1):
            path = (*path, feat)
            second = (
                UsageItem("bedrock_claude_3_haiku", "bedrock", input_tokens=rng.randint(100, 900), output_tokens=99)
                if feat == "ai_recommendations"
                else UsageItem("s3_get", "s3", count=1.0)
            )
            usage = (UsageItem("dynamodb_read", "dynamodb", count=float(rng.randint(1, 5))), second)
            sid = f"{rid}-{depth}"
            spans.append(
                Span(
                    sid, parent, rid, feat, "op", endpoint, tenant, t0 + depth, 10**6, 5 * 10**5, usage=usage, path=path
                )
            )
            parent = sid
    return spans[:n]


async def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    *,
    partitions: int = 6,
    max_request_size: int = 4 * 1024 * 1024,
    compression: str | None = None,
) -> dict[int, int]:
    """Publish ``(key, value)`` messages in order; return partition -> next offset after the last one written."""
    await ensure_topics(bootstrap, [topic], partitions=partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_batch_size=1 << 20,
        max_request_size=max_request_size,
        compression_type=compression,
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        ends: dict[int, int] = {}
        for md in await asyncio.gather(*futures):
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
        return ends
    finally:
        await producer.stop()


async def produce_spans(
    bootstrap: str, topic: str, spans: Iterable[Span], *, partitions: int = 6, compression: str | None = None
) -> dict[int, int]:
    """Publish spans as the SDK does (msgpack value, key = request id)."""
    messages = ((s.request_id.encode(), encode_span(s)) for s in spans)
    return await produce(bootstrap, topic, messages, partitions=partitions, compression=compression)


def stored_offsets(db: str | Path, group: str, topic: str) -> dict[int, int]:
    """partition -> next offset as applied to the store (``IngestStore.stored_offsets``), read-only.

    Empty while there is nothing to read yet: no file, or a file whose schema a worker is still creating.
    """
    if "://" not in str(db) and not Path(db).exists():
        return {}
    try:
        store = open_ingest_store(db, readonly=True)
    except StorageError:  # not created (or not migrated) yet
        return {}
    try:
        return store.stored_offsets(group, topic)
    except StorageError:  # a server store whose tables a worker is still creating
        return {}
    finally:
        store.close()


async def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.05,
    *,
    progress: Callable[[], object] | None = None,
) -> None:
    """Poll ``condition`` until it holds; raise ``TimeoutError`` naming ``what`` after ``timeout`` seconds.

    With ``progress``, the timeout counts from the last change of ``progress()`` (e.g. offsets stored so
    far): work whose size depends on the machine's speed fails when it stalls, not when it is slow.
    """
    deadline = time.monotonic() + timeout
    seen = progress() if progress is not None else None
    while not condition():
        if progress is not None and (now := progress()) != seen:
            seen, deadline = now, time.monotonic() + timeout
        if time.monotonic() > deadline:
            stalled = f"; no progress from {seen!r}" if progress is not None else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{stalled}")
        await asyncio.sleep(interval)
