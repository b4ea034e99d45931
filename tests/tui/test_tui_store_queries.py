"""The TUI's dimension query reads the dashboard rollups and gives what the full rollups give."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from tui.data import WINDOWS, Store


async def test_dimension_from_dash_rollups_equals_full_rollups(tui_db: Path, fixed_now_ns: int, tmp_path: Path) -> None:
    """Every dimension and window: the same rows, per-service costs and totals with or without ``dash_*`` tables."""
    plain = tmp_path / "no-dash.db"
    shutil.copyfile(tui_db, plain)
    with sqlite3.connect(plain) as conn:  # without the marker the store reads rollup_* as a file of an older writer
        conn.execute("DELETE FROM meta WHERE key = 'dash_rollups'")
    dash = await Store(tui_db, clock=lambda: fixed_now_ns).open()
    full = await Store(plain, clock=lambda: fixed_now_ns).open()
    try:
        assert await dash._has_dash() and not await full._has_dash()
        for dimension in ("feature", "user", "endpoint"):
            for window in WINDOWS:
                got = await dash.dimension(dimension, window)
                want = await full.dimension(dimension, window)
                assert got.rows and got.services, (dimension, window)
                assert got == want, (dimension, window)
    finally:
        await dash.close()
        await full.close()
