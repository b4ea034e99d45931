"""Small helpers for pilot tests: refresh and settle, wait for a condition with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual.pilot import Pilot

from tui.app import SpendtraceApp

#: The terminal size every pilot and snapshot test uses.
SIZE = (150, 36)


async def settle(app: SpendtraceApp, pilot: Pilot[None]) -> None:
    """Run one refresh cycle for the visible screen and let the UI process what it posted."""
    await pilot.pause()
    pending = [w for w in app.workers if w.group != "alert-feed"]  # the feed never ends
    if pending:  # (an empty list would mean "wait for every worker")
        await app.workers.wait_for_complete(pending)
    await app.refresh_now()
    await pilot.pause()


async def until(pilot: Pilot[None], cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``cond`` (letting the app run) until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)
        await asyncio.sleep(0)
