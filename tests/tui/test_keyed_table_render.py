"""KeyedTable's own cell renderer gives the same characters and styles as DataTable's Rich path."""

from __future__ import annotations

from typing import Any

import pytest
from rich.style import Style
from rich.text import Span, Text
from textual.app import App, ComposeResult
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, DuplicateKey

from tui.format import count_text, money_text, rate_text, share_text, spark_text
from tui.widgets.keyed_table import Cell, ColumnSpec, KeyedTable

COLUMNS = [
    ColumnSpec("name", "Name", 14, "f", numeric=False, justify="left"),
    ColumnSpec("cost", "Cost", 10, "c"),
    ColumnSpec("spark", "Spark", 8, None, numeric=False, justify="left"),
    ColumnSpec("note", "Note", 6, None, numeric=False, justify="left"),
]

#: Cells of every kind the screens make, plus the awkward ones: wide characters, markup-looking
#: user data, trailing blanks, empty text, a Style object, text too wide for its column, spans.
CELLS: list[dict[str, Cell]] = [
    {
        "name": Cell.of("checkout", "checkout"),
        "cost": Cell.of(money_text(12_345_678_900, "bold #ffaf5f"), 1),
        "spark": Cell.of(spark_text([0, 1, 5, 9, 2]), "s"),
        "note": Cell.of(Text("plain"), "p"),
    },
    {
        "name": Cell.of(Text("(none)", style="dim italic"), None),
        "cost": Cell.of(money_text(0), 0),
        "spark": Cell.of(Text("料金", style="cyan"), "w"),
        "note": Cell.of(Text("x ", justify="right"), "t"),
    },
    {
        "name": Cell.of("[red]x", "[red]x"),
        "cost": Cell.of(count_text(3, warn=True), 3),
        "spark": Cell.of(Text("", style="bold"), ""),
        "note": Cell.of(Text("ab", style=Style(color="red", underline=True), justify="default"), "s"),
    },
    {
        "name": Cell.of("a name much longer than fourteen cells", "long"),
        "cost": Cell.of(Text("9", style="reverse"), 9),
        "spark": Cell.of(Text("mid", justify="center"), "c"),
        "note": Cell.of(Text("ok", spans=[Span(0, 1, "bold")]), "spans"),
    },
]


class _TableApp(App[None]):
    def __init__(self, fixed_columns: int = 0) -> None:
        super().__init__()
        self.fixed_columns = fixed_columns

    def compose(self) -> ComposeResult:
        table = KeyedTable(COLUMNS, default_sort="cost", id="t")
        table.fixed_columns = self.fixed_columns
        yield table


def _chars(lines: Any) -> list[list[tuple[str, Style | None]]]:
    """Each rendered line as (character, style) pairs, so segment boundaries do not matter."""
    return [[(ch, seg.style) for seg in line for ch in seg.text] for line in lines]


async def test_fast_cells_render_like_datatable() -> None:
    """Every header and body cell, with cursor, hover or neither, renders the same both ways; most go the fast way."""
    app = _TableApp()
    async with app.run_test(size=(80, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync((f"row{i}", cells) for i, cells in enumerate(CELLS))
        for theme in ("textual-dark", "textual-light"):  # styles worked out under one theme must not outlive it
            app.theme = theme
            await pilot.pause()
            fast = slow = 0
            for row_index in range(-1, table.row_count):
                row_key = table._header_row_key if row_index < 0 else table._row_locations.get_key(row_index)
                base = table._get_row_style(row_index, table.rich_style)
                for column_index, column in enumerate(table.ordered_columns):
                    cell = column.label if row_index < 0 else table._data[row_key][column.key]
                    width = column.get_render_width(table)
                    for cursor, hover in ((False, False), (True, False), (False, True), (True, True)):
                        want = DataTable._render_cell(table, row_index, column_index, base, width, cursor, hover)
                        got = table._fast_cell(cell, row_key, row_index, column_index, base, width, cursor, hover)
                        if got is None:
                            slow += 1
                            continue
                        fast += 1
                        assert _chars(got) == _chars(want), (theme, row_index, column.key.value, cell.plain, cursor)
            # the too-wide name, the centred and the spanned cell (and nothing else) need Rich's general path
            assert slow == 3 * 4
            assert fast == (len(CELLS) + 1) * len(COLUMNS) * 4 - slow


def _row_chars(pair: Any) -> list[tuple[str, Style | None]]:
    fixed, scrollable = pair
    return [(ch, seg.style) for part in (*fixed, *scrollable) for seg in part for ch in seg.text]


@pytest.mark.parametrize("fixed_columns", [0, 1, 2])
async def test_rows_and_lines_render_like_datatable(fixed_columns: int) -> None:
    """Whole rows (header, zebra stripes, the cursor row, the filler past the last column, the frozen columns)
    and screen lines match."""
    app = _TableApp(fixed_columns)
    async with app.run_test(size=(80, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync((f"row{i}", cells) for i, cells in enumerate(CELLS))
        table.move_cursor(row=2)
        table.hover_coordinate = Coordinate(1, 0)
        for theme in ("textual-dark", "textual-light"):  # styles kept from one theme must not outlive it
            app.theme = theme
            await pilot.pause()
            base = table.rich_style
            keys = [table._header_row_key, *(table._row_locations.get_key(i) for i in range(table.row_count))]
            for cursor in (Coordinate(0, 0), table.cursor_coordinate):
                for key in keys:
                    table._row_render_cache.clear()
                    want = DataTable._render_line_in_row(table, key, 0, base, cursor, table.hover_coordinate)
                    table._row_render_cache.clear()
                    table._pass = {}
                    got = table._render_line_in_row(key, 0, base, cursor, table.hover_coordinate)
                    assert "widths" in table._pass  # the memoised path ran, not DataTable's
                    table._pass = None
                    assert len(got[0]) == fixed_columns
                    assert _row_chars(got) == _row_chars(want), (theme, key.value, cursor)
            for y in range(table.size.height):
                table._line_cache.clear()
                table._row_render_cache.clear()
                want_line = DataTable.render_line(table, y)
                table._line_cache.clear()
                table._row_render_cache.clear()
                table._pass = {}
                got_line = table.render_line(y)
                table._pass = None
                assert _chars([list(got_line)]) == _chars([list(want_line)]), (theme, y)


async def test_set_cells_writes_all_then_repaints_once() -> None:
    """A batch of cell writes shows on screen after one repaint; a cell that does not exist is refused."""
    app = _TableApp()
    async with app.run_test(size=(80, 12)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync((f"row{i}", cells) for i, cells in enumerate(CELLS))
        await pilot.pause()
        generation = table._update_count
        written = table.set_cells([("row0", "note", Cell.of("new", "n")), ("row1", "note", Cell.of("vals", "v"))])
        assert written == 2 and table._update_count == generation + 1
        await pilot.pause()
        lines = [table.render_line(y).text for y in range(1 + table.row_count)]
        row0 = table.get_row_index("row0") + 1  # the header is line 0
        row1 = table.get_row_index("row1") + 1
        assert "new" in lines[row0] and "vals" in lines[row1]
        with pytest.raises(CellDoesNotExist):
            table.set_cells([("no-such-row", "note", Cell.of("x", "x"))])


@pytest.mark.parametrize("fixed_columns", [0, 1])
async def test_lines_scrolled_sideways_render_like_datatable(fixed_columns: int) -> None:
    """In a table wider than its widget, lines scrolled to any column offset match DataTable's, cut and padded
    alike; a frozen column stays at the left edge whatever the offset."""
    app = _TableApp(fixed_columns)
    async with app.run_test(size=(30, 10)) as pilot:
        table = app.query_one(KeyedTable)
        table.sync((f"row{i}", cells) for i, cells in enumerate(CELLS))
        await pilot.pause()
        width = table.size.width
        full = sum(c.get_render_width(table) for c in table.ordered_columns)
        assert full > width  # the case under test: the table is cut at the widget's edge
        base = table.rich_style
        for x1 in range(full + 3):  # every offset: cuts through every cell, wide characters included
            for y in range(table.row_count + 3):  # the header, every row, and lines past the last row
                table._line_cache.clear()
                want = DataTable._render_line(table, y, x1, x1 + width, base)
                table._line_cache.clear()
                table._pass = {}
                got = table._render_line(y, x1, x1 + width, base)
                assert "widths" in table._pass  # the fast path ran
                table._pass = None
                assert got.cell_length == want.cell_length == width
                assert _chars([list(got)]) == _chars([list(want)]), (x1, y)
                if fixed_columns and y == 0:
                    assert got.text.startswith(" Name")  # the frozen header cell, at every offset


def test_formatter_cells_are_the_texts_rich_would_make() -> None:
    """The formatters' cells (made without Text's constructor) equal Texts built the ordinary way, and adopt once."""
    cases = [
        (money_text(12_345_678_900, "bold #ffaf5f"), Text("$12.35", style="bold #ffaf5f", justify="right")),
        (money_text(0), Text("$0", style="dim", justify="right")),
        (count_text(3, warn=True), Text("3", style="bold red", justify="right")),
        (count_text(1234.6), Text("1,235", justify="right")),
        (share_text(1, 4), Text(" 25.0%", style="yellow", justify="right")),
        (rate_text(0), Text("—", style="dim", justify="right")),
        (spark_text([0, 1, 8]), Text("·▁█", style="cyan")),
    ]
    for got, want in cases:
        assert isinstance(got, Cell)
        assert (got.plain, got.style, got.justify, got.spans, len(got), got.end) == (
            want.plain, want.style, want.justify, want.spans, len(want), want.end,
        )  # fmt: skip
    made = money_text(5)
    first, second = Cell.of(made, 5), Cell.of(made, 6)
    assert first is made and second is not made and (first.raw, second.raw) == (5, 6)


class _TwoTables(App[None]):
    """A KeyedTable beside a plain DataTable with the same columns, for comparing their state."""

    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="fast")
        plain: DataTable[Any] = DataTable(cursor_type="row", zebra_stripes=True, id="plain")
        yield plain

    def tables(self) -> tuple[KeyedTable, DataTable[Any]]:
        """The keyed table and the plain DataTable, the latter given the same columns."""
        plain: DataTable[Any] = self.query_one("#plain", DataTable)
        for spec in COLUMNS:
            plain.add_column(Text(spec.label, justify=spec.justify), width=spec.width, key=spec.key)
        return self.query_one("#fast", KeyedTable), plain


async def test_removing_rows_at_once_leaves_what_removing_them_one_by_one_leaves() -> None:
    """``remove_rows`` (one index rebuild, one repaint) gives DataTable's order, cursor, size and lines."""
    app = _TwoTables()
    async with app.run_test(size=(80, 40)) as pilot:
        fast, plain = app.tables()
        rows = [(f"r{i}", {c.key: Cell.of(f"{c.key}{i}", i) for c in COLUMNS}) for i in range(12)]
        fast.sync(rows)
        for key, cells in rows:
            plain.add_row(*(cells[c.key] for c in COLUMNS), key=key)
        for table in (fast, plain):
            table.move_cursor(row=7)  # on r7, which stays
        await pilot.pause()
        gone = ["r0", "r3", "r4", "r11", "no-such-row"]
        assert fast.remove_rows(gone) == 4
        for key in gone[:4]:
            plain.remove_row(key)
        await pilot.pause()
        want = [str(plain._row_locations.get_key(i).value) for i in range(plain.row_count)]  # type: ignore[union-attr]
        assert [str(fast._row_locations.get_key(i).value) for i in range(fast.row_count)] == want  # type: ignore[union-attr]
        assert want == [f"r{i}" for i in (1, 2, 5, 6, 7, 8, 9, 10)]
        assert fast.cursor_coordinate == plain.cursor_coordinate
        assert fast.virtual_size == plain.virtual_size  # without measuring the cells: fixed widths
        for y in range(1, 1 + fast.row_count):
            assert fast.render_line(y).text == plain.render_line(y).text
        assert fast.remove_rows(["r1"]) == 1 and fast.row_count == 7  # one row: DataTable's own remove_row


async def test_adding_rows_at_once_leaves_what_adding_them_one_by_one_leaves() -> None:
    """``add_keyed_rows`` (one cursor update, one repaint) gives ``add_row``'s order, cursor, size and lines,
    refuses a key already there, and a removed row's cached renders go with it."""
    app = _TwoTables()
    async with app.run_test(size=(80, 40)) as pilot:
        fast, plain = app.tables()
        rows = [(f"r{i}", [Cell.of(f"{c.key}{i}", i) for c in COLUMNS]) for i in range(12)]
        assert fast.add_keyed_rows(iter(rows)) == 12
        for key, cells in rows:
            plain.add_row(*cells, key=key)
        await pilot.pause()
        want = [str(plain._row_locations.get_key(i).value) for i in range(plain.row_count)]  # type: ignore[union-attr]
        assert [str(fast._row_locations.get_key(i).value) for i in range(fast.row_count)] == want  # type: ignore[union-attr]
        assert want == [f"r{i}" for i in range(12)]
        assert fast.cursor_coordinate == plain.cursor_coordinate
        assert fast.virtual_size == plain.virtual_size
        for y in range(1 + fast.row_count):
            assert fast.render_line(y).text == plain.render_line(y).text
        with pytest.raises(DuplicateKey):
            fast.add_keyed_rows([("r3", [])])
        assert "r3" in fast._cell_cache and "r4" in fast._cell_cache  # rendered on screen above
        assert fast.remove_rows(["r3", "r4"]) == 2
        assert "r3" not in fast._cell_cache and "r4" not in fast._cell_cache and "r5" in fast._cell_cache
        assert fast.remove_rows(["r5"]) == 1 and "r5" not in fast._cell_cache  # one row: DataTable's remove_row
