"""Post-commit hooks: code that reacts to a committed batch (alert evaluation) off the ingest path.

Hooks run in their own task, fed by a bounded queue, strictly after the batch's transaction
committed. A slow hook never blocks ingestion: when the queue is full the oldest pending result
is dropped (and counted). That is safe for hooks that read the database state they need (alert
rules read rollups over a window), because the next result they get still reflects every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["HookRunner", "PostCommitHook"]

log = logging.getLogger(__name__)

PostCommitHook = Callable[[Any], Awaitable[None]]


class HookRunner:
    """Runs registered hooks, in order, for each committed batch's write result."""

    def __init__(self, maxsize: int = 256) -> None:
        self.hooks: list[PostCommitHook] = []
        self.dropped = 0
        self.failed = 0
        self.completed = 0
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self._task: asyncio.Task[None] | None = None

    def add(self, hook: PostCommitHook) -> None:
        """Register ``hook``; it is awaited with each batch's write result."""
        self.hooks.append(hook)

    def submit(self, result: Any) -> None:
        """Queue ``result`` for the hooks without waiting (drops the oldest pending one when full)."""
        if not self.hooks:
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="spendtrace-post-commit-hooks")
        while True:
            try:
                self._queue.put_nowait(result)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self._queue.get_nowait()
                    self._queue.task_done()
                    self.dropped += 1

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (up to ``timeout`` seconds) until every queued result has been through the hooks."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def close(self, timeout: float = 10.0) -> None:
        """Let queued results finish (bounded by ``timeout``), then stop the hook task."""
        await self.drain(timeout)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            result = await self._queue.get()
            try:
                for hook in self.hooks:
                    try:
                        await hook(result)
                    except Exception:  # a hook's failure is its own; ingestion goes on
                        self.failed += 1
                        log.exception("post-commit hook %r failed", hook)
                self.completed += 1
            finally:
                self._queue.task_done()
