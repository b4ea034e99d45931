"""The TUI on a ClickHouse store (chDB in this process): every screen shows what it shows on SQLite.

Both stores get the fixed data set through the ingest interface (``open_ingest_store``), the same
batches; the app is driven by ``run_test()`` on each and the screens' tables are compared cell by cell.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from _snap import screen_text
from _tui_data import BIG_REQUEST, make_spans
from _tui_helpers import SIZE, settle

from spendtrace.server.alerts.rules import set_alert
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.model.ingest import DeadLetter
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import open_ingest_store
from tui.cli import main as tui_main
from tui.widgets.keyed_table import KeyedTable


def _fill(url: str, now_ns: int) -> None:
    """The fixed data set in batches of 50, a dead letter and one alert rule, through the interfaces."""
    spans = make_spans(now_ns)
    book = PriceBook.default()
    store = open_ingest_store(url)
    try:
        for i in range(0, len(spans), 50):
            store.apply_batch(prepare_batch(spans[i : i + 50], book))
        dead = DeadLetter("spendtrace.spans", 0, 7, b"k", b"\x00garbage", "undecodable msgpack")
        store.apply_batch(prepare_batch([], book), dead_letters=[dead])
    finally:
        store.close()
    set_alert(feature="recommend", threshold=0.05, window_hours=1, name="recs-hourly", db_path=url)


async def _screens(app: Any) -> dict[str, Any]:
    """Each screen's table (keys in order, every row's values) and the header's total."""
    out: dict[str, Any] = {}
    async with app.run_test(size=SIZE) as pilot:
        for key in ("1", "2", "3", "4", "5", "6"):
            await pilot.press(key)
            await settle(app, pilot)
            out[key] = [
                (k, table.row_values(k)) for table in app.screen.query(KeyedTable) for k in table.ordered_keys()
            ]
            out[key + "-text"] = screen_text(app)
        out["total"] = app.overview.total_nano
    return out


async def test_every_screen_on_chdb_shows_what_it_shows_on_sqlite(
    tmp_path: Path, fixed_now_ns: int, make_app: Any
) -> None:
    """Live, Tenants, Endpoints, Requests, Alerts and Trends: the same rows and values on both backends."""
    chdb = f"chdb://{tmp_path.parent / 'chdb'}?database=tui_{uuid.uuid4().hex[:12]}"
    sqlite = f"sqlite:///{tmp_path / 'tui.db'}"
    _fill(chdb, fixed_now_ns)
    _fill(sqlite, fixed_now_ns)
    on_chdb = await _screens(make_app(chdb))
    on_sqlite = await _screens(make_app(sqlite))
    assert on_chdb["total"] == on_sqlite["total"] > 0
    for key in ("1", "2", "3", "4", "5", "6"):
        assert on_chdb[key] == on_sqlite[key], f"screen {key}"
        assert on_chdb[key] or key == "5", f"screen {key} shows no rows"
    assert BIG_REQUEST in on_chdb["4-text"] and "recs-hourly" in on_chdb["5-text"]
    assert "chdb://chdb" in on_chdb["1-text"]  # the status bar names the store, without its path's secrets


def test_the_command_line_opens_chdb_stores_and_refuses_what_chdb_cannot_do(
    tmp_path: Path, capsys: Any
) -> None:
    """``spendtrace-tui --store chdb:///dir`` needs the directory, and refuses ``--serve`` (one process per dir)."""
    missing = f"chdb://{tmp_path / 'nowhere'}"
    assert tui_main(["--store", missing]) == 2
    assert "no chDB data directory" in capsys.readouterr().err
    present = f"chdb://{tmp_path.parent / 'chdb'}"
    (tmp_path.parent / "chdb").mkdir(exist_ok=True)
    assert tui_main(["--store", present, "--serve"]) == 2
    assert "one" in capsys.readouterr().err
