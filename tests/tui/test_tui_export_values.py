"""ctrl+s exports: every cell of the CSV against the table it came from and against the store's own numbers.

The navigation test checks the header and one Direct value; a CSV with the right keys and a right
first column but zeros (or anything else) in the other columns passed it.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from _tui_helpers import SIZE, settle

from spendtrace import SQLiteStorage
from tui.widgets.keyed_table import KeyedTable

MINUTE_NS = 60 * 10**9
HOUR_NS = 60 * MINUTE_NS


async def _export(app: Any, pilot: Any, key: str) -> tuple[list[list[str]], KeyedTable]:
    """Switch screens with ``key``, press ctrl+s, and read back the CSV the app says it wrote."""
    await pilot.press(key)
    await settle(app, pilot)
    before = app.last_export
    await pilot.press("ctrl+s")
    await pilot.pause()
    assert app.last_export is not None and app.last_export != before
    with app.last_export.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows, app.screen.query_one("#main", KeyedTable)


def _as_written(value: object) -> str:
    """What csv.writer writes for a raw cell value (None is written as an empty field)."""
    return "" if value is None else str(value)


def _by_name(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    header = rows[0]
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}


@pytest.mark.parametrize("key", ["1", "2", "3"], ids=["live", "tenants", "endpoints"])
async def test_every_exported_cell_is_the_tables_raw_value(tui_db: Path, make_app, key: str) -> None:  # type: ignore[no-untyped-def]
    """Header, row order and every cell of every row equal the table's labels, display order and raw values."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        rows, table = await _export(app, pilot, key)
        assert rows[0] == [spec.label for spec in table.specs.values()]
        assert [r[0] for r in rows[1:]] == table.ordered_keys()
        assert len(rows) > 2 and len(rows[0]) > 8  # several rows, several service columns
        for row in rows[1:]:
            assert row == [_as_written(v) for v in table.row_values(row[0])], row[0]


async def test_live_export_matches_the_stores_numbers(tui_db: Path, make_app, fixed_now_ns: int) -> None:  # type: ignore[no-untyped-def]
    """Live's CSV (all time) against SQLiteStorage: direct, loaded, last hour, calls, errors, unpriced, services."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        rows, _ = await _export(app, pilot, "1")
    exported = _by_name(rows)
    services = rows[0][rows[0].index("Unpr") + 1 :]
    with SQLiteStorage(tui_db) as storage:
        direct = {r["feature"]: r for r in storage.aggregate_by_feature()}
        loaded = {r["feature"]: r["fully_loaded_cost_nano"] for r in storage.get_feature_cost_breakdown()}
        # "Last hour" is the 60 one-minute buckets up to and including the current one (now is on a minute)
        since = fixed_now_ns - HOUR_NS + MINUTE_NS
        last_hour = {r["feature"]: r["cost_nano"] for r in storage.aggregate_by_feature(since)}
        total = storage.total()["cost_nano"]
    assert set(exported) == set(direct)
    for feature, cells in exported.items():
        want = direct[feature]
        assert int(cells["Direct"]) == want["cost_nano"], feature
        assert int(cells["Loaded"]) == loaded[feature], feature
        assert int(cells["Last hour"]) == last_hour.get(feature, 0), feature
        assert sum(int(v) for v in cells["Last 60 min"].split(",")) == int(cells["Last hour"]), feature
        assert float(cells["Calls"]) == want["calls"], feature
        assert float(cells["Share"]) == pytest.approx(want["cost_nano"] / total, rel=1e-12), feature
        assert int(cells["Err"]) == want["error_count"], feature
        assert int(cells["Unpr"]) == want["unpriced_count"], feature
        for service in services:
            assert int(cells[service]) == want["service_costs_nano"].get(service, 0), (feature, service)


async def test_tenants_export_matches_the_stores_numbers(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Tenants' CSV (all time) against SQLiteStorage.aggregate_by_user: cost, requests, errors, unpriced, services."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        rows, _ = await _export(app, pilot, "2")
    exported = _by_name(rows)
    services = rows[0][rows[0].index("Unpr") + 1 :]
    with SQLiteStorage(tui_db) as storage:
        users = {r["user_id"]: r for r in storage.aggregate_by_user()}
    assert set(exported) == set(users)
    for tenant, cells in exported.items():
        want = users[tenant]
        assert int(cells["Cost"]) == want["cost_nano"], tenant
        assert int(cells["Requests"]) == want["request_count"], tenant
        assert int(cells["Err"]) == want["error_count"], tenant
        assert int(cells["Unpr"]) == want["unpriced_count"], tenant
        for service in services:
            assert int(cells[service]) == want["service_costs_nano"].get(service, 0), (tenant, service)
