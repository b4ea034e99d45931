"""TUI fixtures: the fixed data set in a real SQLite store, and an app factory with a fixed clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _tmux_helpers import tmux_session
from _tui_data import build

from tui.app import SpendtraceApp


@pytest.fixture
def tui_db(db_path: Path, fixed_now_ns: int) -> Path:
    """A store holding the fixed TUI data set (real spans through the real ingest path)."""
    build(db_path, fixed_now_ns)
    return db_path


@pytest.fixture
def make_app(fixed_now_ns: int, tmp_path: Path) -> Callable[..., SpendtraceApp]:
    """Build an app on a database with the fixed clock, no timer-driven refresh and exports in tmp_path."""

    def factory(db: Path, **kw: object) -> SpendtraceApp:
        kw.setdefault("clock", lambda: fixed_now_ns)
        kw.setdefault("monotonic", lambda: 1.0)
        kw.setdefault("live", False)
        kw.setdefault("export_dir", tmp_path / "exports")
        return SpendtraceApp(db, **kw)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def session(tmp_path: Path) -> Iterator[str]:
    """A tmux session name on a tmux server of our own; the session is killed afterwards."""
    yield from tmux_session(tmp_path)
