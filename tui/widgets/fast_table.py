"""DataTable rendering made cheap enough for live tables where every cell changes each refresh.

DataTable keys all its render caches on one update counter, so any changed cell re-renders the
whole visible table, through Rich's general renderables, recomputing the same CSS-derived styles
for every row and line. ``FastDataTable`` keeps DataTable's output (tests compare the two) and:

- caches each cell's render per cell *object* (cells are replaced, never mutated, on change);
- renders one-line ``Text`` cells straight to segments instead of ``Styled(Padding(Text))``;
- works out the row, header and widget styles and the column widths once per repaint, not per line.

It uses DataTable internals of the installed Textual (``_render_cell``, ``_render_line_in_row``,
``_row_locations``, ...); tables of a shape it does not handle (fixed columns, row labels,
multi-line rows) fall back to DataTable's own code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

#: Justify methods ``_fast_cell`` renders itself; the others go through Rich.
_FAST_JUSTIFY = frozenset({"default", "left", "right"})


class FastDataTable(DataTable[Any]):
    """A DataTable with per-cell render caching and a fast path for one-line text cells."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cell_cache: dict[Any, tuple[Any, Any]] = {}
        # styles and widths worked out once per repaint (None outside ``render_lines``)
        self._pass: dict[str, Any] | None = None

    def notify_style_update(self) -> None:
        self._cell_cache = {}
        super().notify_style_update()

    def set_cells(self, cells: Iterable[tuple[str, str, Any]]) -> int:
        """Write cells given as (row key, column key, value) and repaint once; returns how many were written.

        ``update_cell`` repaints and starts a new render-cache generation for every cell, and a live
        refresh changes a few hundred at a time. Column widths are fixed here, so nothing is re-measured.
        """
        written = 0
        for row, column, value in cells:
            row_key, column_key = RowKey(row), ColumnKey(column)
            if row_key not in self._row_locations or column_key not in self._column_locations:
                raise CellDoesNotExist(f"No cell exists for row_key={row!r}, column_key={column!r}.")
            self._data[row_key][column_key] = value
            written += 1
        if written:
            self._update_count += 1
            self.refresh()
        return written

    # -- one repaint -------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        self._pass = {}
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def _memo(self, name: str) -> Any:
        """A style or width that cannot change during one repaint, computed once in it."""
        memo = self._pass
        if memo is not None and name in memo:
            return memo[name]
        if name == "rich_style":
            value: Any = self.rich_style
        elif name == "widths":
            value = [column.get_render_width(self) for column in self.ordered_columns]
        else:  # a component class
            value = self.get_component_styles(name).rich_style
        if memo is not None:
            memo[name] = value
        return value

    def render_line(self, y: int) -> Strip:
        if self.fixed_rows or self._pass is None:
            return super().render_line(y)
        scroll_x, scroll_y = self.scroll_offset
        if y >= (self.header_height if self.show_header else 0):
            y += scroll_y
        return self._render_line(y, scroll_x, scroll_x + self.size.width, self._memo("rich_style"))

    def _render_line_in_row(
        self,
        row_key: Any,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[list[Any], list[Any]]:
        """DataTable's row render for row-cursor tables without fixed parts or row labels, styles memoised."""
        cursor_type = self.cursor_type
        if self.fixed_columns or self._should_render_row_labels or self.fixed_rows or cursor_type != "row":
            return super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
        cache_key = (row_key, line_no, base_style, cursor_location, hover_location, cursor_type, self.show_cursor,
                     self._show_hover_cursor, self._update_count, self._pseudo_class_state)  # fmt: skip
        if cache_key in self._row_render_cache:
            return self._row_render_cache[cache_key]
        should_highlight = self._should_highlight
        render_cell = self._render_cell
        found = self._row_locations.get(row_key)
        row_index = -1 if found is None else found
        if row_index == -1:
            row_style = self._memo("datatable--header")
        elif self.zebra_stripes:
            row_style = self._memo("datatable--odd-row" if row_index % 2 else "datatable--even-row")
        else:
            row_style = base_style
        widths = self._memo("widths")
        scrollable_row: list[Any] = []
        for column_index, width in enumerate(widths):
            cell_location = Coordinate(row_index, column_index)
            lines = render_cell(
                row_index,
                column_index,
                row_style,
                width,
                cursor=should_highlight(cursor_location, cell_location, cursor_type),
                hover=should_highlight(hover_location, cell_location, cursor_type),
            )
            scrollable_row.append(lines[line_no])
        remaining_space = max(0, self.size.width - sum(widths))
        extend_style, _ = self._get_styles_to_render_cell(
            row_index == -1, False, False,
            should_highlight(hover_location, Coordinate(row_index or 0, 0), cursor_type),
            row_index == cursor_location.row, self.show_cursor, self._show_hover_cursor, False, False,
        )  # fmt: skip
        extend_style = row_style + extend_style
        extend_style += Style.from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        scrollable_row.append([Segment(" " * remaining_space, extend_style)])
        row_pair: tuple[list[Any], list[Any]] = ([], scrollable_row)
        self._row_render_cache[cache_key] = row_pair
        return row_pair

    # -- cells -------------------------------------------------------------------------------

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Any,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> Any:
        """DataTable's cell render, cached per cell object instead of per table update.

        A cached render stays valid while the same cell object is in that place (same row, column,
        style and width). A miss on a one-line text cell goes through ``_fast_cell``.
        """
        if column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        try:
            row_key: Any
            if row_index < 0:
                row_key = self._header_row_key
                cell: Any = self.ordered_columns[column_index].label
            else:
                row_key = self._row_locations.get_key(row_index)
                cell = self._data[row_key][self._column_locations.get_key(column_index)]  # type: ignore[index]
            key = (row_key, column_index, row_index, base_style, width, cursor, hover, self._show_hover_cursor,
                   self._pseudo_class_state)  # fmt: skip
        except (AttributeError, KeyError, IndexError):  # a DataTable of another shape: no cache
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        hit = self._cell_cache.get(key)
        if hit is not None and hit[0] is cell:
            return hit[1]
        lines = self._fast_cell(cell, row_key, row_index, column_index, base_style, width, cursor, hover)
        if lines is None:
            lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        if len(self._cell_cache) > 20_000:
            self._cell_cache.clear()
        self._cell_cache[key] = (cell, lines)
        return lines

    def _fast_cell(
        self,
        cell: Any,
        row_key: Any,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool,
        hover: bool,
    ) -> list[list[Segment]] | None:
        """A one-line ``Text`` cell (no spans, fits its column) as segments, or None for Rich's path.

        Gives the same characters and styles as DataTable's ``Styled(Padding(text))`` render without
        building and laying out three renderables per cell.
        """
        if not isinstance(cell, Text) or cell._spans:
            return None
        header = row_index < 0
        height = self.header_height if header else self.rows[row_key].height
        plain = cell.plain
        pad = self.cell_padding
        inner = width - 2 * pad
        justify = cell.justify or self.app.console_options.justify or "default"
        if height != 1 or inner <= 0 or justify not in _FAST_JUSTIFY or "\n" in plain or "\t" in plain:
            return None
        if justify == "right":
            plain = plain.rstrip()
        length = cell_len(plain)
        if length > inner:
            return None
        fixed = not header and (row_index < self.fixed_rows or column_index < self.fixed_columns)
        component, post = self._get_styles_to_render_cell(
            header, False, fixed, hover, cursor, self.show_cursor, self._show_hover_cursor,
            self.cursor_foreground_priority == "css", self.cursor_background_priority == "css",
        )  # fmt: skip
        pre = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component
        console = self.app.console
        pre = console.get_style(pre)
        post = console.get_style(post)
        text_style = console.get_style(cell.style) if cell.style else None
        styled = pre + text_style if text_style is not None else pre
        styled = styled + post if styled else post
        blank = pre + post if pre else post
        line: list[Segment] = [Segment(" " * pad, blank)] if pad else []
        if justify == "right":
            line.append(Segment(" " * (inner - length) + plain, styled))
        elif justify == "left":
            line.append(Segment(plain + " " * (inner - length), styled))
        else:  # "default": the text, then blank padding that does not take the text's style
            line.append(Segment(plain, styled))
            if inner > length:
                line.append(Segment(" " * (inner - length), blank))
        if pad:
            line.append(Segment(" " * pad, blank))
        return [line]
