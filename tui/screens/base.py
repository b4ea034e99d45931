"""The base of the tab screens: header, tab bar, filter bar, footer, and the table key handling.

A screen says how to fetch its data (``fetch``, awaited in the app's refresh worker, off the UI
thread's critical path because the store's reads are async and run off the UI thread) and how to show it
(``apply``, on the UI thread, by-key table updates only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Input

from spendtrace.server.store.base import DashboardReads
from tui.format import utc
from tui.widgets.footer import KeyFooter
from tui.widgets.keyed_table import KeyedTable
from tui.widgets.line import Line
from tui.widgets.screen_tabs import ScreenTabs
from tui.widgets.status import StatusHeader


class DataScreen(Screen[None]):
    """A tab screen showing live data from the store."""

    MODE: ClassVar[str] = ""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("ctrl+s", "export", "Export CSV"),
        Binding("y", "copy_row", "Copy"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.seen_version: int | None = None
        self.seen_tick = -1
        self._fitted_width = -1

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield ScreenTabs(self.MODE)
        yield from self.compose_body()
        yield Line(id="hints", classes="hints")
        yield Input(placeholder="filter (Enter keeps it, Esc clears)", id="filter", classes="hidden")
        yield KeyFooter()

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets."""
        yield from ()

    def on_mount(self) -> None:
        self.query_one("#hints", Line).show(self.hint_text(), layout=True)  # two rows on a narrow terminal

    def on_screen_resume(self) -> None:
        self._fit(self.app.size.width)  # the terminal may have been resized while another screen showed
        app: Any = self.app
        app.request_refresh()

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width)

    def _fit(self, width: int) -> None:
        if width != self._fitted_width:
            self._fitted_width = width
            self.refit(width)
            self.query_one("#hints", Line).show(self.hint_text(), layout=True)

    def refit(self, width: int) -> None:
        """Fit the screen's tables to a terminal ``width`` columns wide (their columns were chosen at start)."""

    # -- data --------------------------------------------------------------------------------

    async def fetch(self, store: DashboardReads) -> Any:
        """Query what this screen shows (runs in the refresh worker)."""
        return None

    def apply(self, data: Any) -> None:
        """Show fetched data (UI thread, by-key updates)."""

    # -- tables ------------------------------------------------------------------------------

    def active_table(self) -> KeyedTable | None:
        """The focused keyed table, else the first one on the screen."""
        if isinstance(self.focused, KeyedTable):
            return self.focused
        tables = list(self.query(KeyedTable))
        return tables[0] if tables else None

    def hint_text(self) -> str:
        """The sort-key hint line under the table."""
        table = self.active_table()
        if table is None:
            return ""
        keys = "  ".join(f"{k} {table.specs[c].label.lower()}" for k, c in table.sort_keys().items())
        return f"sort: {keys}" + self.extra_hints()  # (the line's padding is the first column)

    def extra_hints(self) -> str:
        """Screen-specific key hints appended to the sort hint."""
        return ""

    def on_key(self, event: events.Key) -> None:
        if isinstance(self.focused, Input):
            return
        table = self.active_table()
        if table is not None and event.character and event.character in table.sort_keys():
            table.set_sort(table.sort_keys()[event.character])
            event.stop()
            event.prevent_default()

    # -- actions -----------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("hidden")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            table = self.active_table()
            if table is not None:
                table.set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            table = self.active_table()
            if table is not None:
                table.focus()
            if not event.value:
                event.input.add_class("hidden")

    def action_back(self) -> None:
        """Esc: leave a form field, clear an active filter, otherwise leave a pushed screen."""
        focused = self.focused
        if isinstance(focused, Input) and focused.id != "filter":
            # out of the field (the Reconciliation dates and path), so the global keys work again
            table = self.active_table()
            if table is not None:
                table.focus()
            else:
                self.set_focus(None)
            return
        box = self.query_one("#filter", Input)
        if box.value or not box.has_class("hidden"):
            box.value = ""
            box.add_class("hidden")
            table = self.active_table()
            if table is not None:
                table.set_filter("")
                table.focus()
            return
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_export(self) -> None:
        table = self.active_table()
        if table is None:
            self.notify("Nothing to export on this screen", severity="warning")
            return
        app: Any = self.app
        export_dir = Path(app.export_dir)
        export_dir.mkdir(parents=True, exist_ok=True)
        stamp = utc(app.clock(), "%Y%m%dT%H%M%SZ")
        path = export_dir / f"spendtrace-{self.MODE}-{table.id or 'table'}-{stamp}.csv"
        rows = table.export_csv(path)
        app.last_export = path
        self.notify(f"Exported {rows} rows to {path}", title="CSV export", markup=False)

    def action_copy_row(self) -> None:
        table = self.active_table()
        key = table.current_key if table else None
        if table is None or key is None:
            self.notify("No row selected", severity="warning")
            return
        text = table.row_text(key)
        self.app.copy_to_clipboard(text)
        app: Any = self.app
        app.last_copied = text
        self.notify(f"Copied: {text[:80]}", title="Clipboard", markup=False)
