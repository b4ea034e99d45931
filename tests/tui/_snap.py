"""Snapshot helpers: the screen as plain text, compared with files under ``tests/tui/snapshots``.

pytest-textual-snapshot was not used: its syrupy pin needs pytest < 9, which this project runs.
Plain text keeps every character of the screen (what a person reads) and gives readable diffs;
the SVG beside each text file is written on update for people to look at, never compared.
Set ``SPENDTRACE_UPDATE_SNAPSHOTS=1`` to (re)write the snapshot files.
"""

from __future__ import annotations

import difflib
import io
import os
from pathlib import Path

from rich.console import Console
from textual.app import App

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("SPENDTRACE_UPDATE_SNAPSHOTS") == "1"


def screen_text(app: App[object]) -> str:
    """Every cell of the current screen as text, one line per terminal row, trailing blanks stripped."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    render = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    console.print(render)
    text = console.export_text(styles=False)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def assert_snapshot(app: App[object], name: str) -> str:
    """Compare the screen with ``snapshots/NAME.txt`` (write it, and an SVG, when updating)."""
    text = screen_text(app)
    path = SNAPSHOTS / f"{name}.txt"
    if UPDATE or not path.exists():
        if not UPDATE:
            raise AssertionError(f"no snapshot {path}; run with SPENDTRACE_UPDATE_SNAPSHOTS=1 to create it")
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        (SNAPSHOTS / f"{name}.svg").write_text(app.export_screenshot(title=name), encoding="utf-8")
        return text
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "expected", "actual"))
        raise AssertionError(f"screen differs from {path}:\n{diff}")
    return text
