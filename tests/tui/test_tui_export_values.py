"""ctrl+s exports: every cell of the CSV against the table it came from and against the store's own numbers.

Money is exported as exact dollars (``*_usd`` columns), shares as percentages (``share_pct``), times
as ISO 8601 UTC (``*_utc``), durations as milliseconds (``*_ms``), and the sparkline column is left out.

The navigation test checks the header and one Direct value; a CSV with the right keys and a right
first column but zeros (or anything else) in the other columns passed it.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from _tui_helpers import SIZE, settle

from spendtrace import SQLiteStorage
from tui.widgets.keyed_table import KeyedTable

MINUTE_NS = 60 * 10**9
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


def _as_written(spec: Any, value: object) -> str | None:
    """What the export writes for a raw cell of ``spec``'s column (None: the column is not exported)."""
    if spec.unit == "skip":
        return None
    if value is None:
        return ""
    if spec.unit == "usd":
        return f"{(Decimal(value) / 10**9).normalize():f}" if isinstance(value, int) else str(value)
    if spec.unit == "pct":
        return f"{Decimal(repr(float(value) * 100)).quantize(Decimal('0.0001'))}"
    return str(value)


def usd(cell: str) -> int:
    """An exported dollar amount back in nano-dollars, exactly (it must be a whole number of them)."""
    nano = Decimal(cell) * 10**9
    assert nano == nano.to_integral_value(), cell
    return int(nano)


def _by_name(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    header = rows[0]
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}


@pytest.mark.parametrize("key", ["1", "2", "3"], ids=["live", "tenants", "endpoints"])
async def test_every_exported_cell_is_the_tables_raw_value(tui_db: Path, make_app, key: str) -> None:  # type: ignore[no-untyped-def]
    """Header, row order and every cell of every row equal the table's labels, display order and raw values."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        rows, table = await _export(app, pilot, key)
        specs = [s for s in table.specs.values() if s.unit != "skip"]
        assert rows[0] == [s.csv_header for s in specs]
        assert "last_60_min" not in rows[0] and any(h.endswith("_usd") for h in rows[0]) and "share_pct" in rows[0]
        assert [r[0] for r in rows[1:]] == table.ordered_keys()
        assert len(rows) > 2 and len(rows[0]) > 8  # several rows, several service columns
        for row in rows[1:]:
            raw = dict(zip(table.specs, table.row_values(row[0]), strict=True))
            want = [_as_written(s, raw[s.key]) for s in specs]
            assert row == want, row[0]


async def test_live_export_matches_the_stores_numbers(tui_db: Path, make_app, fixed_now_ns: int) -> None:  # type: ignore[no-untyped-def]
    """Live's CSV (all time) against SQLiteStorage: direct, loaded, last hour, calls, errors, unpriced, services."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        rows, _ = await _export(app, pilot, "1")
    exported = _by_name(rows)
    services = [h.removesuffix("_usd") for h in rows[0][rows[0].index("unpriced") + 1 :]]
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
        assert usd(cells["direct_cost_usd"]) == want["cost_nano"], feature
        assert usd(cells["fully_loaded_cost_usd"]) == loaded[feature], feature
        assert usd(cells["last_hour_usd"]) == last_hour.get(feature, 0), feature
        assert float(cells["calls"]) == want["calls"], feature
        assert float(cells["share_pct"]) == pytest.approx(100 * want["cost_nano"] / total, abs=1e-4), feature
        assert int(cells["errors"]) == want["error_count"], feature
        assert int(cells["unpriced"]) == want["unpriced_count"], feature
        for service in services:
            cell = cells[f"{service}_usd"]  # empty: the feature never used the service (the table shows —)
            assert (
                (service not in want["service_costs_nano"])
                if cell == ""
                else (usd(cell) == want["service_costs_nano"].get(service, 0))
            ), (feature, service)


async def test_tenants_export_matches_the_stores_numbers(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Tenants' CSV (all time) against SQLiteStorage.aggregate_by_user: cost, requests, errors, unpriced, services."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        rows, _ = await _export(app, pilot, "2")
    exported = _by_name(rows)
    services = [h.removesuffix("_usd") for h in rows[0][rows[0].index("unpriced") + 1 :]]
    with SQLiteStorage(tui_db) as storage:
        users = {r["user_id"]: r for r in storage.aggregate_by_user()}
    assert set(exported) == set(users)
    for tenant, cells in exported.items():
        want = users[tenant]
        assert usd(cells["cost_usd"]) == want["cost_nano"], tenant
        assert int(cells["requests"]) == want["request_count"], tenant
        assert int(cells["errors"]) == want["error_count"], tenant
        assert int(cells["unpriced"]) == want["unpriced_count"], tenant
        for service in services:
            cell = cells[f"{service}_usd"]
            assert (
                (service not in want["service_costs_nano"])
                if cell == ""
                else (usd(cell) == want["service_costs_nano"].get(service, 0))
            ), (tenant, service)


async def test_requests_export_times_as_utc_and_durations_in_ms(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Requests' CSV: ``started_utc`` an ISO time, ``took_ms`` milliseconds, ``cost_usd`` dollars, each exact."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        rows, _ = await _export(app, pilot, "4")
    header = rows[0]
    assert header[:2] == ["started_utc", "request"] and "took_ms" in header and "cost_usd" in header
    exported = {r[1]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    with SQLiteStorage(tui_db) as storage:
        stored = {r["request_id"]: r for r in storage.get_request_cost(1000)}
    assert len(exported) > 5 and set(exported) <= set(stored)
    for rid, cells in exported.items():
        want = stored[rid]
        started = datetime.fromisoformat(cells["started_utc"])
        assert cells["started_utc"].endswith("Z") and started.tzinfo is not None, cells["started_utc"]
        assert started == EPOCH + timedelta(microseconds=want["start_ns"] // 1000), rid
        took_ns = Decimal(cells["took_ms"]) * 10**6
        assert took_ns == max(0, want["end_ns"] - want["start_ns"]), rid
        assert usd(cells["cost_usd"]) == want["cost_nano"], rid
