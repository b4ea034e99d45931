"""Live, Tenants and Endpoints: spend per feature / tenant / endpoint, updated in place as data arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input

from spendtrace.server.model.dashboard import WINDOWS, DimRow, DimSnapshot
from spendtrace.server.store.base import DashboardReads
from tui.format import MONEY_WIDTH, RATE_WIDTH, count_text, money_text, rate_text, share_text, spark_text
from tui.screens.base import DataScreen
from tui.widgets.keyed_table import Cell, ColumnSpec, KeyedTable, Pinned, name_width
from tui.widgets.line import Line

SERVICE_WIDTH = MONEY_WIDTH
_WINDOW_ORDER = list(WINDOWS)
#: The name column's width where the terminal has room; a narrower terminal gives it only what the figures leave.
NAME_WIDTH = 28


def _columns(dimension: str, terminal_width: int = 160) -> list[ColumnSpec]:
    name = {"feature": "Feature", "user": "Tenant", "endpoint": "Endpoint"}[dimension]
    cols: list[ColumnSpec] = []
    if dimension == "feature":
        cols.append(ColumnSpec("cost", "Direct", MONEY_WIDTH, "c", unit="usd", csv="direct_cost_usd"))
        cols.append(ColumnSpec("loaded", "Loaded", MONEY_WIDTH, "l", unit="usd", csv="fully_loaded_cost_usd"))
    else:
        cols.append(ColumnSpec("cost", "Cost", MONEY_WIDTH, "c", unit="usd", csv="cost_usd"))
    cols += [
        ColumnSpec("rate", "Last hour", RATE_WIDTH, "r", unit="usd", csv="last_hour_usd"),
        ColumnSpec("calls", "Calls" if dimension == "feature" else "Requests", 9, "n"),
        ColumnSpec("share", "Share", 6, "s", unit="pct"),  # "100.0%", "Share▼"
    ]
    # the name column gives way on a narrow terminal (80 columns), so the money and the share stay in view
    width = name_width(terminal_width, cols, NAME_WIDTH)
    cols.insert(0, ColumnSpec("name", name, width, "f", numeric=False, justify="left"))
    cols += [
        ColumnSpec("spark", "Last 60 min", 20, None, numeric=False, justify="left", unit="skip"),
        ColumnSpec("errors", "Err", 5, "e", csv="errors"),
        ColumnSpec("unpriced", "Unpr", 5, "u", csv="unpriced"),
    ]
    return cols


def row_cells(row: DimRow, total: int, services: tuple[str, ...], top: int) -> dict[str, Cell]:
    """The cells of one row; the biggest spender's cost is highlighted."""
    label = row.key or "(none)"
    calls = row.calls if row.loaded_nano is not None else row.requests
    cells = {
        "name": Cell.of(Cell(label, style="dim italic" if not row.key else ""), row.key),
        "cost": Cell.of(
            money_text(row.cost_nano, "bold #ffaf5f" if row.cost_nano == top and top else ""), row.cost_nano
        ),
        "rate": Cell.of(rate_text(row.rate_nano_h), row.rate_nano_h),
        "calls": Cell.of(count_text(calls), calls),
        "share": Cell.of(share_text(row.cost_nano, total), (row.cost_nano / total) if total else 0.0),
        "spark": Cell.of(spark_text(row.spark), ",".join(map(str, row.spark))),
        "errors": Cell.of(count_text(row.errors, warn=True), row.errors),
        "unpriced": Cell.of(count_text(row.unpriced, warn=True), row.unpriced),
    }
    if row.loaded_nano is not None:
        cells["loaded"] = Cell.of(money_text(row.loaded_nano), row.loaded_nano)
    for svc in services:
        spent = row.services.get(svc)  # None: never used that service (shown as —), not $0
        cells[f"svc:{svc}"] = Cell.of(money_text(spent), spent)
    return cells


#: The key of the row that adds up every value not on the page (a NUL never starts a name a person typed).
OTHERS_KEY = "\x00others"
#: Values per page: the store sends this many rows, never the 100,000 tenants behind them.
PAGE_SIZE = 100


def others_cells(data: DimSnapshot, noun: str) -> dict[str, Cell]:
    """The "others" row: what every value off this page spent in the window, exactly, and how many values."""
    n = data.others_values
    label = Cell(f"others ({n:,} {noun})", style="dim italic")
    return {
        "name": Cell.of(label, Pinned(label.plain)),
        "cost": Cell.of(money_text(data.others_nano, "dim"), data.others_nano),
        "share": Cell.of(share_text(data.others_nano, data.total_nano), data.others_nano / (data.total_nano or 1)),
    }


class DimensionScreen(DataScreen):
    """Spend per value of one dimension (feature, user or endpoint): one page of the costliest, plus "others".

    ``/`` searches names on the server (the page then holds the matches), ``]`` / ``[`` page forward
    and back; the subtitle says which rows of how many are shown.
    """

    DIMENSION: ClassVar[str] = "feature"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("w", "cycle_window", "Window"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False, key_display="]"),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False, key_display="["),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.window = "all"
        self.last: DimSnapshot | None = None
        self.page = 0
        self.search = ""

    def compose_body(self) -> ComposeResult:
        yield Line(id="subtitle", classes="subtitle")
        yield KeyedTable(_columns(self.DIMENSION, self.app.size.width), default_sort="cost", id="main")

    def on_mount(self) -> None:
        super().on_mount()
        self._subtitle()

    def refit(self, width: int) -> None:
        self.query_one("#main", KeyedTable).refit(_columns(self.DIMENSION, width))
        self._subtitle()

    def _subtitle(self) -> None:
        what = {"feature": "features", "user": "tenants", "endpoint": "endpoints"}[self.DIMENSION]
        t = Text(f" {what}", style="bold")
        t.append("  window ", style="dim")
        for w in _WINDOW_ORDER:
            t.append(f" {w} ", style="bold black on #5fd7ff" if w == self.window else "dim")
        last = self.last
        if last is not None:
            if last.rows:
                first = last.offset + 1
                t.append(f"   rows {first:,}-{last.offset + len(last.rows):,} of {last.matched:,}", style="dim")
            else:
                t.append(f"   no rows of {last.matched:,}", style="dim")
            if last.search:
                t.append(f"  matching {last.search!r}", style="dim")  # repr: a name is data, shown escaped
            if last.others_values and not last.search:
                others = Text(f"   others {last.others_values:,} {what}: ", style="dim")
                others.append_text(money_text(last.others_nano))
                if t.cell_len + others.cell_len <= self.app.size.width:  # else the table's last row says it
                    t.append_text(others)
        self.query_one("#subtitle", Line).show(t)

    def extra_hints(self) -> str:
        return "   ·  w window  / search  ] [ page  y copy  ctrl+s csv"

    def _requery(self) -> None:
        self._subtitle()
        app: Any = self.app
        app.request_refresh(force=True)

    def action_cycle_window(self) -> None:
        self.window = _WINDOW_ORDER[(_WINDOW_ORDER.index(self.window) + 1) % len(_WINDOW_ORDER)]
        self.page = 0
        self._requery()

    def action_page(self, step: int) -> None:
        """Next (``step`` 1) or previous (-1) page of values; stays put at either end."""
        last = self.last
        pages = max(1, -(-(last.matched if last else 0) // PAGE_SIZE))
        page = min(max(0, self.page + step), pages - 1)
        if page != self.page:
            self.page = page
            self._requery()

    def on_input_changed(self, event: Input.Changed) -> None:
        """``/`` searches on the server: the query changes, not the rows already fetched."""
        if event.input.id == "filter":
            event.prevent_default()  # not the base screen's client-side filter
            if event.value != self.search:
                self.search = event.value
                self.page = 0
                self._requery()

    async def fetch(self, store: DashboardReads) -> DimSnapshot:
        return await store.dimension(
            self.DIMENSION, self.window, limit=PAGE_SIZE, offset=self.page * PAGE_SIZE, search=self.search
        )

    def apply(self, data: DimSnapshot) -> None:
        self.last = data
        table = self.query_one("#main", KeyedTable)
        for svc in data.services:
            table.add_spec(ColumnSpec(f"svc:{svc}", svc, SERVICE_WIDTH, None, unit="usd", csv=f"{svc}_usd"))
        top = max((r.cost_nano for r in data.rows), default=0)
        # a row's cells depend on the row, the total (share), the service columns and whether it is the top
        # spender; rows where none of that changed are neither rebuilt nor compared cell by cell
        rows: list[tuple[str, Any, Callable[[], dict[str, Cell]]]] = [
            (r.key, (r, data.total_nano, data.services, r.cost_nano == top), partial(row_cells, r, data.total_nano,
             data.services, top))
            for r in data.rows
        ]  # fmt: skip
        if data.others_values and not data.search:  # while searching, the subtitle counts the matches instead
            noun = {"feature": "features", "user": "tenants", "endpoint": "endpoints"}[self.DIMENSION]
            sig = ("others", data.others_nano, data.others_values, data.total_nano)
            rows.append((OTHERS_KEY, sig, partial(others_cells, data, noun)))
        table.sync_lazy(rows)
        self._subtitle()


class LiveScreen(DimensionScreen):
    """Per-feature spend streaming in, plus what the totals leave out (unpriced usage, dead letters)."""

    MODE = "live"
    DIMENSION = "feature"

    def compose_body(self) -> ComposeResult:
        yield from super().compose_body()
        yield Line(id="leftout", classes="leftout")

    async def fetch(self, store: DashboardReads) -> Any:
        # asked together: a ClickHouse store runs them at once (one after the other they added ~10 ms to a
        # refresh at 100,000 tenants); SQLite's one connection still runs them in turn
        return await asyncio.gather(super().fetch(store), store.unpriced(5), store.dead_letters(3))

    def apply(self, data: Any) -> None:
        snap, unpriced, dead = data
        super().apply(snap)
        t = Text()  # wraps on a narrow terminal, so the dead letters are not cut off
        if unpriced:
            t.append(" ⚠ unpriced ", style="bold black on yellow")
            for key, _svc, feature, items in unpriced:
                t.append(f" {key}", style="yellow")
                t.append(f" ×{items} in {feature}", style="dim")
        else:
            t.append(" ✓ every usage item priced", style="green")
        t.append("    ")
        if dead:
            t.append(" ✗ dead letters ", style="bold white on red")
            for _ns, reason in dead:
                t.append(f" {reason[:40]}", style="red")
        else:
            t.append("✓ no dead letters", style="green")
        self.query_one("#leftout", Line).show(t, layout=True)


class TenantsScreen(DimensionScreen):
    """Spend per tenant (user_id)."""

    MODE = "tenants"
    DIMENSION = "user"


class EndpointsScreen(DimensionScreen):
    """Spend per endpoint."""

    MODE = "endpoints"
    DIMENSION = "endpoint"
