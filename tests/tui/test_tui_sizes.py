"""What must stay whole at 80x24 (usable) and at 200x50 (good): figures, names, legends and labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _snap import screen_text
from _tui_data import BIG_REQUEST
from _tui_helpers import SIZE, settle, until

from tui.format import MONEY_WIDTH, RATE_WIDTH, money, rate_text
from tui.messages import OpenRequest
from tui.screens.alerts import event_columns, rule_columns
from tui.screens.dimension import _columns
from tui.screens.requests import columns as request_columns
from tui.screens.tree import RequestTreeScreen
from tui.screens.trends import columns as trend_columns
from tui.widgets.fast_table import middle_cut
from tui.widgets.keyed_table import KeyedTable

#: Whole nano-dollar amounts from one nano-dollar to $999,999.99, with every digit pattern's width.
AMOUNTS = [
    m * 10**e for e in range(15) for m in (1, 9, 12, 99, 123, 999, 1234, 4875, 9999, 99999) if m * 10**e < 10**15
]


def _row(text: str, name: str) -> str:
    """The screen line of the table row that starts with ``name``."""
    return next(line for line in text.splitlines() if line.lstrip(" │▊").startswith(name))


def test_money_and_rate_columns_fit_every_amount_the_money_rule_writes() -> None:
    """Every money column is as wide as the widest amount below $1,000,000, and every rate column that and '/h'."""
    assert max(len(money(n)) for n in AMOUNTS) == MONEY_WIDTH
    assert max(len(rate_text(n).plain) for n in AMOUNTS) == RATE_WIDTH
    for width in (80, 160):
        specs = [*_columns("feature", width), *_columns("user", width), *event_columns(width), *rule_columns(width),
                 *request_columns(width), *trend_columns(width)]  # fmt: skip
        for spec in specs:
            if spec.key == "rate":
                assert spec.width >= RATE_WIDTH, spec
            elif spec.unit == "usd" or spec.key in ("total", "avg", "last"):
                assert spec.width >= MONEY_WIDTH, spec


async def test_a_tiny_rate_shows_whole_on_live(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """search's last hour ($0.000004875/h, as wide as a rate gets) keeps its '/h'."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "$0.000004875/h" in _row(screen_text(app), "search")


async def test_live_at_80x24_shows_the_share_the_tabs_and_the_dead_letters_whole(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """The share column, the last tab's label, what the totals leave out and the sort hints are not cut."""
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        text = screen_text(app)
    assert "96.5%" in _row(text, "summarise") and "$0.000004875/h" in _row(text, "search")
    assert "product_deta… " in _row(text, "product_deta")  # a name cut by its column says so
    assert text.splitlines()[1].rstrip().endswith("7 Reconcile")
    joined = " ".join(line.strip() for line in text.splitlines())  # the rows that wrapped, read as one
    assert "undecodable msgpack" in joined
    assert "ctrl+s csv" in joined  # the end of the hints, on their second row


@pytest.mark.parametrize(
    ("key", "row", "figure"), [("4", BIG_REQUEST, "$0.2105"), ("5", "2026-11-02 11:55:00", "$0.06123")]
)
async def test_requests_and_alerts_at_80x24_show_the_money(  # type: ignore[no-untyped-def]
    tui_db: Path, make_app, key: str, row: str, figure: str
) -> None:
    """The request list's cost and a fired alert's value are on an 80-column screen, whole."""
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(key)
        await settle(app, pilot)
        text = screen_text(app)
    line = next(line for line in text.splitlines() if row in line)
    assert figure in line, text


async def test_trends_legend_wraps_at_80x24(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Every charted feature is in the legend, the last on a second row, not cut off at the edge."""
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await settle(app, pilot)
        text = screen_text(app)
    assert "■ product_details" in text and "■ search" in text.split("■ product_details", 1)[1].split("Feature")[0]


async def test_the_request_tree_at_80x24_shows_each_span_s_costs(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Without the waterfall each span's direct and subtree cost and its time fit; the summary wraps whole."""
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        app.post_message(OpenRequest(BIG_REQUEST))
        await until(pilot, lambda: isinstance(app.screen, RequestTreeScreen) and bool(app.screen.roots), "tree")
        await pilot.pause()
        text = screen_text(app)
    assert "direct $0.0000004  subtree $0.2105 (100%)  12.0ms" in _row(text, "└── ▼ api · handle")
    assert "direct $0.000000125 (0%)  12.0ms" in text
    assert "40,000 in 6,000 out  $0.21" in text
    assert "Esc back" in text


def _assert_every_column_whole(app: Any) -> None:
    """Nothing to scroll to: the name and every figure (services included) of every row are on screen as shown."""
    table = app.screen.query_one("#main", KeyedTable)
    assert table.virtual_size.width <= table.size.width
    text = screen_text(app)
    specs = list(table.specs.values())
    assert len(specs) > 10  # the service columns are there
    header = next(line for line in text.splitlines() if line.lstrip().startswith(specs[0].label))
    assert all(spec.label in header for spec in specs)
    for key_ in table.ordered_keys():
        cells = table._rows[key_]
        line = _row(text, cells["name"].plain)
        for spec in specs:
            cell = cells.get(spec.key)
            if cell is not None and cell.plain:
                assert f" {cell.plain}" in line or line.lstrip().startswith(cell.plain), (spec.key, line)


@pytest.mark.parametrize("key", ["1", "2"])
async def test_live_and_tenants_at_200x50_show_every_column_whole(tui_db: Path, make_app, key: str) -> None:  # type: ignore[no-untyped-def]
    """Nothing to scroll to: the name and every figure (services included) of every row are on screen as shown."""
    app = make_app(tui_db)
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.press(key)
        await settle(app, pilot)
        _assert_every_column_whole(app)


async def test_the_columns_follow_a_resized_terminal(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Started at 80x24 then made 200x50, Live widens its name column and shows every column whole; a screen
    composed at 200 columns and shown again after the terminal shrank to 80 takes the narrow layout."""
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        live = app.screen.query_one("#main", KeyedTable)
        assert live.specs["name"].width == _columns("feature", 80)[0].width < _columns("feature", 200)[0].width
        await pilot.resize_terminal(200, 50)
        await settle(app, pilot)
        assert live.specs["name"].width == _columns("feature", 200)[0].width
        assert live.columns[live.ordered_columns[0].key].width == _columns("feature", 200)[0].width
        _assert_every_column_whole(app)
        await pilot.press("5")  # Alerts, composed at 200 columns
        await settle(app, pilot)
        await pilot.press("1")
        await settle(app, pilot)
        await pilot.resize_terminal(80, 24)
        await settle(app, pilot)
        assert live.specs["name"].width == _columns("feature", 80)[0].width
        assert "96.5%" in _row(screen_text(app), "summarise")  # the share is back in view
        await pilot.press("5")
        await settle(app, pilot)
        events = app.screen.query_one("#events", KeyedTable)
        assert events.specs["rule"].width == event_columns(80)[1].width
        line = next(line for line in screen_text(app).splitlines() if "2026-11-02 11:55:00" in line)
        assert "$0.06123" in line


async def test_long_request_ids_keep_their_ends_at_80x24(tui_db: Path, make_app, fixed_now_ns: int) -> None:  # type: ignore[no-untyped-def]
    """Ids longer than the Request column (traces share prefixes) are cut in the middle, not at the end, so two
    requests stay apart on screen; the copy and the export keep the whole id."""
    import random

    from _tui_data import request

    from spendtrace.server.pricing import PriceBook
    from spendtrace.server.store.sqlite._db import connect
    from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

    ids = [f"5918f436b6af30f60x316{c}" for c in "cd"]  # 22 characters, the same first 21
    rng = random.Random(1)
    spans = [
        s for i, rid in enumerate(ids) for s in request(rid, fixed_now_ns - (i + 1) * 10**9, "t", "/e", "search", rng)
    ]
    conn = connect(tui_db)
    try:
        write_batch_sync(conn, prepare_batch(spans, PriceBook.default()))
    finally:
        conn.close()
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        width = request_columns(80)[1].width  # the column's cells, its padding aside
        assert width < len(ids[0])
        text = screen_text(app)
        shown = [middle_cut(rid, width) for rid in ids]
        assert shown[0] != shown[1]
        assert all(s in text and s.endswith(rid[-6:]) for s, rid in zip(shown, ids, strict=True))
        table = app.screen.query_one("#main", KeyedTable)
        table.focus()
        await pilot.press("g", "y")
        assert app.last_copied is not None and app.last_copied.split("\t")[1] == ids[0]
