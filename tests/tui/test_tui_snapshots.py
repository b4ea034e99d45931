"""Snapshot tests: each screen on the fixed data, fixed clock and fixed terminal size, compared as text.

Each screen is recorded at the usual size (150x36, no suffix), at 80x24 (usable) and at 160x45 (good).
Regenerate after an intended change with ``SPENDTRACE_UPDATE_SNAPSHOTS=1 python -m pytest tests/tui``
and review the diff of ``tests/tui/snapshots/*.txt`` (the SVGs beside them are for looking at).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _snap import assert_snapshot
from _tui_data import BIG_REQUEST
from _tui_helpers import SIZE, settle, until

from tui.messages import OpenRequest
from tui.screens.tree import RequestTreeScreen

#: Terminal sizes the screens are recorded at, and the suffix of their snapshot names.
SIZES = [pytest.param(SIZE, "", id="150x36"), pytest.param((80, 24), "-80x24", id="80x24"),
         pytest.param((160, 45), "-160x45", id="160x45")]  # fmt: skip


@pytest.mark.parametrize(("size", "suffix"), SIZES)
@pytest.mark.parametrize(
    ("key", "name"),
    [("1", "live"), ("2", "tenants"), ("3", "endpoints"), ("4", "requests"), ("5", "alerts"), ("6", "trends"),
     ("7", "reconcile")],
)
async def test_screen_snapshot(  # type: ignore[no-untyped-def]
    tui_db: Path, make_app, key: str, name: str, size: tuple[int, int], suffix: str
) -> None:
    """The screen looks exactly as recorded at this size (every character, no relative times)."""
    app = make_app(tui_db)
    async with app.run_test(size=size) as pilot:
        await pilot.press(key)
        await settle(app, pilot)
        text = assert_snapshot(app, name + suffix)
        assert "12:00" in text.splitlines()[0]  # the header's fixed clock (seconds and UTC from 120 columns)


@pytest.mark.parametrize(("size", "suffix"), SIZES)
async def test_request_tree_snapshot(tui_db: Path, make_app, size: tuple[int, int], suffix: str) -> None:  # type: ignore[no-untyped-def]
    """The most expensive request's call tree looks exactly as recorded at this size."""
    app = make_app(tui_db)
    async with app.run_test(size=size) as pilot:
        await pilot.press("4")
        await settle(app, pilot)
        app.post_message(OpenRequest(BIG_REQUEST))
        await until(pilot, lambda: isinstance(app.screen, RequestTreeScreen) and bool(app.screen.roots), "tree")
        await pilot.pause()
        text = assert_snapshot(app, "request_tree" + suffix)
        assert BIG_REQUEST in text


async def test_help_snapshot(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """The help overlay over Live looks exactly as recorded."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert "ctrl+s" in assert_snapshot(app, "help")
