"""Daily cost per feature as a stacked horizontal bar chart drawn with Rich (one line per day).

Hand-drawn rather than a plotting dependency: it is exact to the cell, renders identically in
snapshots, and colors each feature the same way as the legend and the table below it.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from spendtrace.server.model.dashboard import TrendSnapshot
from tui.format import MONEY_WIDTH, money, utc

PALETTE = ("#5fafff", "#ffaf5f", "#87d787", "#d787d7", "#ffd75f", "#5fd7d7", "#ff8787", "#afafff")
OTHER = "#808080"
#: Features drawn in their own color; the rest are stacked as "other".
TOP = len(PALETTE)


def feature_color(index: int) -> str:
    """Color of the ``index``-th largest feature (the rest share grey)."""
    return PALETTE[index] if index < TOP else OTHER


def render_chart(
    snap: TrendSnapshot | None, width: int, focus: str | None = None, max_days: int | None = None
) -> Text:
    """Lines 'MM-DD ███▒▒░ $total', bars scaled to the largest day; ``focus`` draws one feature only.

    With ``max_days`` (a short terminal) only the most recent days are drawn, so today and the
    legend stay in view; a day with spend too small for one cell still gets a thin mark.
    """
    out = Text(no_wrap=True)
    if snap is None or not snap.days:
        return out
    features = [focus] if focus in snap.cost else list(snap.features)
    daily = [sum(snap.cost[f][i] for f in features) for i in range(len(snap.days))]
    first = 0 if max_days is None else max(0, len(snap.days) - max(1, max_days))
    peak = max(daily[first:], default=0)
    label_w, total_w = 6, MONEY_WIDTH
    bar_w = max(10, width - label_w - total_w - 2)
    for i, day in enumerate(snap.days):
        if i < first:
            continue
        out.append(utc(day * 1_000_000_000, "%m-%d"), style="dim")
        out.append(" ")
        used = 0
        if peak:
            acc = 0
            for _rank, f in enumerate(features):
                acc += snap.cost[f][i]
                end = round(bar_w * acc / peak)
                if end > used:
                    idx = snap.features.index(f)
                    out.append("█" * (end - used), style=feature_color(idx))
                    used = end
            if used == 0 and daily[i]:
                out.append("▏", style="dim")
                used = 1
        out.append(" " * (bar_w - used))
        out.append(money(daily[i]).rjust(total_w), style="bold" if daily[i] else "dim")
        out.append("\n")
    for i, line in enumerate(legend(snap, width, focus)):
        if i:
            out.append("\n")
        out.append_text(line)
    return out


def legend(snap: TrendSnapshot, width: int, focus: str | None = None) -> list[Text]:
    """'■ feature' for each charted feature, under the bars, wrapped onto more lines where ``width`` is short."""
    items: list[Text] = []
    for idx, f in enumerate(snap.features[:TOP]):
        if focus and f != focus:
            continue
        item = Text("■ ", style=feature_color(idx))
        item.append(f)
        items.append(item)
    if len(snap.features) > TOP and not focus:
        items.append(Text.assemble(("■ ", OTHER), "other"))
    indent = "      "  # under the dates
    lines = [Text(indent)]
    for item in items:
        line = lines[-1]
        if line.cell_len > len(indent) and line.cell_len + item.cell_len > width:
            line.rstrip()
            line = Text(indent)
            lines.append(line)
        line.append_text(item)
        line.append("  ")
    lines[-1].rstrip()
    return lines


class TrendChart(Widget):
    """Renders the last trends snapshot at the widget's width."""

    DEFAULT_CSS = """
    TrendChart { height: auto; max-height: 50%; padding: 0 1; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot: TrendSnapshot | None = None
        self.focus_feature: str | None = None

    def show(self, snap: TrendSnapshot, focus: str | None = None) -> None:
        """Draw ``snap`` (only ``focus`` when given)."""
        self.snapshot = snap
        self.focus_feature = focus
        self.refresh(layout=True)

    def render(self) -> Text:
        # the lines the layout gave the chart: the most recent days that fit, then the legend
        width = self.size.width - 2
        keys = len(legend(self.snapshot, width, self.focus_feature)) if self.snapshot else 1
        fits = self.size.height - keys if self.size.height else None
        return render_chart(self.snapshot, width, self.focus_feature, fits)

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        if self.snapshot is None:
            return 1
        return len(self.snapshot.days) + len(legend(self.snapshot, width, self.focus_feature))
