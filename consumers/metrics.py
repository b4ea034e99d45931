"""A tiny Prometheus text endpoint for the workers (``--metrics-port``), no extra dependency.

Besides each worker's counters it serves the batch commit latency histogram, the consumer lag of
every partition the process holds (high watermark minus the offset stored with the last committed
batch) and the spend stored in the database (``spendtrace.server.metrics.render_store_metrics``: cost in
total, per feature and per service, spans, dead letters, unpriced usage, alerts, webhook failures).
Labels stay bounded: worker index, topic and partition, feature, service; tenants never.

Scrapes read the database on one thread of their own (``spendtrace-metrics``), never in the
event loop's default executor, which the workers' ingest uses; scrapes that arrive while a read is
running share its result, so any number of scrapers costs at most one read at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields

from consumers.histogram import COMMIT_BUCKETS, Histogram
from consumers.worker import Worker, WorkerStats

__all__ = [
    "COMMIT_BUCKETS",
    "Histogram",
    "StoreReads",
    "render_endpoint",
    "render_lag",
    "render_metrics",
    "serve_metrics",
]

log = logging.getLogger(__name__)

_COUNTERS = {f.name for f in fields(WorkerStats)} - {"last_commit_ns"}


def render_metrics(workers: list[Worker]) -> str:
    """Prometheus exposition text: one series per counter and worker."""
    lines: list[str] = []
    for name in sorted(_COUNTERS):
        metric = f"spendtrace_consumer_{name}_total"
        lines.append(f"# TYPE {metric} counter")
        for i, w in enumerate(workers):
            lines.append(f'{metric}{{worker="{i}"}} {getattr(w.stats, name)}')
    lines.append("# TYPE spendtrace_consumer_last_commit_seconds gauge")
    for i, w in enumerate(workers):
        lines.append(f'spendtrace_consumer_last_commit_seconds{{worker="{i}"}} {w.stats.last_commit_ns / 1e9:.3f}')
    lines.append("# TYPE spendtrace_consumer_hook_dropped_total counter")
    for i, w in enumerate(workers):
        lines.append(f'spendtrace_consumer_hook_dropped_total{{worker="{i}"}} {w.hooks.dropped}')
    lines.append("# HELP spendtrace_batch_commit_seconds Time to write and commit one batch's transaction.")
    lines.append("# TYPE spendtrace_batch_commit_seconds histogram")
    for i, w in enumerate(workers):
        lines.extend(w.commit_seconds.samples("spendtrace_batch_commit_seconds", f'worker="{i}"'))
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


async def render_lag(workers: list[Worker], stored: dict[int, int]) -> str:
    """``spendtrace_consumer_lag{topic,partition}`` for every partition these workers hold.

    Lag is the partition's high watermark (from the last fetch) minus ``stored[partition]``, the
    next offset recorded with the last committed batch; a partition with no batch committed yet is
    measured from the consumer's position. Partitions not fetched from yet have no high watermark
    and are left out.
    """
    lines = [
        "# HELP spendtrace_consumer_lag Messages in the partition not yet committed to the database.",
        "# TYPE spendtrace_consumer_lag gauge",
    ]
    seen: set[tuple[str, int]] = set()
    for w in workers:
        consumer = w.consumer
        if consumer is None:
            continue
        for tp in sorted(consumer.assignment()):
            if (tp.topic, tp.partition) in seen:
                continue
            high = consumer.highwater(tp)
            if high is None:
                continue
            done = stored.get(tp.partition) if tp.topic == w.config.topic else None
            if done is None:
                try:
                    done = await asyncio.wait_for(consumer.position(tp), 1.0)
                except Exception:  # reassigned or not positioned yet: no number rather than a wrong one
                    continue
            seen.add((tp.topic, tp.partition))
            labels = f'topic="{_escape(tp.topic)}",partition="{tp.partition}"'
            lines.append(f"spendtrace_consumer_lag{{{labels}}} {max(0, high - done)}")
    return "\n".join(lines) + "\n"


def _read_store(db_path: str, group: str, topic: str) -> tuple[str, dict[int, int]]:
    """The store metrics text and the stored offsets, read-only, on connections of their own."""
    from spendtrace.server.metrics import render_store_metrics
    from spendtrace.server.store.base import open_ingest_store, open_store

    reader = open_store(db_path, readonly=True)
    try:
        text = render_store_metrics(reader)
    finally:
        reader.close()
    offsets = open_ingest_store(db_path, readonly=True)
    try:
        return text, offsets.stored_offsets(group, topic)
    finally:
        offsets.close()


class StoreReads:
    """The scrapes' database reads, on one thread of their own; concurrent scrapes share one read."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: dict[tuple[str, str, str], asyncio.Future[tuple[str, dict[int, int]]]] = {}

    async def read(self, db_path: str, group: str, topic: str) -> tuple[str, dict[int, int]]:
        """The store metrics text and stored offsets (``_read_store``), joining a read already under way."""
        key = (db_path, group, topic)
        fut = self._inflight.get(key)
        if fut is None or fut.done():
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spendtrace-metrics")
            fut = asyncio.get_running_loop().run_in_executor(self._pool, _read_store, db_path, group, topic)
            self._inflight[key] = fut
        return await asyncio.shield(fut)

    def close(self) -> None:
        """Let the reading thread end once its current read is done."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


async def render_endpoint(workers: list[Worker], reads: StoreReads | None = None) -> str:
    """Everything ``--metrics-port`` serves: worker counters, commit latency, lag and the stored spend.

    The database is read by ``reads`` (a thread of its own, not the loop's default executor) so a
    scrape never stalls the workers; if it cannot be read yet (the first worker is still creating
    it) the store families are left out of this scrape.
    """
    text = render_metrics(workers)
    if not workers:
        return text
    cfg = workers[0].config
    store = ""
    stored: dict[int, int] = {}
    own = reads is None
    reader = StoreReads() if reads is None else reads
    try:
        store, stored = await reader.read(cfg.db_path, cfg.group_id, cfg.topic)
    except Exception as exc:
        log.info("metrics: the database is not readable yet: %s", exc)
    finally:
        if own:
            reader.close()
    return text + await render_lag(workers, stored) + store


async def serve_metrics(port: int, workers: Callable[[], list[Worker]], host: str = "127.0.0.1") -> asyncio.Server:
    """Answer every HTTP request on ``host:port`` (loopback by default) with the current metrics."""
    reads = StoreReads()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = (await render_endpoint(workers(), reads)).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
