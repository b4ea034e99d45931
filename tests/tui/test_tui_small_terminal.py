"""At 80x24 the Trends screen keeps today and the legend in view (the chart shows the most recent days)."""

from __future__ import annotations

import time
from pathlib import Path

from _snap import screen_text
from _tui_helpers import settle, until

from tui.screens.trends import TrendsScreen
from tui.widgets.trend_chart import render_chart


async def test_trends_at_80x24_shows_today_and_the_legend(tui_db: Path, make_app, fixed_now_ns: int) -> None:  # type: ignore[no-untyped-def]
    """Fourteen days do not fit: the oldest give way, today's bar (the spike) and the legend stay."""
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await settle(app, pilot)
        assert isinstance(app.screen, TrendsScreen)
        text = screen_text(app)
    today = time.strftime("%m-%d", time.gmtime(fixed_now_ns // 10**9))
    today_line = next(line for line in text.splitlines() if line.lstrip().startswith(today))
    assert "█" in today_line  # the day with the spend is drawn, not cut off
    assert "■ summarise" in text  # the legend
    oldest = time.strftime("%m-%d", time.gmtime(fixed_now_ns // 10**9 - 13 * 86_400))
    assert not any(line.lstrip().startswith(oldest) for line in text.splitlines())


def test_a_small_day_keeps_a_mark_beside_a_large_one() -> None:
    """A day whose bar would round to nothing still shows a thin mark, so it does not look empty."""
    from spendtrace.server.model.dashboard import TrendSnapshot

    snap = TrendSnapshot(days=[0, 86_400], features=["f"], cost={"f": [1, 1_000_000]})
    lines = render_chart(snap, 60).plain.splitlines()
    assert "▏" in lines[0] and "█" in lines[1]
    assert len(render_chart(snap, 60, max_days=1).plain.splitlines()) == 2  # one day + the legend


async def test_live_at_80x24_keeps_the_header_figures_and_the_money_columns(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """The compact header keeps total, $/h, unpriced, dead letters and alerts; the name column gives way."""
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        lines = screen_text(app).splitlines()
    header = lines[0]
    assert "$0.2176" in header and "/h" in header
    assert "unpr 16" in header and "dead 1" in header and "alerts 1" in header
    columns = next(line for line in lines if line.lstrip().startswith("Feature"))
    assert "Direct" in columns and "Loaded" in columns and "Last hour" in columns and "Calls" in columns


async def test_reconciliation_without_credentials_says_all_of_it_at_80x24(  # type: ignore[no-untyped-def]
    tui_db: Path, make_app, monkeypatch
) -> None:
    """No AWS credentials and no saved bill: the error wraps and its advice (--actuals) is on screen, not cut."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tui_db.with_name("no-credentials")))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tui_db.with_name("no-config")))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    app = make_app(tui_db)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("7")
        await settle(app, pilot)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: "failed" in screen_text(app), "the reconciliation to fail")
        text = " ".join(line.strip() for line in screen_text(app).splitlines())
    assert "found no AWS credentials" in text
    assert "GetCostAndUsage JSON response" in text, text  # the end of the advice, past the 80th column


async def test_the_name_column_stays_when_a_narrow_table_scrolls_sideways(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """At 60 columns Live is wider than the screen: scrolled to its right edge, each row still starts with its name."""
    from tui.widgets.keyed_table import KeyedTable

    app = make_app(tui_db)
    async with app.run_test(size=(60, 24)) as pilot:
        await settle(app, pilot)
        table = app.screen.query_one("#main", KeyedTable)
        assert table.virtual_size.width > table.size.width  # the case under test: there is something to scroll to
        names = [str(table.row_values(key)[0]) for key in list(table.rows)[:3]]
        for _ in range(40):
            await pilot.press("right")
        await settle(app, pilot)
        assert table.scroll_x > 0
        text = screen_text(app)
        for name in names:
            assert any(line.lstrip(" │▊").startswith(name[:12]) for line in text.splitlines()), (name, text)
