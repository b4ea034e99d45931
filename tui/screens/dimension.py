"""Live, Tenants and Endpoints: spend per feature / tenant / endpoint, updated in place as data arrives."""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from spendtrace.server.model.dashboard import WINDOWS, DimRow, DimSnapshot
from spendtrace.server.store.base import DashboardReads
from tui.format import count_text, money_text, rate_text, share_text, spark_text
from tui.screens.base import DataScreen
from tui.widgets.keyed_table import Cell, ColumnSpec, KeyedTable
from tui.widgets.line import Line

SERVICE_WIDTH = 11
_WINDOW_ORDER = list(WINDOWS)


def _columns(dimension: str, terminal_width: int = 160) -> list[ColumnSpec]:
    name = {"feature": "Feature", "user": "Tenant", "endpoint": "Endpoint"}[dimension]
    # the name column gives way on a narrow terminal (80 columns), so the money stays in view
    cols = [ColumnSpec("name", name, 28 if terminal_width >= 120 else 18, "f", numeric=False, justify="left")]
    if dimension == "feature":
        cols.append(ColumnSpec("cost", "Direct", 12, "c", unit="usd", csv="direct_cost_usd"))
        cols.append(ColumnSpec("loaded", "Loaded", 12, "l", unit="usd", csv="fully_loaded_cost_usd"))
    else:
        cols.append(ColumnSpec("cost", "Cost", 12, "c", unit="usd", csv="cost_usd"))
    cols += [
        ColumnSpec("rate", "Last hour", 13, "r", unit="usd", csv="last_hour_usd"),
        ColumnSpec("calls", "Calls" if dimension == "feature" else "Requests", 9, "n"),
        ColumnSpec("share", "Share", 7, "s", unit="pct"),
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


class DimensionScreen(DataScreen):
    """Spend per value of one dimension (feature, user or endpoint)."""

    DIMENSION: ClassVar[str] = "feature"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("w", "cycle_window", "Window")]

    def __init__(self) -> None:
        super().__init__()
        self.window = "all"
        self.last: DimSnapshot | None = None

    def compose_body(self) -> ComposeResult:
        yield Line(id="subtitle", classes="subtitle")
        yield KeyedTable(_columns(self.DIMENSION, self.app.size.width), default_sort="cost", id="main")

    def on_mount(self) -> None:
        super().on_mount()
        self._subtitle()

    def _subtitle(self) -> None:
        what = {"feature": "features", "user": "tenants", "endpoint": "endpoints"}[self.DIMENSION]
        t = Text(f" {what}", style="bold")
        t.append("  window ", style="dim")
        for w in _WINDOW_ORDER:
            t.append(f" {w} ", style="bold black on #5fd7ff" if w == self.window else "dim")
        if self.last is not None:
            t.append(f"   {len(self.last.rows)} rows", style="dim")
        self.query_one("#subtitle", Line).show(t)

    def extra_hints(self) -> str:
        return "   ·  w window  / filter  y copy  ctrl+s csv"

    def action_cycle_window(self) -> None:
        self.window = _WINDOW_ORDER[(_WINDOW_ORDER.index(self.window) + 1) % len(_WINDOW_ORDER)]
        self._subtitle()
        app: Any = self.app
        app.request_refresh(force=True)

    async def fetch(self, store: DashboardReads) -> DimSnapshot:
        return await store.dimension(self.DIMENSION, self.window)

    def apply(self, data: DimSnapshot) -> None:
        self.last = data
        table = self.query_one("#main", KeyedTable)
        for svc in data.services:
            table.add_spec(ColumnSpec(f"svc:{svc}", svc, SERVICE_WIDTH, None, unit="usd", csv=f"{svc}_usd"))
        top = max((r.cost_nano for r in data.rows), default=0)
        # a row's cells depend on the row, the total (share), the service columns and whether it is the top
        # spender; rows where none of that changed are neither rebuilt nor compared cell by cell
        table.sync_lazy(
            (r.key, (r, data.total_nano, data.services, r.cost_nano == top), partial(row_cells, r, data.total_nano,
             data.services, top))
            for r in data.rows
        )  # fmt: skip
        self._subtitle()


class LiveScreen(DimensionScreen):
    """Per-feature spend streaming in, plus what the totals leave out (unpriced usage, dead letters)."""

    MODE = "live"
    DIMENSION = "feature"

    def compose_body(self) -> ComposeResult:
        yield from super().compose_body()
        yield Line(id="leftout", classes="leftout")

    async def fetch(self, store: DashboardReads) -> Any:
        snap = await store.dimension(self.DIMENSION, self.window)
        return snap, await store.unpriced(5), await store.dead_letters(3)

    def apply(self, data: Any) -> None:
        snap, unpriced, dead = data
        super().apply(snap)
        t = Text(no_wrap=True, overflow="ellipsis")
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
        self.query_one("#leftout", Line).show(t)


class TenantsScreen(DimensionScreen):
    """Spend per tenant (user_id)."""

    MODE = "tenants"
    DIMENSION = "user"


class EndpointsScreen(DimensionScreen):
    """Spend per endpoint."""

    MODE = "endpoints"
    DIMENSION = "endpoint"
