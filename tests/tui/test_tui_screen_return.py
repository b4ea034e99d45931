"""Coming back to a screen reuses what it already built: the footer's keys and the table's cell renders."""

from __future__ import annotations

from pathlib import Path

from _snap import screen_text
from _tui_helpers import SIZE, settle

from tui.screens.dimension import LiveScreen
from tui.screens.requests import RequestsScreen
from tui.widgets.footer import KeyFooter
from tui.widgets.keyed_table import KeyedTable


async def test_returning_to_a_screen_keeps_its_footer_and_renders(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Live -> Requests -> Live: the same footer key widgets and cached cell renders, and the same screen shown."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        live = app.screen
        assert isinstance(live, LiveScreen)
        before = screen_text(app)
        keys = list(live.query_one(KeyFooter).children)
        table = live.query_one("#main", KeyedTable)
        renders = {(row, place): hit[3] for row, cells in table._cell_cache.items() for place, hit in cells.items()}
        assert keys and renders
        await pilot.press("4")
        await settle(app, pilot)
        assert isinstance(app.screen, RequestsScreen)
        await pilot.press("1")
        await settle(app, pilot)
        assert app.screen is live
        assert list(live.query_one(KeyFooter).children) == keys  # not unmounted and rebuilt
        kept = table._cell_cache
        assert any(kept.get(row, {}).get(place, (None,) * 4)[3] is lines for (row, place), lines in renders.items())
        assert screen_text(app) == before
        assert "Filter" in before and "Window" in before
