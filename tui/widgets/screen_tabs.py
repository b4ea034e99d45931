"""The tab bar of screens (1-7); clicking a tab switches screen like its number key does."""

from __future__ import annotations

from textual import events
from textual.widgets import Tab, Tabs

from tui.messages import SwitchScreen

#: Mode name -> tab label, in key order (1..7).
SCREENS: dict[str, str] = {
    "live": "Live",
    "tenants": "Tenants",
    "endpoints": "Endpoints",
    "requests": "Requests",
    "alerts": "Alerts",
    "trends": "Trends",
    "reconcile": "Reconciliation",
}

#: Shorter labels for a terminal too narrow for every full one (80 columns: the last tab would be cut).
SHORT: dict[str, str] = {"reconcile": "Reconcile"}
#: Cells the full labels take, each tab padded by one on either side.
FULL_WIDTH = sum(len(f"{i} {label}") + 2 for i, label in enumerate(SCREENS.values(), start=1))


class ScreenTabs(Tabs):
    """Tabs for every screen, with the given one active; never takes focus from the tables."""

    can_focus = False

    def __init__(self, active: str) -> None:
        tabs = [Tab(f"{i} {label}", id=name) for i, (name, label) in enumerate(SCREENS.items(), start=1)]
        super().__init__(*tabs, active=active)
        self._mine = active

    def on_resize(self, event: events.Resize) -> None:
        """Full labels where they fit, the short ones where they do not."""
        short = event.size.width < FULL_WIDTH
        for i, (name, label) in enumerate(SCREENS.items(), start=1):
            if name in SHORT:
                for tab in self.query(f"#tabs-list > #{name}").results(Tab):
                    tab.label = f"{i} {SHORT[name] if short else label}"

    def validate_active(self, active: str) -> str:
        """The tab id, or "" when its tab is not in the bar: a bar whose screen was removed before the bar's
        own mount ran (keys pressed faster than a loaded machine mounts screens) has no tabs left, and
        Textual's check would raise from that mount handler and take the app down."""
        if active and not self.query(f"#tabs-list > #{active}"):
            return ""
        return active

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        if event.tab.id and event.tab.id != self._mine:
            self.active = self._mine  # this screen's bar keeps pointing at this screen
            self.post_message(SwitchScreen(event.tab.id))
