"""The refresh cycle: poll the store's change token, and when it moved re-query the visible screen.

One cycle = the header's overview query and the active screen's ``fetch``, awaited together (async reads,
which the store runs off the UI thread: a ClickHouse store runs them at once) + its ``apply`` (by-key widget
updates on the UI thread). The app runs cycles in an exclusive worker and never starts one while another is
running, so refreshes never overlap. Time-window views also refresh every ``slow_every`` seconds, because "the
last hour" moves even when nothing new is written.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from spendtrace.server.store.base import DashboardReads
from tui.screens.base import DataScreen


class Refresher:
    """Decides when to query and applies the results to the app's screens."""

    def __init__(
        self,
        app: Any,
        store: DashboardReads,
        *,
        slow_every: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.app = app
        self.store = store
        self.slow_every = slow_every
        self.monotonic = monotonic
        self.version: int | None = None
        self.busy = False
        self.force = True
        self.cycles = 0  # cycles that re-queried something
        self.durations: deque[float] = deque(maxlen=1000)  # ms of each re-querying cycle (queries + update)
        self._last_full = 0.0

    async def cycle(self, force: bool = False) -> bool:
        """Run one refresh; returns whether anything was re-queried."""
        if self.busy:
            self.force = self.force or force
            return False
        self.busy = True
        try:
            force = force or self.force
            self.force = False
            store = self.store
            version = await store.change_token()
            now = self.monotonic()
            slow = now - self._last_full >= self.slow_every
            changed = version != self.version
            screen = self.app.screen
            stale = isinstance(screen, DataScreen) and screen.seen_version != version
            if not (changed or force or slow or stale):
                return False
            t0 = time.perf_counter()
            if isinstance(screen, DataScreen):
                self.app.overview, data = await asyncio.gather(store.overview(), screen.fetch(store))
                if screen.is_attached:
                    screen.apply(data)
                    screen.seen_version = version
            else:
                self.app.overview = await store.overview()
            self.version = version
            self._last_full = now
            self.cycles += 1
            self.durations.append((time.perf_counter() - t0) * 1000)
            return True
        finally:
            self.busy = False
