"""A DataTable updated by row key: changed cells only, fixed widths, sortable by key, filterable.

Rows are never cleared and rebuilt: each ``sync`` adds new keys, removes vanished ones and
updates only the cells whose text changed, all in one batch, then re-applies the sort and puts
the cursor back on the row (by key) it was on. Each cell keeps the raw value it was made from,
which drives sorting and CSV export.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from rich.console import JustifyMethod
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist

from tui.format import Cell
from tui.widgets.fast_table import FastDataTable

__all__ = ["Cell", "ColumnSpec", "KeyedTable", "Pinned", "name_width"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column: key, label, fixed width, the key that sorts by it, and whether it is numeric.

    ``unit`` says what its raw values are, for CSV export and ``y`` copy: ``usd`` (nano-dollars,
    written as exact dollars), ``pct`` (a fraction, written as a percentage), ``utc`` (epoch ns,
    written as an ISO 8601 UTC time to the microsecond), ``ms`` (a duration in ns, written as exact
    milliseconds), ``skip`` (not exported: a sparkline), or ``""`` (written as they are). ``csv`` is
    the CSV header (default: the label in snake case, with ``_usd`` / ``_pct`` / ``_ms`` after it for
    those units).
    """

    key: str
    label: str
    width: int
    sort_key: str | None = None
    numeric: bool = True
    justify: JustifyMethod = "right"
    unit: str = ""
    csv: str = ""

    @property
    def csv_header(self) -> str:
        """The column's name in an exported CSV."""
        if self.csv:
            return self.csv
        base = "_".join("".join(c if c.isalnum() else " " for c in self.label.lower()).split())
        return base + {"usd": "_usd", "pct": "_pct", "ms": "_ms"}.get(self.unit, "")

    def export(self, raw: Any) -> str:
        """A raw cell value as written to CSV / copied: dollars for nano-dollars, percent for shares."""
        if raw is None:
            return ""
        if self.unit == "usd" and isinstance(raw, int | float) and not isinstance(raw, bool):
            exact = Decimal(raw) if isinstance(raw, int) else Decimal(repr(raw))
            return f"{exact.scaleb(-9).normalize():f}"
        if self.unit == "pct" and isinstance(raw, int | float):
            return f"{Decimal(repr(float(raw) * 100)).quantize(Decimal('0.0001'))}"
        if self.unit == "utc" and isinstance(raw, int):
            at = _EPOCH + timedelta(microseconds=raw // 1000)
            return at.isoformat(timespec="microseconds").replace("+00:00", "Z")
        if self.unit == "ms" and isinstance(raw, int):
            return f"{Decimal(raw).scaleb(-6).normalize():f}"
        return str(raw)


def name_width(terminal_width: int, figures: Sequence[ColumnSpec], widest: int = 28) -> int:
    """The name column's width: ``widest`` where the terminal has room, else what ``figures`` leave (12 at least).

    Each cell is padded by one on either side, and the name column and the vertical scrollbar take two more each.
    """
    taken = sum(c.width + 2 for c in figures) + 2 + 2
    return max(12, min(widest, terminal_width - taken))


class Pinned(str):
    """A name cell's raw value that keeps its row below the others whatever the sort (the "others" row)."""

    __slots__ = ()


def _sort_value(raw: Any) -> Any:
    if raw is None:
        return (0, 0)
    if isinstance(raw, int | float):
        return (1, raw)
    return (1, str(raw).casefold())


class KeyedTable(FastDataTable):
    """DataTable with by-key updates, per-column sort keys, vim motions, filter and CSV export."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(
        self,
        columns: Sequence[ColumnSpec],
        *,
        default_sort: str | None = None,
        default_reverse: bool = True,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, name=name, id=id, classes=classes)
        self.fixed_columns = 1  # the name column stays in view when a narrow terminal scrolls sideways
        self.specs: dict[str, ColumnSpec] = {s.key: s for s in columns}
        self.sort_column: str | None = default_sort
        self.sort_reverse = default_reverse
        self.filter_text = ""
        self._rows: dict[str, dict[str, Cell]] = {}  # every row of the last sync, filtered or not
        self._label_of: dict[str, str] = {}  # row key -> searchable text
        self.syncs = 0
        self._ready = False
        self._sigs: dict[str, Any] = {}
        self._unsorted = True

    def on_mount(self) -> None:
        for spec in self.specs.values():
            self._add_column(spec)
        self._ready = True
        self._relabel()

    # -- columns --------------------------------------------------------------------------------

    def add_spec(self, spec: ColumnSpec) -> None:
        """Add a column (e.g. a service seen for the first time); existing rows get an empty cell."""
        if spec.key in self.specs:
            return
        self.specs[spec.key] = spec
        if self._ready:
            self._add_column(spec)
            self._sigs.clear()  # every row needs its cell in the new column

    def refit(self, specs: Iterable[ColumnSpec]) -> bool:
        """Give the columns of ``specs`` their widths (the terminal was resized); True if any changed.

        Columns not in ``specs`` (a service seen later) keep theirs; rows, sort and cursor stay.
        """
        changed = False
        for spec in specs:
            old = self.specs.get(spec.key)
            if old is None or old.width == spec.width:
                continue
            self.specs[spec.key] = spec
            if self._ready:
                self.columns[ColumnKey(spec.key)].width = spec.width
            changed = True
        if changed and self._ready:
            self._clear_caches()  # renders are cached per width; the virtual size follows the widths
            self._require_update_dimensions = True
            self.refresh()
        return changed

    def _add_column(self, spec: ColumnSpec) -> None:
        self.add_column(Text(spec.label, justify=spec.justify), width=spec.width, key=spec.key, default=Cell(""))

    def sort_keys(self) -> dict[str, str]:
        """Key press -> column key, for the columns that can be sorted."""
        return {s.sort_key: s.key for s in self.specs.values() if s.sort_key}

    def _relabel(self) -> None:
        for key, spec in self.specs.items():
            label = spec.label
            if spec.sort_key:
                arrow = ("▼" if self.sort_reverse else "▲") if key == self.sort_column else ""
                label = f"{spec.label}{arrow}"
            col = self.columns.get(key)  # type: ignore[call-overload]
            if col is not None:
                col.label = Text(label, justify=spec.justify, style="bold" if key == self.sort_column else "")
        self.notify_style_update()

    def set_sort(self, column: str) -> None:
        """Sort by ``column``; the same column again flips the direction."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column = column
            self.sort_reverse = self.specs[column].numeric  # numbers biggest first, names A→Z
        self._relabel()
        self._apply_sort()

    def sort_by(self, column: str, reverse: bool) -> None:
        """Sort by ``column`` in the given direction."""
        self.sort_column = column
        self.sort_reverse = reverse
        self._relabel()
        self._apply_sort()

    # -- rows -----------------------------------------------------------------------------------

    @property
    def current_key(self) -> str | None:
        """Row key under the cursor, if any."""
        if not self.row_count:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except (CellDoesNotExist, RowDoesNotExist):
            return None

    def sync(self, rows: Iterable[tuple[str, dict[str, Cell]]], search: Callable[[str], str] | None = None) -> None:
        """Make the table show ``rows`` (key, {column: cell}) with minimal changes, keeping the cursor's row."""
        keep = self.current_key
        new: dict[str, dict[str, Cell]] = {}
        for key, cells in rows:
            new[key] = cells
            self._label_of[key] = search(key) if search else key
        self._rows = new
        self._sigs.clear()
        self._render_rows(keep)
        self.syncs += 1

    def sync_lazy(
        self,
        rows: Iterable[tuple[str, Any, Callable[[], dict[str, Cell]]]],
        search: Callable[[str], str] | None = None,
    ) -> None:
        """Like ``sync`` with (key, signature, make_cells): cells are built only for rows whose signature changed.

        A refresh where nothing changed therefore costs a comparison per row, and touches no widget.
        """
        keep = self.current_key
        new: dict[str, dict[str, Cell]] = {}
        sigs: dict[str, Any] = {}
        dirty: set[str] = set()
        for key, sig, make in rows:
            sigs[key] = sig
            if key in self._rows and self._sigs.get(key) == sig:
                new[key] = self._rows[key]
            else:
                new[key] = make()
                dirty.add(key)
                self._label_of[key] = search(key) if search else key
        self._rows = new
        self._sigs = sigs
        self._render_rows(keep, dirty)
        self.syncs += 1

    def upsert(self, key: str, cells: dict[str, Cell]) -> None:
        """Add or update one row without touching the others."""
        rows = dict(self._rows)
        rows[key] = cells
        self._label_of.setdefault(key, key)
        self._rows = rows
        self._render_rows(self.current_key)

    def _visible(self) -> dict[str, dict[str, Cell]]:
        needle = self.filter_text.casefold()
        if not needle:
            return self._rows
        return {k: v for k, v in self._rows.items() if needle in self._label_of.get(k, k).casefold()}

    def _render_rows(self, keep: str | None, dirty: set[str] | None = None) -> None:
        """Apply ``self._rows`` to the widget; with ``dirty``, only those rows can have changed cells."""
        visible = self._visible()
        changed = False
        if self.remove_rows([str(k.value) for k in self.rows if str(k.value) not in visible]):
            changed = True
        order = list(self.specs)
        updates: list[tuple[str, str, Cell]] = []
        added: list[tuple[str, list[Cell]]] = []
        for key, cells in visible.items():
            if key in self.rows:
                if dirty is not None and key not in dirty:
                    continue
                current = self.row_cells(key)
                for col, cell in cells.items():
                    if col not in self.specs:
                        continue
                    old = current.get(col)
                    if (
                        old != cell
                        or getattr(old, "style", None) != cell.style
                        or getattr(old, "raw", None) != cell.raw
                    ):
                        updates.append((key, col, cell))
            else:
                added.append((key, [cells.get(c, Cell("")) for c in order]))
        if added:
            self.add_keyed_rows(added)
            changed = True
        if updates:
            self.set_cells(updates)
            changed = True
        if changed or self._unsorted:
            self._apply_sort(keep)

    def _apply_sort(self, keep: str | None = None) -> None:
        self._unsorted = False
        keep = keep if keep is not None else self.current_key
        if self.sort_column and self.sort_column in self.specs and self.row_count:
            # ties are broken by the first text column (a name or an id), so the order is deterministic
            tie = next((k for k, s in self.specs.items() if not s.numeric and k != self.sort_column), None)
            cols = (self.sort_column, tie) if tie else (self.sort_column,)

            reverse = self.sort_reverse

            def key(values: Any) -> Any:
                values = values if tie else (values,)
                pinned = any(isinstance(getattr(c, "raw", None), Pinned) for c in values)
                # a pinned row sorts last in either direction (the flag flips with ``reverse``)
                return (pinned != reverse, *(_sort_value(getattr(c, "raw", None)) for c in values))

            self.sort(*cols, key=key, reverse=self.sort_reverse)
        if keep is not None and keep in self.rows:
            row = self.get_row_index(keep)
            if row != self.cursor_row:
                self.move_cursor(row=row, animate=False)

    def set_filter(self, text: str) -> None:
        """Show only rows whose key (or search text) contains ``text``, case-insensitively."""
        self.filter_text = text
        self._unsorted = True
        self._render_rows(self.current_key)

    # -- export ---------------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(rows the filter shows, rows of the last sync)."""
        return len(self._visible()), len(self._rows)

    def ordered_keys(self) -> list[str]:
        """Visible row keys in display order."""
        return [str(r.key.value) for r in self.ordered_rows]

    def row_values(self, key: str) -> list[Any]:
        """Raw values of one row in column order."""
        cells = self._rows.get(key, {})
        return [getattr(cells.get(c), "raw", None) for c in self.specs]

    def export_values(self, key: str) -> list[str]:
        """One row as exported: exact dollars, percentages, no sparklines (see ``ColumnSpec.unit``)."""
        cells = self._rows.get(key, {})
        return [s.export(getattr(cells.get(c), "raw", None)) for c, s in self.specs.items() if s.unit != "skip"]

    def export_header(self) -> list[str]:
        """The CSV header of ``export_values``' columns."""
        return [s.csv_header for s in self.specs.values() if s.unit != "skip"]

    def row_text(self, key: str) -> str:
        """One row as tab-separated exported values (what ``y`` copies)."""
        return "\t".join(self.export_values(key))

    def export_csv(self, path: Path) -> int:
        """Write the visible rows, in display order, as CSV (dollars, percentages); returns the row count."""
        keys = self.ordered_keys()
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(self.export_header())
            for key in keys:
                w.writerow(self.export_values(key))
        return len(keys)
