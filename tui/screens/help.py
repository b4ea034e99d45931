"""The ``?`` help overlay: every key, grouped, with the current screen's own keys first."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

GLOBAL_KEYS = [
    ("1-7 / click a tab", "switch screen: Live, Tenants, Endpoints, Requests, Alerts, Trends, Reconciliation"),
    ("?", "this help"),
    ("q", "quit"),
    ("esc", "back / clear the filter / close a dialog"),
    ("ctrl+p", "command palette (every action is there)"),
    ("p", "pause / resume live refresh (PAUSED badge in the header)"),
    ("/", "filter the table (Live, Tenants, Endpoints: search every name, in the store)"),
    ("j k g G", "down, up, top, bottom (tables and trees); arrows and mouse work too"),
    ("sort keys", "the letters under each table sort by a column; again flips direction (▼/▲ in the header)"),
    ("y", "copy the selected row to the clipboard"),
    ("ctrl+s", "export the current table as CSV (the path is shown)"),
    ("w", "time window (Live, Tenants, Endpoints): 1h 24h 7d 30d all"),
    ("] / [", "next / previous page of 100 (Live, Tenants, Endpoints; the rest is the 'others' row)"),
    ("o / enter", "Requests: most recent ↔ most expensive / open the call tree"),
    ("a / d", "Alerts: add a rule / remove the selected rule"),
    ("+ / -", "Trends: more / fewer days; Enter charts one feature"),
    ("ctrl+r / R", "Reconciliation: run / restate history (asks first)"),
]


class HelpScreen(ModalScreen[None]):
    """A scrollable list of keys; any of Esc, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
    ]

    def __init__(self, screen_keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.screen_keys = screen_keys

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold #5fd7ff", no_wrap=True)
        table.add_column()
        if self.screen_keys:
            table.add_row(Text("this screen", style="bold underline"), "")
            for key, desc in self.screen_keys:
                table.add_row(key, Text(desc))
            table.add_row("", "")
        table.add_row(Text("everywhere", style="bold underline"), "")
        for key, desc in GLOBAL_KEYS:
            table.add_row(key, desc)
        with VerticalScroll(classes="dialog help"):
            yield Static(Text("spendtrace-tui — keys", style="bold"))
            yield Static(table)
