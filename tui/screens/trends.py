"""Trends: daily cost per feature over a chosen number of days, as a stacked bar chart and a table."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from spendtrace.server.model.dashboard import TrendSnapshot
from spendtrace.server.store.base import DashboardReads
from tui.format import MONEY_WIDTH, money_text, spark_text
from tui.screens.base import DataScreen
from tui.screens.dimension import OTHERS_KEY
from tui.widgets.keyed_table import Cell, ColumnSpec, KeyedTable, Pinned, name_width
from tui.widgets.line import Line
from tui.widgets.trend_chart import TrendChart, feature_color

DAY_CHOICES = (7, 14, 30, 90)


def columns(terminal_width: int = 160) -> list[ColumnSpec]:
    """The table's columns; the feature's name gives way on a narrow terminal so the money stays in view."""
    cols = [
        ColumnSpec("total", "Total", MONEY_WIDTH, "c"),
        ColumnSpec("avg", "Per day", MONEY_WIDTH + 1, "a"),  # an average can be below a nano-dollar: <$0.000000001
        ColumnSpec("last", "Today", MONEY_WIDTH, "t"),
        ColumnSpec("change", "vs prev", 8, "v"),
    ]
    width = name_width(terminal_width, cols)
    cols.insert(0, ColumnSpec("feature", "Feature", width, "f", numeric=False, justify="left"))
    cols.append(ColumnSpec("trend", "Daily", 30, None, numeric=False, justify="left"))
    return cols


#: Features charted and listed on their own; the rest is one "others" row (10,000 features stay readable).
TOP_FEATURES = 20


def others_trend_cells(snap: TrendSnapshot) -> dict[str, Cell]:
    """The pinned row of every feature outside the top set, summed per day (exact)."""
    cells = _series_cells(snap.others)
    label = f"others ({snap.others_features:,} features)"
    cells["feature"] = Cell.of(Text(label, style="dim italic"), Pinned(label))
    return cells


def trend_cells(snap: TrendSnapshot, feature: str) -> dict[str, Cell]:
    """One feature's row: total, average, today, change vs the previous day and a sparkline."""
    cells = _series_cells(snap.cost[feature])
    name = Text("■ ", style=feature_color(snap.features.index(feature)))
    name.append(feature)
    cells["feature"] = Cell.of(name, feature)
    return cells


def _series_cells(series: tuple[int, ...]) -> dict[str, Cell]:
    total = sum(series)
    last = series[-1] if series else 0
    prev = series[-2] if len(series) > 1 else 0
    change = (last - prev) / prev if prev else None
    if change is None:
        change_text = Text("—", style="dim", justify="right")
    else:
        change_text = Text(f"{change:+.0%}", style="red" if change > 0 else "green", justify="right")
    return {
        "total": Cell.of(money_text(total, "bold"), total),
        "avg": Cell.of(money_text(total / len(series) if series else 0), total / len(series) if series else 0),
        "last": Cell.of(money_text(last), last),
        "change": Cell.of(change_text, change),
        "trend": Cell.of(spark_text(series, 30), ",".join(map(str, series))),
    }


class TrendsScreen(DataScreen):
    """``+``/``-`` change the number of days; selecting a feature draws it alone, Esc shows all again."""

    MODE = "trends"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus,equals_sign", "days(1)", "More days"),
        Binding("minus", "days(-1)", "Fewer days"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.days = 14
        self.focus_feature: str | None = None
        self.last: TrendSnapshot | None = None

    def compose_body(self) -> ComposeResult:
        yield Line(id="subtitle", classes="subtitle")
        yield TrendChart(id="chart")
        yield KeyedTable(columns(self.app.size.width), default_sort="total", id="main")

    def refit(self, width: int) -> None:
        self.query_one("#main", KeyedTable).refit(columns(width))

    def on_mount(self) -> None:
        super().on_mount()
        self._subtitle()

    def _subtitle(self) -> None:
        t = Text(" daily cost per feature", style="bold")
        t.append("  days ", style="dim")
        for d in DAY_CHOICES:
            t.append(f" {d} ", style="bold black on #5fd7ff" if d == self.days else "dim")
        last = self.last
        if last is not None and last.others_features:
            t.append(f"  top {len(last.features)} + {last.others_features:,} others", style="dim")
        if self.focus_feature:
            t.append("  showing ", style="dim")
            t.append(self.focus_feature, style="bold")
            t.append(" (Esc: all)", style="dim")
        self.query_one("#subtitle", Line).show(t)

    def extra_hints(self) -> str:
        return "   ·  +/- days  Enter chart one feature"

    def action_days(self, step: int) -> None:
        i = DAY_CHOICES.index(self.days) if self.days in DAY_CHOICES else 1
        self.days = DAY_CHOICES[max(0, min(len(DAY_CHOICES) - 1, i + step))]
        self._subtitle()
        app: Any = self.app
        app.request_refresh(force=True)

    async def fetch(self, store: DashboardReads) -> TrendSnapshot:
        return await store.trends(self.days, limit=TOP_FEATURES)

    def apply(self, data: TrendSnapshot) -> None:
        self.last = data
        if self.focus_feature not in data.cost:
            self.focus_feature = None
        self.query_one(TrendChart).show(data, self.focus_feature)
        rows = [(f, trend_cells(data, f)) for f in data.features]
        if data.others_features:
            rows.append((OTHERS_KEY, others_trend_cells(data)))
        self.query_one("#main", KeyedTable).sync(rows)
        self._subtitle()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        feature = str(event.row_key.value)
        if feature == OTHERS_KEY:  # not one feature: the chart has no single line for it
            return
        self.focus_feature = None if feature == self.focus_feature else feature
        if self.last is not None:
            self.query_one(TrendChart).show(self.last, self.focus_feature)
        self._subtitle()

    def action_back(self) -> None:
        if self.focus_feature and self.last is not None:
            self.focus_feature = None
            self.query_one(TrendChart).show(self.last, None)
            self._subtitle()
            return
        super().action_back()
