"""Tenants at scale in the TUI: a page of 100 plus an exact "others" row, ] / [ paging, '/' searching the store."""

from __future__ import annotations

from pathlib import Path

from _snap import screen_text
from _tui_helpers import SIZE, settle

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from tui.screens.dimension import OTHERS_KEY, PAGE_SIZE, TenantsScreen
from tui.widgets.keyed_table import KeyedTable

N = 250
NANO = 10**9


def _db(path: Path, now_ns: int) -> Path:
    """N tenants and features; tenant (and feature) i reads (i + 1) DynamoDB items once in the last ten minutes."""
    spans = [
        Span(f"s{i}", None, f"r{i}", f"feature-{i:04d}", endpoint="/x", user_id=f"tenant-{i:04d}",
             start_ns=now_ns - 600 * NANO + i, usage=(UsageItem("dynamodb_read", count=float(i + 1)),),
             path=(f"feature-{i:04d}",))
        for i in range(N)
    ]  # fmt: skip
    conn = connect(path)
    try:
        write_batch_sync(conn, prepare_batch(spans, PriceBook.default()))
    finally:
        conn.close()
    return path


def _table(app) -> KeyedTable:  # type: ignore[no-untyped-def]
    return app.screen.query_one("#main", KeyedTable)


def _tenants(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [k for k in _table(app).ordered_keys() if k != OTHERS_KEY]


async def test_tenants_page_others_and_paging_keys(  # type: ignore[no-untyped-def]
    tmp_path: Path, make_app, fixed_now_ns: int
) -> None:
    """The 100 costliest tenants, then 'others' (pinned last, exact); ] and [ page through all 250."""
    db = _db(tmp_path / "many.db", fixed_now_ns)
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(app, pilot)
        assert isinstance(app.screen, TenantsScreen)
        first = _tenants(app)
        assert first == [f"tenant-{i:04d}" for i in range(N - 1, N - 1 - PAGE_SIZE, -1)]
        snap = app.screen.last
        assert _table(app).ordered_keys()[-1] == OTHERS_KEY
        assert snap.others_values == N - PAGE_SIZE
        assert snap.others_nano == snap.total_nano - sum(r.cost_nano for r in snap.rows) > 0
        assert "rows 1-100 of 250" in screen_text(app) and "others 150 tenants" in screen_text(app)
        others = _table(app).row_cells(OTHERS_KEY)
        assert others["name"].plain == "others (150 tenants)" and others["cost"].raw == snap.others_nano
        _table(app).set_sort("name")  # sorting by name keeps 'others' last
        assert _table(app).ordered_keys()[-1] == OTHERS_KEY
        await pilot.press("right_square_bracket")
        await settle(app, pilot)
        assert "rows 101-200 of 250" in screen_text(app)
        assert set(_tenants(app)) == {f"tenant-{i:04d}" for i in range(N - 1 - PAGE_SIZE, N - 1 - 2 * PAGE_SIZE, -1)}
        await pilot.press("right_square_bracket")
        await settle(app, pilot)
        await pilot.press("right_square_bracket")  # past the last page: stays
        await settle(app, pilot)
        assert "rows 201-250 of 250" in screen_text(app)
        assert set(_tenants(app)) == {f"tenant-{i:04d}" for i in range(50)}
        for _ in range(3):
            await pilot.press("left_square_bracket")
            await settle(app, pilot)
        assert "rows 1-100 of 250" in screen_text(app)
        assert set(_tenants(app)) == set(first)


async def test_slash_searches_every_tenant_in_the_store(tmp_path: Path, make_app, fixed_now_ns: int) -> None:  # type: ignore[no-untyped-def]
    """'/0007' finds tenant-0007, which is not on the first page; Esc brings the first page back."""
    db = _db(tmp_path / "many.db", fixed_now_ns)
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(app, pilot)
        assert "tenant-0007" not in _tenants(app)
        await pilot.press("slash", *"0007")
        await settle(app, pilot)
        assert _tenants(app) == ["tenant-0007"]
        assert OTHERS_KEY not in _table(app).ordered_keys()
        assert "rows 1-1 of 1" in screen_text(app)
        await pilot.press("escape")
        await settle(app, pilot)
        assert len(_tenants(app)) == PAGE_SIZE and "rows 1-100 of 250" in screen_text(app)


async def test_requests_slash_finds_an_old_request(  # type: ignore[no-untyped-def]
    tmp_path: Path, make_app, fixed_now_ns: int
) -> None:
    """Requests shows the newest 200 of 250; '/tenant-0007' finds r7 (older than all of them) through the store."""
    db = _db(tmp_path / "many.db", fixed_now_ns)
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        assert len(_table(app).ordered_keys()) == 200 and "r7" not in _table(app).ordered_keys()
        await pilot.press("slash", *"tenant-0007")
        await settle(app, pilot)
        assert _table(app).ordered_keys() == ["r7"]
        await pilot.press("escape")
        await settle(app, pilot)
        assert len(_table(app).ordered_keys()) == 200


async def test_trends_chart_the_top_features_and_one_others_row(  # type: ignore[no-untyped-def]
    tmp_path: Path, make_app, fixed_now_ns: int
) -> None:
    """Trends with 250 features: 20 rows of their own and a pinned 'others (230 features)' row adding up the rest."""
    from tui.screens.trends import TOP_FEATURES

    db = _db(tmp_path / "many.db", fixed_now_ns)
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await settle(app, pilot)
        keys = _table(app).ordered_keys()
        assert len(keys) == TOP_FEATURES + 1 and keys[-1] == OTHERS_KEY
        assert keys[0] == f"feature-{N - 1:04d}"
        snap = app.screen.last
        others = _table(app).row_cells(OTHERS_KEY)
        assert others["feature"].plain == f"others ({N - TOP_FEATURES} features)"
        assert others["total"].raw == sum(snap.others) > 0
        assert "top 20 + 230 others" in screen_text(app)
