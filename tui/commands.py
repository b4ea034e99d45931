"""The command palette provider: every screen and action of the app, searchable by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.widgets.screen_tabs import SCREENS


class SpendtraceCommands(Provider):
    """Go to any screen, pause, export, copy, filter, add a rule, run reconciliation, change windows."""

    def _commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        app: Any = self.app
        cmds: list[tuple[str, Callable[[], Any], str]] = [
            (f"Go to {label}", partial(app.action_show, name), f"show the {label} screen ({i})")
            for i, (name, label) in enumerate(SCREENS.items(), start=1)
        ]
        cmds += [
            ("Pause / resume refresh", app.action_toggle_pause, "stop or restart live updates (p)"),
            ("Export table as CSV", partial(app.run_screen_action, "export"), "write the current table (ctrl+s)"),
            ("Copy selected row", partial(app.run_screen_action, "copy_row"), "to the clipboard (y)"),
            ("Filter table", partial(app.run_screen_action, "filter"), "show the filter box (/)"),
            ("Cycle time window", partial(app.run_screen_action, "cycle_window"), "1h 24h 7d 30d all (w)"),
            ("Requests: recent / most expensive", partial(app.run_screen_action, "toggle_order"), "(o)"),
            ("Add alert rule", partial(app.run_screen_action, "add_rule", "alerts"), "open the rule form (a)"),
            ("Remove alert rule", partial(app.run_screen_action, "remove_rule", "alerts"), "selected rule (d)"),
            ("Trends: more days", partial(app.run_screen_action, "days(1)", "trends"), "(+)"),
            ("Trends: fewer days", partial(app.run_screen_action, "days(-1)", "trends"), "(-)"),
            ("Run reconciliation", partial(app.run_screen_action, "run", "reconcile"), "(ctrl+r)"),
            ("Restate history…", partial(app.run_screen_action, "restate", "reconcile"), "asks first (R)"),
            ("Refresh now", partial(app.request_refresh, True), "query the store again"),
            ("Help", app.action_help, "all keys (?)"),
            ("Quit", app.action_quit, "(q)"),
        ]
        return cmds

    async def discover(self) -> Hits:
        for name, run, help_text in self._commands():
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, run, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), run, help=help_text)
