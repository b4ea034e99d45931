"""Pilot tests: every screen, the request tree drill-down, keys, sorting, filtering, export and escaping."""

from __future__ import annotations

import csv
import gc
from decimal import Decimal
from pathlib import Path

from _snap import screen_text
from _tui_data import BIG_REQUEST, MARKUP, build, request
from _tui_helpers import SIZE, settle, until

from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from tui.app import GC_YOUNG_THRESHOLD
from tui.screens.alerts import AlertsScreen
from tui.screens.dimension import EndpointsScreen, LiveScreen, TenantsScreen
from tui.screens.help import HelpScreen
from tui.screens.reconcile import ReconcileScreen
from tui.screens.requests import RequestsScreen
from tui.screens.tree import RequestTreeScreen
from tui.screens.trends import TrendsScreen
from tui.widgets.call_tree import CallTree
from tui.widgets.keyed_table import KeyedTable


def _keys(app) -> list[str]:  # type: ignore[no-untyped-def]
    return app.screen.query_one("#main", KeyedTable).ordered_keys()


async def test_every_screen_by_number_key(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Keys 1-7 open each screen, and each shows the fixed data it is about."""
    app = make_app(tui_db)
    expect = [
        ("1", LiveScreen, "summarise"),
        ("2", TenantsScreen, "tenant-globex"),
        ("3", EndpointsScreen, "/api/recommend"),
        ("4", RequestsScreen, BIG_REQUEST),
        ("5", AlertsScreen, "recs-hourly"),
        ("6", TrendsScreen, "product_details"),
        ("7", ReconcileScreen, "saved GetCostAndUsage"),
    ]
    async with app.run_test(size=SIZE) as pilot:
        for key, screen_type, shown in expect:
            await pilot.press(key)
            await settle(app, pilot)
            assert isinstance(app.screen, screen_type), key
            assert shown in screen_text(app), f"{shown!r} not on screen {key}"


async def test_young_garbage_is_collected_less_often_while_the_app_runs(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """The app raises Python's young-generation GC threshold while it runs and puts the old one back on exit."""
    before = gc.get_threshold()
    app = make_app(tui_db)
    async with app.run_test(size=SIZE):
        running = gc.get_threshold()
    assert running == (max(before[0], GC_YOUNG_THRESHOLD), *before[1:])
    assert running[0] >= 10 * 700
    assert gc.get_threshold() == before


async def test_live_screen_numbers(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Live shows direct and fully-loaded cost per feature: api's loaded cost is the whole total."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        table = app.screen.query_one("#main", KeyedTable)
        assert table.ordered_keys()[0] == "summarise"  # the Bedrock Sonnet call dominates
        api = dict(zip(table.specs, table.row_values("api"), strict=True))
        assert api["loaded"] == app.overview.total_nano
        assert api["cost"] < api["loaded"]
        assert {"svc:bedrock", "svc:dynamodb", "svc:s3"} <= set(table.specs)
        text = screen_text(app)
        assert "unpriced" in text and "mystery_api_call" in text
        assert "dead letters" in text and "undecodable msgpack" in text


async def test_request_tree_drill_down(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """On Requests, 'o' lists the most expensive first; Enter opens its call tree; Esc goes back."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        await pilot.press("o")
        await settle(app, pilot)
        assert _keys(app)[0] == BIG_REQUEST
        table = app.screen.query_one("#main", KeyedTable)
        table.focus()
        await pilot.press("g", "enter")
        await until(pilot, lambda: isinstance(app.screen, RequestTreeScreen) and bool(app.screen.roots), "tree")
        screen = app.screen
        assert isinstance(screen, RequestTreeScreen) and screen.request_id == BIG_REQUEST
        root = screen.roots[0]
        assert root.feature == "api" and root.depth == 0
        recommend = next(c for c in root.children if c.feature == "recommend")
        summarise = next(c for c in recommend.children if c.feature == "summarise")
        assert summarise.direct_nano == summarise.subtree_nano > 0
        assert recommend.subtree_nano == recommend.direct_nano + sum(c.subtree_nano for c in recommend.children)
        text = screen_text(app)
        assert "summarise · bedrock" in text and "bedrock_claude_3_5_sonnet" in text and "40,000 in" in text
        tree = screen.query_one(CallTree)
        await pilot.press("j", "j")
        assert tree.cursor_line == 2
        await pilot.press("G")
        assert tree.cursor_line == tree.last_line
        await pilot.press("g", "c")  # collapse every span below the root
        assert "product_details" not in screen_text(app)
        await pilot.press("e")
        assert "product_details" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, RequestsScreen)


async def test_cursor_stays_on_feature_through_sort_and_refresh(tui_db: Path, make_app, fixed_now_ns) -> None:  # type: ignore[no-untyped-def]
    """The cursor follows its feature (by key) when the table re-sorts and when new data changes the order."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        table = app.screen.query_one("#main", KeyedTable)
        table.focus()
        while table.current_key != "search":
            await pilot.press("j")
        before = table.ordered_keys().index("search")
        await pilot.press("f")  # sort by name, A→Z
        assert table.sort_column == "name" and not table.sort_reverse
        assert table.current_key == "search"
        assert table.ordered_keys() == sorted(table.ordered_keys(), key=str.casefold)
        await pilot.press("f")  # same key flips direction
        assert table.sort_reverse and "▼" in str(table.columns["name"].label)  # type: ignore[index]
        assert table.current_key == "search"
        await pilot.press("c")  # back to cost, biggest first
        assert table.ordered_keys().index("search") == before and table.current_key == "search"
        rows_before = {k: table.get_row_index(k) for k in table.ordered_keys()}
        # new spend makes 'search' the second most expensive feature: the order changes under the cursor
        conn = connect(tui_db)
        try:
            import random

            spans = []
            for i in range(30):
                spans += request(f"new-{i}", fixed_now_ns - 60 * 10**9, "tenant-acme", "/api/search", "search",
                                 random.Random(i))
            extra = [s for s in spans if s.feature == "search"]
            from spendtrace.schema import UsageItem

            big = [s.__class__(**{**{f: getattr(s, f) for f in s.__struct_fields__},
                                 "usage": (UsageItem("bedrock_claude_3_haiku", input_tokens=90_000),)})
                   for s in extra]
            write_batch_sync(conn, prepare_batch(big, PriceBook.default()))
        finally:
            conn.close()
        syncs = table.syncs
        await settle(app, pilot)
        assert table.syncs == syncs + 1
        assert table.current_key == "search"
        assert table.ordered_keys().index("search") < before
        assert rows_before != {k: table.get_row_index(k) for k in table.ordered_keys()}


async def test_markup_in_names_is_shown_as_typed(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """A feature named '[red]x' appears literally in the table, the tree and the filter result."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert MARKUP in _keys(app)
        assert f" {MARKUP} " in screen_text(app)
        await pilot.press("slash")
        await pilot.press(*"[red")
        await pilot.press("enter")
        await settle(app, pilot)  # the search runs in the store: the next refresh brings its rows
        assert _keys(app) == [MARKUP]
        assert MARKUP in screen_text(app)


async def test_filter_and_escape(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """'/' searches as you type (in the store); Esc clears the search and brings every row back."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        everything = _keys(app)
        await pilot.press("slash", *"prod")
        await settle(app, pilot)
        assert _keys(app) == ["product_details"]
        await pilot.press("enter")
        await settle(app, pilot)  # a refresh keeps the filter
        assert _keys(app) == ["product_details"]
        await pilot.press("escape")
        await settle(app, pilot)
        assert sorted(_keys(app)) == sorted(everything)


async def test_export_csv_and_copy(tui_db: Path, make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """ctrl+s writes the visible table as CSV (dollars, percentages) and says where; y copies the selected row."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+s")
        path = app.last_export
        assert path is not None and path.parent == tmp_path / "exports"
        with path.open(encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert rows[0][:3] == ["feature", "direct_cost_usd", "fully_loaded_cost_usd"]
        assert [r[0] for r in rows[1:]] == _keys(app)
        nano = app.screen.query_one("#main", KeyedTable).row_values("summarise")[1]
        assert Decimal(rows[1][1]) == Decimal(nano) / 10**9  # exact dollars, not nano-dollars
        assert any(str(path) in n.message for n in app._notifications)
        app.screen.query_one("#main", KeyedTable).focus()
        await pilot.press("j", "y")
        assert app.last_copied is not None and app.last_copied.split("\t")[0] == _keys(app)[1]
        # every field as the CSV has it: the same row of the export, dollars and percentages, no sparkline
        assert app.last_copied.split("\t") == rows[2]


async def test_pause_shows_badge_and_stops_refresh(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """'p' shows PAUSED in the header and no refresh runs until 'p' again."""
    app = make_app(tui_db, live=True, refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refresher.cycles >= 1, "first refresh")
        await pilot.press("p")
        await until(pilot, lambda: not app.refresher.busy, "refresh to finish")
        assert "PAUSED" in screen_text(app)
        cycles = app.refresher.cycles
        for _ in range(5):
            app._tick()
            await pilot.pause(0.06)
        assert app.refresher.cycles == cycles
        await pilot.press("p")
        await until(pilot, lambda: app.refresher.cycles > cycles, "refresh after resume")
        assert "PAUSED" not in screen_text(app)


async def test_a_tick_right_after_a_forced_refresh_does_not_swallow_it(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Resume, then an interval tick before the forced refresh's worker ran: the refresh still happens."""
    app = make_app(tui_db, live=True, refresh_interval=3600)  # ticks only when the test calls them
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refresher.cycles >= 1, "first refresh")
        await pilot.press("p")
        await until(pilot, lambda: not app.refresher.busy, "refresh to finish")
        cycles = app.refresher.cycles
        app.action_toggle_pause()  # schedules a forced refresh...
        app._tick()  # ...and a tick's refresh replaces it (the group is exclusive) before it ran
        await until(pilot, lambda: app.refresher.cycles > cycles, "the forced refresh after resume")


async def test_help_palette_and_mouse(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """'?' shows the keys; the command palette switches screens; clicking a tab switches too."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "pause / resume" in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, LiveScreen)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Go to Trends")
        await until(pilot, lambda: "Go to Trends" in screen_text(app), "palette hit")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TrendsScreen), "trends via palette")
        # the new screen is current before its tabs are mounted: click once they are there, as a person would
        await until(pilot, lambda: bool(app.screen.query("Tab#tenants")), "the tabs of the trends screen")
        await pilot.click("Tab#tenants")
        await until(pilot, lambda: isinstance(app.screen, TenantsScreen), "tenants via click")


async def test_empty_database_without_broker(tmp_path: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """A missing database file opens as an empty store: every screen renders, totals are zero."""
    app = make_app(tmp_path / "new" / "empty.db")
    async with app.run_test(size=SIZE) as pilot:
        for key in "1234567":
            await pilot.press(key)
            await settle(app, pilot)
        assert app.overview is not None and app.overview.total_nano == 0 and app.overview.spans == 0
        assert "broker off" in screen_text(app) and "total $0 " in screen_text(app)
        assert (tmp_path / "new" / "empty.db").exists()


async def test_trends_days_and_focus(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """'+'/'-' change the number of days charted; Enter on a feature charts it alone, Esc shows all."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, TrendsScreen) and screen.last is not None and len(screen.last.days) == 14
        await pilot.press("minus")
        await settle(app, pilot)
        assert screen.days == 7 and len(screen.last.days) == 7
        screen.query_one("#main", KeyedTable).focus()
        await pilot.press("g", "enter")
        assert screen.focus_feature == screen.query_one("#main", KeyedTable).ordered_keys()[0]
        await pilot.press("escape")
        assert screen.focus_feature is None


async def test_build_is_repeatable(db_path: Path, fixed_now_ns: int) -> None:
    """The fixed data set is identical every time (so snapshots can rely on it)."""
    a = build(db_path, fixed_now_ns)
    b = build(db_path.with_name("other.db"), fixed_now_ns)
    assert a == b


async def test_requests_filter_searches_what_the_rows_show_and_the_count_follows(  # type: ignore[no-untyped-def]
    tui_db: Path, make_app
) -> None:
    """On Requests, '/' matches endpoint and tenant too (in the store); the subtitle's row count follows it."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        table = app.screen.query_one("#main", KeyedTable)
        rows = {k: dict(zip(table.specs, table.row_values(k), strict=True)) for k in table.ordered_keys()}
        total = len(rows)
        assert f"{total} rows" in screen_text(app)
        batch = sorted(k for k, r in rows.items() if r["endpoint"] == "/api/batch")
        assert 0 < len(batch) < total
        await pilot.press("slash", *"/api/batch")
        assert sorted(table.ordered_keys()) == batch  # at once, among the rows already shown
        await settle(app, pilot)  # then the store's matches
        assert sorted(table.ordered_keys()) == batch
        assert f" {len(batch)} rows" in screen_text(app)
        await pilot.press("escape")
        globex = sorted(k for k, r in rows.items() if r["tenant"] == "tenant-globex")
        await pilot.press("slash", *"GLOBEX")  # case-insensitive, on the tenant column
        await settle(app, pilot)
        assert sorted(table.ordered_keys()) == globex
        await pilot.press("escape")
        await settle(app, pilot)
        assert len(table.ordered_keys()) == total and f"{total} rows" in screen_text(app)
