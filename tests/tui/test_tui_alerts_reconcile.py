"""Pilot tests of the screens that write: alert rules (add / remove) and reconciliation with restatement."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from _snap import screen_text
from _tui_helpers import SIZE, settle, until
from textual.pilot import Pilot
from textual.widgets import Button, Input

from spendtrace.server.alerts.rules import list_alerts
from tui.app import SpendtraceApp
from tui.screens.alerts import AlertsScreen
from tui.screens.modals import AddRuleModal, ConfirmModal
from tui.screens.reconcile import ReconcileScreen
from tui.widgets.keyed_table import KeyedTable


async def add_and_remove_a_rule(app: SpendtraceApp, pilot: Pilot[None], store: Path | str) -> None:
    """On the Alerts screen: 'a' and the form save a rule into ``store``; 'd' + confirm removes it again."""
    await pilot.press("a")
    await until(pilot, lambda: isinstance(app.screen, AddRuleModal), "rule form")
    await pilot.press(*"search-spike", "tab", "tab", "tab")  # name, then past the kind and scope selects
    await pilot.press(*"search", "tab", *"0.5", "tab")
    window = app.screen.query_one("#window", Input)
    window.value = "6"
    await pilot.press("enter")
    await until(pilot, lambda: any(r.name == "search-spike" for r in list_alerts(store)), "rule stored")
    rule = next(r for r in list_alerts(store) if r.name == "search-spike")
    assert rule.scope_value == "search" and rule.threshold_nano == 500_000_000 and rule.window_minutes == 360
    screen = app.screen
    assert isinstance(screen, AlertsScreen)
    rules = screen.query_one("#rules", KeyedTable)
    await until(pilot, lambda: "search-spike" in rules.ordered_keys(), "rule shown")
    rules.focus()
    await pilot.press("g")
    while rules.current_key != "search-spike":
        await pilot.press("j")
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "confirm dialog")
    await pilot.press("y")
    await until(pilot, lambda: all(r.name != "search-spike" for r in list_alerts(store)), "rule removed")
    await until(pilot, lambda: "search-spike" not in rules.ordered_keys(), "rule gone from table")
    assert "recs-hourly" in rules.ordered_keys()


async def test_add_and_remove_alert_rule_from_keyboard(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """'a' opens the rule form, Enter saves through spendtrace.alerts; 'd' + confirm removes it."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        assert isinstance(app.screen, AlertsScreen)
        await add_and_remove_a_rule(app, pilot, tui_db)


async def test_rule_form_rejects_bad_input(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """A threshold that is not a positive number keeps the form open with the reason shown."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, AddRuleModal), "rule form")
        await pilot.press(*"bad", "tab", "tab", "tab", *"search", "tab", *"-1", "enter")
        await pilot.pause()
        assert isinstance(app.screen, AddRuleModal)
        assert "threshold" in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, AlertsScreen)
        assert all(r.name != "bad" for r in list_alerts(tui_db))


async def test_budget_and_rate_rules_from_the_form(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """The form's Kind makes budget and rate rules too, on a tenant (the UI's name for user_id)."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        for kind_steps, name, amount, extra in (
            (["down", "enter"], "acme-budget", "250", ()),  # Threshold -> Budget
            (["down", "down", "enter"], "acme-spike", "2", ("tab", "end", "ctrl+u", "4")),  # -> Rate, factor 4
        ):
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, AddRuleModal), "rule form")
            await pilot.press(*name, "tab", "enter", *kind_steps)  # the Kind select
            await pilot.press("tab", "enter", "down", "enter")  # the Scope select: Feature -> Tenant
            await pilot.press("tab", *"tenant-acme", "tab", "end", "ctrl+u", *amount)
            await pilot.press(*extra)
            await pilot.press("enter")
            await until(pilot, lambda n=name: any(r.name == n for r in list_alerts(tui_db)), f"{name} stored")
        rules = {r.name: r for r in list_alerts(tui_db)}
        budget, rate = rules["acme-budget"], rules["acme-spike"]
        assert (budget.kind, budget.scope, budget.scope_value) == ("budget", "user", "tenant-acme")
        assert budget.threshold_nano == 250 * 10**9 and budget.params["period"] == "month"
        assert (rate.kind, rate.scope, rate.scope_value) == ("rate", "user", "tenant-acme")
        assert rate.params["factor"] == 4.0 and rate.params["min_spend_nano"] == 2 * 10**9
        table = app.screen.query_one("#rules", KeyedTable)
        await until(pilot, lambda: "acme-spike" in table.ordered_keys(), "rules shown")
        await settle(app, pilot)
        text = screen_text(app)
        assert "tenant tenant-acme" in text and "user tenant-acme" not in text  # stored "user", shown "tenant"


def test_rule_and_event_cells_say_tenant_and_write_windows_as_people_say_them() -> None:
    """A rule on the stored scope kind ``user`` reads ``tenant …``; window and cooldown go through
    ``minutes_text`` (``24h``, ``45 min``, ``7d``), never ``1440m`` or ``0.75h``; exported values stay as stored."""
    from spendtrace.server.model.dashboard import AlertEventRow, AlertRuleRow
    from tui.screens.alerts import event_cells, rule_cells

    rule = AlertRuleRow(id=1, name="acme", kind="threshold", scope="user", scope_value="acme", threshold_nano=10**9,
                        window_minutes=45, cooldown_minutes=1440, webhook="", enabled=True)  # fmt: skip
    cells = rule_cells(rule)
    assert cells["scope"].plain == "tenant acme" and cells["scope"].raw == "user:acme"
    assert (cells["window"].plain, cells["cooldown"].plain) == ("45 min", "24h")
    week = rule_cells(AlertRuleRow(id=2, name="w", kind="threshold", scope="feature", scope_value="search",
                                   threshold_nano=1, window_minutes=10080, cooldown_minutes=45, webhook="",
                                   enabled=True))  # fmt: skip
    assert (week["scope"].plain, week["window"].plain, week["cooldown"].plain) == ("feature search", "7d", "45 min")
    event = AlertEventRow(id=1, rule_name="acme", fired_ns=0, scope="user", scope_value="acme", value_nano=1,
                          threshold_nano=None, message="m", delivery="none")  # fmt: skip
    assert event_cells(event)["scope"].plain == "tenant acme"


def _ce_response(path: Path) -> Path:
    """A saved GetCostAndUsage response: the bill is 1.25× the model for DynamoDB, S3 and Bedrock."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT bucket, service, sum(cost_nano) FROM rollup_day WHERE service IN ('dynamodb', 's3', 'bedrock')"
            " GROUP BY bucket, service"
        ).fetchall()
    finally:
        conn.close()
    names = {"dynamodb": "Amazon DynamoDB", "s3": "Amazon Simple Storage Service", "bedrock": "Amazon Bedrock"}
    by_day: dict[int, list[dict[str, object]]] = {}
    for bucket, svc, cost in rows:
        amount = f"{cost * 1.25 / 1e9:.10f}"
        by_day.setdefault(bucket, []).append(
            {"Keys": [names[svc]], "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}
        )
    import datetime as dt

    # Cost Explorer answers every day of the range, days with no spend with no groups
    first = dt.date(2026, 10, 15)
    buckets = set(by_day) | {int(dt.datetime.combine(first + dt.timedelta(days=i), dt.time(), dt.UTC).timestamp())
                             for i in range(19)}  # fmt: skip
    results = []
    for bucket in sorted(buckets):
        day = dt.datetime.fromtimestamp(bucket, tz=dt.UTC).date()
        results.append(
            {
                "TimePeriod": {"Start": day.isoformat(), "End": (day + dt.timedelta(days=1)).isoformat()},
                "Total": {},
                "Groups": by_day.get(bucket, []),
                "Estimated": False,
            }
        )
    out = path.with_name("ce.json")
    out.write_text(json.dumps({"ResultsByTime": results}), encoding="utf-8")
    return out


async def run_from_bill(app: SpendtraceApp, pilot: Pilot[None], bill: Path) -> ReconcileScreen:
    """Screen 7, a run from the saved bill ``bill`` for 2026-10-15 .. 11-03, until its report is shown."""
    await pilot.press("7")
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, ReconcileScreen)
    screen.query_one("#start", Input).value = "2026-10-15"
    screen.query_one("#end", Input).value = "2026-11-03"
    screen.query_one("#file", Input).value = str(bill)
    screen.query_one("#file", Input).focus()
    await pilot.press("enter")
    await until(pilot, lambda: screen.report is not None, "reconciliation report")
    return screen


async def report_from_bill(app: SpendtraceApp, pilot: Pilot[None], bill: Path) -> tuple[ReconcileScreen, KeyedTable]:
    """``run_from_bill``: the report (bill 1.25x the model) and its services table, which holds DynamoDB, S3
    and Bedrock."""
    screen = await run_from_bill(app, pilot, bill)
    assert screen.report is not None
    assert abs(screen.report["global_calibration_factor"] - 1.25) < 1e-6
    services = screen.query_one("#services", KeyedTable)
    assert {"dynamodb", "s3", "bedrock"} <= set(services.ordered_keys())
    return screen, services


async def test_reconcile_from_file_and_restate(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """A run from a saved response shows modelled vs actual per service; R + confirm restates history."""
    ce = _ce_response(tui_db)
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        screen, services = await report_from_bill(app, pilot, ce)
        text = screen_text(app)
        assert "1.2500×" in text and "modelled" in text
        features = screen.query_one("#features", KeyedTable)
        assert "summarise" in features.ordered_keys()
        services.focus()
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "restate confirmation")
        await pilot.press("escape")  # cancelling changes nothing
        await pilot.pause()
        assert _restatements(tui_db) == 0
        await pilot.press("R")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "restate confirmation")
        await pilot.press("y")
        await until(pilot, lambda: _restatements(tui_db) == 1, "restatement recorded")


def _restatements(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM restatements WHERE undone_ns IS NULL").fetchone()[0])
    finally:
        conn.close()


async def test_a_partial_bill_shows_partial_and_offers_no_restatement(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """A saved bill missing days of the range: the summary says PARTIAL and the restate button is disabled."""
    ce = _ce_response(tui_db)
    data = json.loads(ce.read_text())
    first3 = {"2026-10-15", "2026-10-16", "2026-10-17"}  # the range's first three days only
    data["ResultsByTime"] = [r for r in data["ResultsByTime"] if r["TimePeriod"]["Start"] in first3]
    ce.write_text(json.dumps(data))
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await run_from_bill(app, pilot, ce)
        assert screen.report is not None and screen.report["partial"]
        assert "PARTIAL: no actuals for 16 day(s) from" in screen_text(app)
        assert screen.query_one("#restate", Button).disabled
    assert _restatements(tui_db) == 0
