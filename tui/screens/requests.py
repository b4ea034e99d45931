"""Requests: the most recent or the most expensive requests; Enter opens a request's call tree."""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input

from spendtrace.server.model.dashboard import RequestRow
from spendtrace.server.store.base import DashboardReads
from tui.format import MONEY_WIDTH, count_text, duration, money_text, utc
from tui.messages import OpenRequest
from tui.screens.base import DataScreen
from tui.widgets.keyed_table import Cell, ColumnSpec, KeyedTable
from tui.widgets.line import Line


def columns(terminal_width: int = 160) -> list[ColumnSpec]:
    """The request list's columns: the cost beside the request, so an 80-column terminal shows it too."""
    return [
        ColumnSpec("time", "Started (UTC)", 19, "t", numeric=True, justify="left", unit="utc", csv="started_utc"),
        ColumnSpec("request", "Request", 24 if terminal_width >= 120 else 16, "i", numeric=False, justify="left"),
        ColumnSpec("cost", "Cost", MONEY_WIDTH, "c", unit="usd", csv="cost_usd"),
        ColumnSpec("endpoint", "Endpoint", 22, "n", numeric=False, justify="left"),
        ColumnSpec("tenant", "Tenant", 16, "u", numeric=False, justify="left"),
        ColumnSpec("feature", "Root feature", 20, "f", numeric=False, justify="left"),
        ColumnSpec("spans", "Spans", 6, "s"),
        ColumnSpec("took", "Took", 8, "d", unit="ms"),
        ColumnSpec("errors", "Err", 4, "e"),
    ]


def _id_cell(request_id: str) -> Cell:
    cell = Cell.of(Text(request_id), request_id)
    cell.cut_middle = True
    return cell


def request_cells(r: RequestRow) -> dict[str, Cell]:
    """The cells of one request row (all user text literal)."""
    return {
        "time": Cell.of(Text(utc(r.start_ns), style="dim"), r.start_ns),
        "request": _id_cell(r.request_id),
        "endpoint": Cell.of(Text(r.endpoint), r.endpoint),
        "tenant": Cell.of(Text(r.user_id), r.user_id),
        "feature": Cell.of(Text(r.root_feature), r.root_feature),
        "spans": Cell.of(count_text(r.spans), r.spans),
        "took": Cell.of(Text(duration(max(0, r.end_ns - r.start_ns)), justify="right"), r.end_ns - r.start_ns),
        "cost": Cell.of(money_text(r.cost_nano, "bold"), r.cost_nano),
        "errors": Cell.of(count_text(r.errors, warn=True), r.errors),
    }


class RequestsScreen(DataScreen):
    """The request list; ``o`` switches between most recent and most expensive."""

    MODE = "requests"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "toggle_order", "Recent/Costly"),
        Binding("enter", "open", "Call tree", show=True),
    ]
    LIMIT = 200

    def __init__(self) -> None:
        super().__init__()
        self.order = "recent"
        self.search = ""  # also sent to the store, so '/' finds requests older than the newest page

    def compose_body(self) -> ComposeResult:
        yield Line(id="subtitle", classes="subtitle")
        yield KeyedTable(columns(self.app.size.width), default_sort="time", id="main")

    def refit(self, width: int) -> None:
        self.query_one("#main", KeyedTable).refit(columns(width))

    def on_mount(self) -> None:
        super().on_mount()
        self._subtitle(0)

    def _subtitle(self, n: int | str) -> None:
        t = Text(" requests", style="bold")
        t.append("  show ", style="dim")
        for o, label in (("recent", "most recent"), ("cost", "most expensive")):
            t.append(f" {label} ", style="bold black on #5fd7ff" if o == self.order else "dim")
        t.append(f"   {n} rows", style="dim")
        tip = " · Enter opens the call tree"
        if t.cell_len + len(tip) <= self.app.size.width:  # (an 80-column terminal has it in the hints only)
            t.append(tip, style="dim")
        self.query_one("#subtitle", Line).show(t)

    def extra_hints(self) -> str:
        return "   ·  o recent/costly  Enter tree"

    def action_toggle_order(self) -> None:
        self.order = "cost" if self.order == "recent" else "recent"
        table = self.query_one("#main", KeyedTable)
        table.sort_by("cost" if self.order == "cost" else "time", reverse=True)
        app: Any = self.app
        app.request_refresh(force=True)

    async def fetch(self, store: DashboardReads) -> list[RequestRow]:
        return await store.requests(self.order, self.LIMIT, search=self.search)

    def apply(self, data: list[RequestRow]) -> None:
        table = self.query_one("#main", KeyedTable)
        # '/' searches what a row shows: its id, endpoint, tenant and feature
        shown = {r.request_id: "\x1f".join((r.request_id, r.endpoint, r.user_id, r.root_feature)) for r in data}
        table.sync_lazy(((r.request_id, r, partial(request_cells, r)) for r in data), search=shown.__getitem__)
        self._count()

    def _count(self) -> None:
        """The subtitle's row count follows the filter: 'N rows', or 'K of N rows' while filtering."""
        visible, total = self.query_one("#main", KeyedTable).counts()
        self._subtitle(f"{visible} of {total}" if visible != total else total)

    def on_input_changed(self, event: Input.Changed) -> None:
        super().on_input_changed(event)
        if event.input.id == "filter":
            self._count()  # the rows already here filter at once; the store's matches come with the refresh
            if event.value != self.search:
                self.search = event.value
                app: Any = self.app
                app.request_refresh(force=True)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(OpenRequest(str(event.row_key.value)))

    def action_open(self) -> None:
        table = self.query_one("#main", KeyedTable)
        if table.current_key:
            self.post_message(OpenRequest(table.current_key))
