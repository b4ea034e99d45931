"""The Textual app: wires the screens, the refresh worker, the alert feed and the global keys."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from textual import on, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import reactive

from spendtrace.server.model.dashboard import Overview
from spendtrace.server.store.base import DashboardReads, open_dashboard
from tui.commands import SpendtraceCommands
from tui.messages import AlertArrived, OpenRequest, SwitchScreen
from tui.refresher import Refresher
from tui.screens.alerts import AlertsScreen
from tui.screens.base import DataScreen
from tui.screens.dimension import EndpointsScreen, LiveScreen, TenantsScreen
from tui.screens.help import HelpScreen
from tui.screens.reconcile import ReconcileScreen
from tui.screens.requests import RequestsScreen
from tui.screens.tree import RequestTreeScreen
from tui.screens.trends import TrendsScreen
from tui.widgets.screen_tabs import SCREENS

#: Container allocations between two young-generation garbage collections while the app runs (Python's
#: default is 700). A refresh that swaps 100 table rows allocates tens of thousands of objects, nearly
#: all freed by reference counting; at 700 the collector ran about 16 times per refresh, and every
#: tenth run was an older-generation pass of milliseconds (at 100,000 tenants, issue #16).
GC_YOUNG_THRESHOLD = 10_000


class SpendtraceApp(App[None]):
    """spendtrace-tui: live spend per feature, tenant, endpoint and request, alerts, trends, reconciliation."""

    TITLE = "spendtrace"
    CSS_PATH = "styles/app.tcss"
    COMMANDS = App.COMMANDS | {SpendtraceCommands}
    MODES: ClassVar[dict[str, Any]] = {
        "live": LiveScreen,
        "tenants": TenantsScreen,
        "endpoints": EndpointsScreen,
        "requests": RequestsScreen,
        "alerts": AlertsScreen,
        "trends": TrendsScreen,
        "reconcile": ReconcileScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("p", "toggle_pause", "Pause"),
        *[Binding(str(i), f"show('{name}')", name, show=False) for i, name in enumerate(SCREENS, start=1)],
    ]

    overview: reactive[Overview | None] = reactive(None)
    paused: reactive[bool] = reactive(False)

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        bootstrap: str | None = None,
        alerts_topic: str = "spendtrace.alerts",
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
        refresh_interval: float = 0.25,
        export_dir: str | os.PathLike[str] | None = None,
        live: bool = True,
        actuals_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        #: the store: a SQLite path, or a URL (``chdb:///dir``, ``clickhouse://...``) kept as given
        self.db_path = os.fspath(db_path)
        self.db_label = _label(self.db_path)
        self.bootstrap = bootstrap
        self.alerts_topic = alerts_topic
        self.clock = clock
        self.refresh_interval = refresh_interval
        self.export_dir = Path(export_dir) if export_dir else Path.cwd()
        self.store: DashboardReads = open_dashboard(self.db_path, clock=clock, monotonic=monotonic)
        self.refresher = Refresher(self, self.store, monotonic=monotonic)
        self.live = live
        #: a saved Cost Explorer response the Reconciliation screen offers first (the demo's bill)
        self.actuals_file = os.fspath(actuals_file) if actuals_file is not None else None
        self.live_alerts: list[dict[str, Any]] = []
        self.last_export: Path | None = None
        self.last_copied: str | None = None
        self._gc_threshold: tuple[int, ...] = gc.get_threshold()

    async def on_mount(self) -> None:
        self._gc_threshold = gc.get_threshold()
        if self._gc_threshold[0] < GC_YOUNG_THRESHOLD:
            gc.set_threshold(GC_YOUNG_THRESHOLD, *self._gc_threshold[1:])
        await self.store.open()
        await self.switch_mode("live")
        if self.live:
            self.set_interval(self.refresh_interval, self._tick)
        self.request_refresh(force=True)
        if self.bootstrap:
            self._tail_alerts()

    async def on_unmount(self) -> None:
        gc.set_threshold(*self._gc_threshold)
        await self.store.close()

    # -- refresh -------------------------------------------------------------------------------

    def _tick(self) -> None:
        if not self.paused and not self.refresher.busy:
            self._refresh_worker(False)

    def request_refresh(self, force: bool = False) -> None:
        """Refresh soon (at once when idle); ``force`` re-queries even if the store did not change."""
        if force:
            # Noted on the refresher, not only passed to the worker: the refresh group is exclusive, so
            # an interval tick starting its worker before this one runs cancels it, and the forced
            # refresh would be lost (seen as a resume with no refresh on a busy machine).
            self.refresher.force = True
        if not self.refresher.busy and (not self.paused or force):
            self._refresh_worker(force)

    @work(exclusive=True, group="refresh", exit_on_error=False)
    async def _refresh_worker(self, force: bool) -> None:
        await self.refresher.cycle(force)
        while self.refresher.force and not self.paused:  # a forced refresh was asked for meanwhile
            await self.refresher.cycle(True)

    async def refresh_now(self) -> bool:
        """Run one refresh cycle and wait for it (tests and benchmarks)."""
        return await self.refresher.cycle(force=True)

    # -- alerts from the broker ----------------------------------------------------------------

    @work(exclusive=True, group="alert-feed", exit_on_error=False)
    async def _tail_alerts(self) -> None:
        from tui.alert_feed import tail_alerts

        assert self.bootstrap
        async for payload in tail_alerts(self.bootstrap, self.alerts_topic):
            self.post_message(AlertArrived(payload))

    def on_alert_arrived(self, message: AlertArrived) -> None:
        self.live_alerts.append(message.payload)
        text = str(message.payload.get("message") or message.payload.get("rule_name") or "alert fired")
        self.notify(text, title="Spend alert", severity="warning", markup=False, timeout=8)
        if isinstance(self.screen, AlertsScreen):
            self.screen.add_live(message.payload)
        self.request_refresh(force=True)

    # -- navigation ----------------------------------------------------------------------------

    async def action_show(self, mode: str) -> None:
        """Switch to a tab screen (1-7); from a pushed screen (a call tree) go back to the tabs first."""
        while len(self.screen_stack) > 1 and not isinstance(self.screen, DataScreen):
            self.pop_screen()
        if self.current_mode != mode:
            await self.switch_mode(mode)
        self.request_refresh(force=True)

    @on(SwitchScreen)
    async def _switch(self, message: SwitchScreen) -> None:
        await self.action_show(message.mode)

    @on(OpenRequest)
    def _open_request(self, message: OpenRequest) -> None:
        self.push_screen(RequestTreeScreen(message.request_id))

    @work(group="tree", exit_on_error=False)
    async def load_tree(self, screen: RequestTreeScreen) -> None:
        """Query a request's spans for its tree screen (async worker, SQL off the UI thread)."""
        await screen.load(self.store)

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.request_refresh(force=True)

    def action_help(self) -> None:
        keys: dict[str, str] = {}
        for cls in type(self.screen).__mro__:  # the screen's own keys, then its bases'
            for b in getattr(cls, "BINDINGS", []) if cls.__module__.startswith("tui.") else []:
                if isinstance(b, Binding) and b.description and b.key not in keys:
                    keys[b.key_display or b.key] = b.description
        self.push_screen(HelpScreen([(k.replace("slash", "/"), d) for k, d in keys.items()]))

    async def run_screen_action(self, action: str, mode: str | None = None) -> None:
        """Run ``action`` on the current screen (after switching to ``mode`` when given), for the palette."""
        if mode and self.current_mode != mode:
            await self.action_show(mode)
        await self.screen.run_action(action)


def _label(store: str) -> str:
    """What the status bar names the store by: a SQLite file's name, else scheme://host (or data dir), no secret."""
    if "://" not in store:
        return Path(store).name
    parts = urlsplit(store)
    return f"{parts.scheme}://{parts.hostname or Path(parts.path).name}"
