"""A tiny Prometheus text endpoint for the workers' counters (``--metrics-port``), no extra dependency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import fields

from consumers.worker import Worker, WorkerStats

__all__ = ["render_metrics", "serve_metrics"]

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
    return "\n".join(lines) + "\n"


async def serve_metrics(port: int, workers: Callable[[], list[Worker]], host: str = "0.0.0.0") -> asyncio.Server:
    """Answer every HTTP request on ``host:port`` with the current metrics."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            body = render_metrics(workers()).encode()
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
