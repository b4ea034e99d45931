"""DataTable rendering made cheap enough for live tables where every cell changes each refresh.

DataTable keys all its render caches on one update counter, so any changed cell re-renders the
whole visible table, through Rich's general renderables, recomputing the same CSS-derived styles
for every row and line. ``FastDataTable`` keeps DataTable's output (tests compare the two) and:

- caches each cell's render per cell *object* (cells are replaced, never mutated, on change);
- renders one-line ``Text`` cells straight to segments instead of ``Styled(Padding(Text))``;
- works out the row, header and widget styles and the column widths once per repaint, not per line.

It uses DataTable internals of the installed Textual (``_render_cell``, ``_render_line_in_row``,
``_row_locations``, ...); fixed (frozen) columns are drawn the way DataTable draws them. Tables of a
shape it does not handle (fixed rows, row labels, multi-line rows, cell or column cursors) fall back
to DataTable's own code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import zip_longest
from typing import Any

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._segment_tools import line_crop
from textual._two_way_dict import TwoWayDict
from textual.coordinate import Coordinate
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, CellKey, DuplicateKey, Row, RowKey

#: Justify methods ``_fast_cell`` renders itself; the others go through Rich.
_FAST_JUSTIFY = frozenset({"default", "left", "right"})


def middle_cut(text: str, width: int) -> str:
    """``text`` in ``width`` cells with its middle left out (``5918f…f60x316c``): ids differ at their ends."""
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    tail = len(text) - (width - 1 - head)
    return f"{text[:head]}…{text[tail:]}"


class FastDataTable(DataTable[Any]):
    """A DataTable with per-cell render caching and a fast path for one-line text cells."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # row key -> {(column index, fixed copy): (cell, base style, place, lines)}: the last render of each
        # cell, by row so that a removed row's renders go with it (kept, they made every garbage collection
        # of the app slower: a window change at 100,000 tenants leaves 100 rows of dead renders)
        self._cell_cache: dict[Any, dict[tuple[int, bool], tuple[Any, Style, tuple[Any, ...], Any]]] = {}
        self._rendered_count = -1  # the update count of the last repaint
        # (row, column, cursor, hover) -> (base style, state, blank, pre, post, {text style: cell style})
        self._styles: dict[Any, tuple[Style, tuple[Any, ...], Style, Style, Style, dict[Any, Style]]] = {}
        # component-class styles, kept until the table's styles change; (pseudo-class state, {name: style})
        self._component: tuple[Any, dict[str, Style]] = (None, {})
        # the widget's style, column widths and render settings worked out once per repaint (None outside one)
        self._pass: dict[str, Any] | None = None
        self._fingerprint: tuple[Any, ...] = ()

    def notify_style_update(self) -> None:
        # Textual restyles a screen's widgets each time the screen comes back; the cached renders
        # stay valid unless a style they were made with really changed (a theme, focus, hover)
        styles = self._style_fingerprint()
        if styles != self._fingerprint:
            self._fingerprint = styles
            self._cell_cache = {}
            self._styles = {}
            self._component = (None, {})
        super().notify_style_update()

    def _style_fingerprint(self) -> tuple[Any, ...]:
        """Every style a cached render depends on: the widget's and each component class's."""
        if not self.is_mounted:
            return ()
        components = tuple(self.get_component_styles(name).rich_style for name in sorted(self.COMPONENT_CLASSES))
        return (self.rich_style, *components, self.cursor_foreground_priority, self.cursor_background_priority)

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._styles = {}
        self._component = (None, {})

    def set_cells(self, cells: Iterable[tuple[str, str, Any]]) -> int:
        """Write cells given as (row key, column key, value) and repaint once; returns how many were written.

        ``update_cell`` repaints and starts a new render-cache generation for every cell, and a live
        refresh changes a few hundred at a time. Column widths are fixed here, so nothing is re-measured.
        """
        written = 0
        data: dict[Any, dict[Any, Any]] = self._data  # keyed by RowKey / ColumnKey, which equal their str values
        for row, column, value in cells:
            row_cells = data.get(row)
            if row_cells is None or column not in row_cells:
                raise CellDoesNotExist(f"No cell exists for row_key={row!r}, column_key={column!r}.")
            row_cells[column] = value  # an equal key is kept, so this replaces the value in place
            written += 1
        if written:
            self._update_count += 1
            self.refresh()
        return written

    def add_keyed_rows(self, rows: Iterable[tuple[str, Sequence[Any]]]) -> int:
        """Add one-line rows given as (key, cells in column order) at the bottom; returns how many.

        ``add_row`` re-sorts the columns, re-sets the cursor (a reactive watcher) and starts a new
        render-cache generation for every row; a window change adds a hundred at once. Here that is
        done once for all of them, with the same result as ``add_row`` for each in turn.
        """
        columns = self.ordered_columns
        locations = self._row_locations
        data: dict[Any, dict[Any, Any]] = self._data
        was_empty = self.row_count == 0
        added = 0
        for key, cells in rows:
            row_key = RowKey(key)
            if row_key in locations:
                raise DuplicateKey(f"The row key {row_key!r} already exists.")
            if len(cells) > len(columns):
                raise ValueError("More values provided than there are columns.")
            locations[row_key] = len(self.rows)
            data[row_key] = {column.key: cell for column, cell in zip_longest(columns, cells)}
            self.rows[row_key] = Row(row_key, 1, None, False)
            self._new_rows.add(row_key)
            added += 1
        if not added:
            return 0
        self._require_update_dimensions = True
        self.cursor_coordinate = self.cursor_coordinate
        if was_empty and self.columns and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()  # a cell to highlight where there was none, as add_row does
        self._update_count += 1
        self.check_idle()
        return added

    def remove_rows(self, keys: Iterable[str]) -> int:
        """Remove the rows with these keys at once; returns how many there were.

        ``remove_row`` rebuilds the row index and re-sets the cursor and hover (two reactive watchers
        each) for every row: when a window change swaps 100 rows that was most of a refresh. Here the
        index is rebuilt once, in the same order, and the table repaints once.
        """
        locations = self._row_locations
        wanted = set(keys)
        gone = {key for key in locations if key in wanted}  # the table's own RowKeys (equal to their strings)
        if len(gone) <= 1:
            for key in gone:
                self.remove_row(key)
                self._cell_cache.pop(key, None)
            return len(gone)
        self._require_update_dimensions = True
        self.check_idle()
        kept = sorted((locations.get(key), key) for key in locations if key not in gone)
        self._row_locations = TwoWayDict({key: i for i, (_, key) in enumerate(kept)})
        data: dict[Any, dict[Any, Any]] = self._data
        updated = self._updated_cells  # cells ``update_cell`` marked for re-measuring: usually none
        renders = self._cell_cache
        for key in gone:
            if updated:
                for column_key in data.get(key, {}):
                    updated.discard(CellKey(key, column_key))
            renders.pop(key, None)
            del self.rows[key]
            del data[key]
        self.cursor_coordinate = self.cursor_coordinate
        self.hover_coordinate = self.hover_coordinate
        self._update_count += 1
        # a repaint, not a layout of the screen (remove_row asks for one per row): when the row count
        # changes, the new virtual size set by _update_dimensions lays the table out again itself
        self.refresh()
        return len(gone)

    def _update_dimensions(self, new_rows: Iterable[Any]) -> None:
        """DataTable's, without measuring new cells when no column sizes itself to its content.

        Every column here has a fixed width, so a measured width changes nothing; measuring the cells
        of 100 new rows (Rich's measure, per cell) took about a third of a refresh that swapped them.
        Rows with a label or an automatic height still go through DataTable's own code.
        """
        new = list(new_rows)
        rows = self.rows
        if any(column.auto_width for column in self.columns.values()) or any(
            (row := rows.get(key)) is not None and (row.label is not None or row.auto_height) for key in new
        ):
            super()._update_dimensions(new)
            return
        width = sum(column.get_render_width(self) for column in self.columns.values()) + self._row_label_column_width
        self.virtual_size = Size(width, self._total_row_height + (self.header_height if self.show_header else 0))

    def row_cells(self, row: str) -> dict[Any, Any]:
        """The cells of one row by column key (read only; empty for an unknown row)."""
        data: dict[Any, dict[Any, Any]] = self._data
        return data.get(row, {})

    # -- one repaint -------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        if self._update_count != self._rendered_count:
            # DataTable's line and row caches are keyed by the update count: what an older count left
            # there is never read again, but kept (up to 1000 lines each) it is more for the GC to walk
            self._rendered_count = self._update_count
            self._line_cache.clear()
            self._row_render_cache.clear()
        self._pass = {}
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def _memo(self, name: str) -> Any:
        """A style, width or setting that cannot change during one repaint, computed once in it."""
        memo = self._pass
        if memo is not None and name in memo:
            return memo[name]
        if name == "rich_style":
            value: Any = self.rich_style
        elif name == "justify":  # the console's default (building its options is not free)
            value = self.app.console_options.justify or "default"
        elif name == "widths":
            value = [column.get_render_width(self) for column in self._memo("columns")]
        elif name == "columns":  # DataTable sorts its columns each time ``ordered_columns`` is read
            value = self.ordered_columns
        elif name == "column_keys":
            value = [column.key for column in self._memo("columns")]
        elif name == "fixed":  # a fixed cell's base style, as DataTable makes it
            value = self._memo("datatable--fixed") + Style.from_meta({"fixed": True})
        elif name == "state":  # reactive attributes are slow to read, and a repaint reads them per cell
            value = (self.show_cursor, self._show_hover_cursor, self._pseudo_class_state, self.cell_padding,
                     self.header_height, self.fixed_rows, self.fixed_columns)  # fmt: skip
        else:  # a component class: the same style object from repaint to repaint, so caches can use ``is``
            pseudo, styles = self._component
            if pseudo != self._pseudo_class_state:
                styles = {}
                self._component = (self._pseudo_class_state, styles)
            value = styles.get(name)
            if value is None:
                value = styles[name] = self.get_component_styles(name).rich_style
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

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        """DataTable's line render, making one Strip where it made three (each Strip sets up seven caches).

        As in DataTable, the fixed columns come first whatever the scroll, then the scrollable cells
        seen through ``[x1 + fixed width, x2)``.
        """
        if self._should_render_row_labels or self.fixed_rows or self._pass is None:
            return super()._render_line(y, x1, x2, base_style)
        width = self.size.width
        widths = self._memo("widths")
        fixed_columns = self.fixed_columns
        fixed_width = sum(widths[:fixed_columns])
        if fixed_width >= width:  # nothing scrollable in view: DataTable's own cropping
            return super()._render_line(y, x1, x2, base_style)
        try:
            row_key, y_offset_in_row = self._get_offsets(y)
        except LookupError:
            return Strip.blank(width, base_style)
        cache_key = (y, x1, x2, width, self.cursor_coordinate, self.hover_coordinate, base_style, self.cursor_type,
                     self._show_hover_cursor, self._update_count, self._pseudo_class_state)  # fmt: skip
        if cache_key in self._line_cache:
            return self._line_cache[cache_key]
        fixed, scrollable = self._render_line_in_row(
            row_key, y_offset_in_row, base_style, self.cursor_coordinate, self.hover_coordinate
        )
        # every cell renders exactly its column's width and the filler pads the row to the widget's width, so
        # the cells wholly inside [left, right) are taken as they are and only the two edge cells are cut
        segments: list[Segment] = [segment for cell_segments in fixed for segment in cell_segments]
        left, right = x1 + fixed_width, x1 + width
        filler = max(0, width - sum(widths[fixed_columns:]))  # as DataTable measures it
        start = 0
        for cell_segments, cell_width in zip(scrollable, [*widths, filler], strict=True):
            end = start + cell_width
            if end > left:
                if start >= right:
                    break
                if start >= left and end <= right:
                    segments.extend(cell_segments)
                else:
                    segments.extend(line_crop(cell_segments, max(0, left - start), min(end, right) - start, cell_width))
            start = end
        if start < right:
            segments.append(Segment(" " * (right - max(start, left)), base_style))
        strip = Strip(list(Segment.simplify(segments)), width)
        self._line_cache[cache_key] = strip
        return strip

    def _render_line_in_row(
        self,
        row_key: Any,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[list[Any], list[Any]]:
        """DataTable's row render for row-cursor tables without fixed rows or row labels, styles memoised."""
        cursor_type = self.cursor_type
        if self._should_render_row_labels or self.fixed_rows or cursor_type != "row":
            return super()._render_line_in_row(row_key, line_no, base_style, cursor_location, hover_location)
        show_cursor, show_hover_cursor, pseudo_class_state, *_ = self._memo("state")
        cache_key = (row_key, line_no, base_style, cursor_location, hover_location, cursor_type, show_cursor,
                     show_hover_cursor, self._update_count, pseudo_class_state)  # fmt: skip
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
        cursor = row_index == cursor_location.row  # a row cursor highlights every cell of its row
        hover = row_index == hover_location.row
        fixed_columns = self.fixed_columns
        fixed_row: list[Any] = []
        # the row's cells and its cache slots are looked up once for the row, not once per cell
        cells = self._row_of(row_index)
        if fixed_columns:
            # drawn again in the fixed style, before the scrollable copy of the row, as DataTable does
            fixed_style = self._memo("datatable--header" if row_index == -1 else "fixed")
            for column_index, width in enumerate(widths[:fixed_columns]):
                if cells is None:
                    lines = self._cell(row_index, column_index, fixed_style, width, cursor, hover, fixed=True)
                else:
                    lines = self._cached_cell(cells, row_index, column_index, fixed_style, width, cursor, hover, True)
                fixed_row.append(lines[line_no])
        scrollable_row: list[Any] = []
        for column_index, width in enumerate(widths):
            if cells is None:
                lines = render_cell(row_index, column_index, row_style, width, cursor, hover)
            else:
                lines = self._cached_cell(cells, row_index, column_index, row_style, width, cursor, hover, False)
            scrollable_row.append(lines[line_no])
        remaining_space = max(0, self.size.width - sum(widths[fixed_columns:]))  # DataTable's measure
        extend_style, _ = self._get_styles_to_render_cell(
            row_index == -1, False, False,
            should_highlight(hover_location, Coordinate(row_index or 0, 0), cursor_type),
            row_index == cursor_location.row, show_cursor, show_hover_cursor, False, False,
        )  # fmt: skip
        extend_style = row_style + extend_style
        extend_style += Style.from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        scrollable_row.append([Segment(" " * remaining_space, extend_style)])
        row_pair: tuple[list[Any], list[Any]] = (fixed_row, scrollable_row)
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
        return self._cell(row_index, column_index, base_style, width, cursor, hover, fixed=False)

    def _cell(
        self, row_index: int, column_index: int, base_style: Any, width: int, cursor: bool, hover: bool, *, fixed: bool
    ) -> Any:
        """``_render_cell`` with its own cache slot for a fixed column's fixed copy (``fixed``)."""
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
        except (AttributeError, KeyError, IndexError):  # a DataTable of another shape: no cache
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        return self._render_cached(cell, row_key, row_index, column_index, base_style, width, cursor, hover, fixed)

    def _row_of(self, row_index: int) -> tuple[Any, list[Any]] | None:
        """(cache row key, the row's cells in column order) for ``_cached_cell``; None for a table of another shape."""
        try:
            if row_index < 0:
                return self._header_row_key, [column.label for column in self._memo("columns")]
            key = self._row_locations.get_key(row_index)
            row = self._data[key]  # type: ignore[index]
            return key, [row[column] for column in self._memo("column_keys")]
        except (AttributeError, KeyError, IndexError):
            return None

    def _cached_cell(
        self,
        cells: tuple[Any, list[Any]],
        row_index: int,
        column_index: int,
        base_style: Any,
        width: int,
        cursor: bool,
        hover: bool,
        fixed: bool,
    ) -> Any:
        """``_cell`` for a cell of a row already looked up by ``_row_of``."""
        row_key, row = cells
        return self._render_cached(row[column_index], row_key, row_index, column_index, base_style, width, cursor,
                                   hover, fixed)  # fmt: skip

    def _render_cached(
        self,
        cell: Any,
        row_key: Any,
        row_index: int,
        column_index: int,
        base_style: Any,
        width: int,
        cursor: bool,
        hover: bool,
        fixed: bool,
    ) -> Any:
        """The cached render of ``cell`` in its place, or a new one (fast path, else DataTable's)."""
        key = (column_index, fixed)
        renders = self._cell_cache.get(row_key)
        if renders is None:
            if len(self._cell_cache) > 2_000:
                self._cell_cache.clear()
            renders = self._cell_cache[row_key] = {}
        place = (row_index, width, cursor, hover, self._memo("state"))
        hit = renders.get(key)
        if hit is not None and hit[0] is cell and (hit[1] is base_style or hit[1] == base_style) and hit[2] == place:
            return hit[3]
        lines = self._fast_cell(cell, row_key, row_index, column_index, base_style, width, cursor, hover)
        if lines is None:
            lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        renders[key] = (cell, base_style, place, lines)
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
        state = self._memo("state")
        show_cursor, show_hover_cursor, _, pad, header_height, fixed_rows, fixed_columns = state
        height = header_height if header else self.rows[row_key].height
        plain = cell.plain
        inner = width - 2 * pad
        justify = cell.justify or self._memo("justify")
        if height != 1 or inner <= 0 or justify not in _FAST_JUSTIFY or "\n" in plain or "\t" in plain:
            return None
        if justify == "right":
            plain = plain.rstrip()
        length = cell_len(plain)
        if length > inner:
            if not getattr(cell, "cut_middle", False) or not plain.isascii() or inner < 5:
                return None
            plain = middle_cut(plain, inner)
            length = inner
        # a cell's styles depend on its place and state and on its text's style, not on its text: the
        # combinations for one place are worked out once and kept until the table's styles change
        place = (row_index, column_index, cursor, hover, id(base_style))  # a fixed copy has its own base style
        known = self._styles.get(place)
        if known is None or not (known[0] is base_style or known[0] == base_style) or known[1] != state:
            fixed = not header and (row_index < fixed_rows or column_index < fixed_columns)
            component, post_style = self._get_styles_to_render_cell(
                header, False, fixed, hover, cursor, show_cursor, show_hover_cursor,
                self.cursor_foreground_priority == "css", self.cursor_background_priority == "css",
            )  # fmt: skip
            console = self.app.console
            meta = Style.from_meta({"row": row_index, "column": column_index})
            pre = console.get_style(base_style + meta + component)
            post = console.get_style(post_style)
            blank = pre + post if pre else post
            known = (base_style, state, blank, pre, post, {"": blank})  # text without a style: same as blank
            if len(self._styles) > 20_000:
                self._styles.clear()
            self._styles[place] = known
        _, _, blank, pre, post, by_text = known
        styled = by_text.get(cell.style)
        if styled is None:
            text_style = self.app.console.get_style(cell.style) if cell.style else None
            styled = pre + text_style if text_style is not None else pre
            styled = styled + post if styled else post
            by_text[cell.style] = styled
        if styled is blank:  # one style across the cell: one segment
            gap = " " * (inner - length)
            body = gap + plain if justify == "right" else plain + gap
            return [[Segment(f"{' ' * pad}{body}{' ' * pad}", blank)]]
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
