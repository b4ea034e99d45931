"""Display formatting shared by the screens: money, rates, counts, times and sparklines (no textual import).

Money arrives as integer nano-dollars and is turned into text only here, so every screen shows
the same precision and alignment. Times are absolute UTC, never relative ("3 min ago"), so that
snapshots and screenshots are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from rich.console import JustifyMethod
from rich.text import Text

from spendtrace.server.model.money import usd_text

NANO = 1_000_000_000
_BLOCKS = " ▁▂▃▄▅▆▇█"


class Cell(Text):
    """A table cell: text that remembers the raw value behind it (for sorting and export).

    The formatters below make Cells, so that ``Cell.of`` can adopt their fresh text instead of
    copying it (a live refresh makes about a thousand cells).
    """

    raw: Any = None
    #: too long for its column: shown with its middle left out (ids differ at their ends), not "…" at the end
    cut_middle = False
    _adopted = False

    @classmethod
    def of(cls, text: Text | str, raw: Any) -> Cell:
        """Wrap ``text`` (plain strings are never parsed as markup) with its raw value."""
        if type(text) is cls and not text._adopted:  # made by a formatter and not yet in a table: take it
            cell = text
            cell.no_wrap = True
        elif isinstance(text, str):
            cell = cls(text)
        else:  # a field-by-field copy: ``text`` was sanitised when it was made
            cell = cls.__new__(cls)
            cell._text = [text.plain]
            cell._length = len(text)
            cell._spans = list(text.spans)
            cell.style, cell.justify, cell.overflow = text.style, text.justify, text.overflow
            cell.no_wrap, cell.end, cell.tab_size = True, "\n", None
        if cell.overflow is None:  # a name longer than its column ends in "…", so a cut shows as a cut
            cell.overflow = "ellipsis"
        cell._adopted = True
        cell.raw = raw
        return cell


def _cell(text: str, style: str = "", justify: JustifyMethod | None = None) -> Cell:
    """A Cell of text made here (numbers, signs, block characters): no control codes to strip."""
    cell = Cell.__new__(Cell)
    cell._text, cell._length, cell._spans = [text], len(text), []
    cell.style, cell.justify, cell.overflow = style, justify, None
    cell.no_wrap, cell.end, cell.tab_size = None, "\n", None
    return cell


#: Cells the money rule needs for any whole nano-dollar amount below $1,000,000: ``$0.000000001`` is the widest.
MONEY_WIDTH = 12
#: Cells of a rate below $1,000,000/h: the widest amount and ``/h`` (``$0.000004875/h``).
RATE_WIDTH = MONEY_WIDTH + 2


def usd(nano: int | float) -> float:
    """Nano-dollars to dollars (for CSV export and the clipboard)."""
    return float(nano) / NANO


def money(nano: int | float | None) -> str:
    """Dollars by the one rule (``spendtrace.server.model.money.usd_text``): $1,234.56, $22.65, $0.0001202."""
    return usd_text(nano)


def whole_nano(nano: int | float) -> int | float:
    """A computed amount (an average, dollars times 1e9) to the nano-dollar the store keeps, so it fits
    ``MONEY_WIDTH``; a non-zero amount below half a nano-dollar stays as it is (shown ``<$0.000000001``)."""
    if isinstance(nano, int):
        return nano
    whole = round(nano)
    return whole if whole or not nano else nano


def money_text(nano: int | float | None, style: str = "") -> Cell:
    """Right-aligned money cell, to the nano-dollar; zero is dimmed so real spend stands out."""
    if not nano:
        return _cell(money(nano), style="dim", justify="right")
    return _cell(money(whole_nano(nano)), style=style, justify="right")


def rate_text(nano_per_hour: int | float) -> Cell:
    """Spend rate ($/h) cell."""
    if not nano_per_hour:
        return _cell("—", style="dim", justify="right")
    return _cell(f"{money(nano_per_hour)}/h", style="bold", justify="right")


def count(value: int | float) -> str:
    """Integer-ish counts with thousands separators (weighted call estimates are rounded)."""
    if isinstance(value, float) and not value.is_integer():
        value = round(value)
    return f"{int(value):,}"


def count_text(value: int | float, warn: bool = False) -> Cell:
    """Right-aligned count cell; ``warn`` colors non-zero values (errors, unpriced items)."""
    if warn and value:
        return _cell(count(value), style="bold red", justify="right")
    return _cell(count(value), style="dim" if not value else "", justify="right")


def share_text(part: int | float, whole: int | float) -> Cell:
    """Share of the total as a percentage with a heat color (red above 50 %, yellow above 20 %)."""
    if not whole:
        return _cell("—", style="dim", justify="right")
    pct = 100.0 * float(part) / float(whole)
    style = "bold red" if pct >= 50 else "yellow" if pct >= 20 else "green" if pct >= 5 else "dim"
    return _cell(f"{pct:5.1f}%", style=style, justify="right")


def sparkline(values: Sequence[int | float], width: int | None = None) -> str:
    """Unicode block sparkline, scaled to the series' own maximum; blank where there was nothing."""
    return _sparkline(tuple(values), width)


@lru_cache(maxsize=4096)
def _sparkline(values: tuple[int | float, ...], width: int | None) -> str:
    # a row's last hour changes far less often than the screen refreshes
    vals = list(values)
    if width is not None and len(vals) > width:  # fold into ``width`` bins
        step = len(vals) / width
        vals = [sum(vals[int(i * step) : int((i + 1) * step)]) for i in range(width)]
    top = max(vals, default=0)
    if top <= 0:
        return "·" * len(vals)
    out = []
    for v in vals:
        if v <= 0:
            out.append("·")
        else:
            out.append(_BLOCKS[max(1, min(8, math.ceil(8 * v / top)))])
    return "".join(out)


def spark_text(values: Sequence[int | float], width: int | None = None) -> Cell:
    """Sparkline cell in the accent color."""
    return _cell(sparkline(values, width), style="cyan")


def utc(ns: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An absolute UTC time from epoch nanoseconds."""
    return datetime.fromtimestamp(ns / NANO, tz=UTC).strftime(fmt)


def duration(ns: int) -> str:
    """A span duration: 850µs, 12.3ms, 1.20s."""
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    if ns < NANO:
        return f"{ns / 1_000_000:.1f}ms"
    return f"{ns / NANO:.2f}s"


def plain(value: object) -> str:
    """User-supplied text as a ``Text``-safe plain string ('' for None)."""
    return "" if value is None else str(value)
