"""The TUI's writing screens on a ClickHouse store (chDB in this process): alert rules and reconciliation.

The Alerts screen adds and removes a rule (stored in the store's own alert tables), and the
Reconciliation screen runs a report from a saved bill and restates history: the same keys as on
SQLite (``test_tui_alerts_reconcile.py``), read back through the store interfaces.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

from _tui_data import make_spans
from _tui_helpers import SIZE, settle, until
from test_tui_alerts_reconcile import add_and_remove_a_rule, report_from_bill

from spendtrace.server.alerts.rules import set_alert
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import open_ingest_store, open_reconcile_store
from tui.screens.alerts import AlertsScreen
from tui.screens.modals import ConfirmModal

NAMES = {"dynamodb": "Amazon DynamoDB", "s3": "Amazon Simple Storage Service", "bedrock": "Amazon Bedrock"}


def _chdb_store(tmp_path: Path, now_ns: int) -> str:
    """A fresh chDB database holding the fixed data set and one rule, written through the interfaces."""
    url = f"chdb://{tmp_path.parent / 'chdb'}?database=tuiw_{uuid.uuid4().hex[:12]}"
    spans = make_spans(now_ns)
    store = open_ingest_store(url)
    try:
        for i in range(0, len(spans), 50):
            store.apply_batch(prepare_batch(spans[i : i + 50], PriceBook.default()))
    finally:
        store.close()
    set_alert(feature="recommend", threshold=0.05, window_hours=1, name="recs-hourly", db_path=url)
    return url


def _bill(url: str, out: Path) -> Path:
    """A saved GetCostAndUsage response 1.25x the store's modelled DynamoDB, S3 and Bedrock spend, every day."""
    first = dt.date(2026, 10, 15)
    start_s = int(dt.datetime.combine(first, dt.time(), dt.UTC).timestamp())
    store = open_reconcile_store(url, readonly=True)
    try:
        modelled = store.modelled_spend(start_s, start_s + 19 * 86_400)
    finally:
        store.close()
    by_day: dict[int, dict[str, int]] = {}
    for row in modelled:
        if row.service in NAMES:
            by_day.setdefault(row.day_s, {}).setdefault(row.service, 0)
            by_day[row.day_s][row.service] += row.cost_nano
    results = []
    for i in range(19):
        day = first + dt.timedelta(days=i)
        costs = by_day.get(start_s + i * 86_400, {})
        groups = [
            {"Keys": [NAMES[s]], "Metrics": {"UnblendedCost": {"Amount": f"{c * 1.25 / 1e9:.10f}", "Unit": "USD"}}}
            for s, c in sorted(costs.items())
        ]
        results.append({"TimePeriod": {"Start": day.isoformat(), "End": (day + dt.timedelta(days=1)).isoformat()},
                        "Total": {}, "Groups": groups, "Estimated": False})  # fmt: skip
    out.write_text(json.dumps({"ResultsByTime": results}), encoding="utf-8")
    return out


def _restatements(url: str) -> int:
    """Restatements in force (not undone) in the store."""
    store = open_reconcile_store(url, readonly=True)
    try:
        return sum(1 for r in store.restatements_between("2000-01-01", "2100-01-01") if r.undone_ns is None)
    finally:
        store.close()


async def test_add_and_remove_an_alert_rule_on_chdb(tmp_path: Path, fixed_now_ns: int, make_app) -> None:  # type: ignore[no-untyped-def]
    """'a' + the form saves a rule into the ClickHouse alert tables; 'd' + confirm removes it; the table follows."""
    url = _chdb_store(tmp_path, fixed_now_ns)
    app = make_app(url)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        assert isinstance(app.screen, AlertsScreen)
        await add_and_remove_a_rule(app, pilot, url)


async def test_reconcile_from_a_saved_bill_and_restate_on_chdb(tmp_path: Path, fixed_now_ns: int, make_app) -> None:  # type: ignore[no-untyped-def]
    """The Reconciliation screen on chDB: a report 1.25x the model per service, then R + confirm restates."""
    url = _chdb_store(tmp_path, fixed_now_ns)
    bill = _bill(url, tmp_path / "ce.json")
    app = make_app(url)
    async with app.run_test(size=SIZE) as pilot:
        _, services = await report_from_bill(app, pilot, bill)
        assert _restatements(url) == 0
        services.focus()
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "restate confirmation")
        await pilot.press("y")
        await until(pilot, lambda: _restatements(url) == 1, "restatement recorded")
