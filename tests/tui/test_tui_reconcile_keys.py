"""The Reconciliation screen driven by key presses only, and what its Restate does to the stored money.

The other reconciliation test puts values into the form and focuses widgets from Python, so it
cannot see whether a person can reach the form, and it checks that a restatement row appeared,
not what it did. Here every step is a key a user would press, and the stored costs after the
restatement are compared with the factor applied to the costs before it, computed in the test.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from _tui_helpers import SIZE, settle, until
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Input

from spendtrace.server.model.reconcile import AWS_SERVICES
from tui.app import SpendtraceApp
from tui.screens.dimension import LiveScreen
from tui.screens.modals import ConfirmModal
from tui.screens.reconcile import ReconcileScreen

#: The restated range (end exclusive): it holds the last hour's requests and eight older days,
#: and leaves out the five days of older requests before it (see ``_tui_data.make_spans``).
START, END = "2026-10-25", "2026-11-03"
START_S = int(dt.datetime(2026, 10, 25, tzinfo=dt.UTC).timestamp())
END_S = int(dt.datetime(2026, 11, 3, tzinfo=dt.UTC).timestamp())
#: How much bigger than the model the saved bill is, for every AWS service on every day.
BILL_OVER_MODEL = Fraction(3, 2)
_CE_NAMES = {"dynamodb": "Amazon DynamoDB", "s3": "Amazon Simple Storage Service", "bedrock": "Amazon Bedrock"}


def _saved_bill(db: Path) -> Path:
    """A GetCostAndUsage response for the range: each day's AWS services billed at 1.5x the stored model."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT bucket, service, sum(cost_nano) FROM rollup_day WHERE service IN ('dynamodb', 's3', 'bedrock')"
            " AND bucket >= ? AND bucket < ? GROUP BY bucket, service",
            (START_S, END_S),
        ).fetchall()
    finally:
        conn.close()
    by_day: dict[int, list[dict[str, Any]]] = {}
    for bucket, service, cost_nano in rows:
        amount = Fraction(cost_nano, 10**9) * BILL_OVER_MODEL  # exact: nano-dollars x 3/2 has at most 10 decimals
        by_day.setdefault(bucket, []).append(
            {"Keys": [_CE_NAMES[service]], "Metrics": {"UnblendedCost": {"Amount": f"{float(amount):.10f}"}}}
        )
    results = []
    for bucket in sorted(by_day):
        day = dt.datetime.fromtimestamp(bucket, tz=dt.UTC).date()
        period = {"Start": day.isoformat(), "End": (day + dt.timedelta(days=1)).isoformat()}
        results.append({"TimePeriod": period, "Total": {}, "Groups": by_day[bucket], "Estimated": False})
    out = db.with_name("ce.json")
    out.write_text(json.dumps({"ResultsByTime": results}), encoding="utf-8")
    return out


def _focused(app: SpendtraceApp) -> str:
    w: Widget | None = app.focused
    return "nothing" if w is None else f"{type(w).__name__}#{w.id}"


async def _type_into_focused(pilot: Pilot[None], text: str) -> None:
    """Replace the focused field's text the way a person would: go to the end, delete to the start, type."""
    await pilot.press("end", "ctrl+u", *text)


async def _fill_form_and_run(app: SpendtraceApp, pilot: Pilot[None], bill: Path) -> ReconcileScreen:
    """From the Live screen: '7', Tab into the date fields, type the range and the saved bill's name, Enter.

    The working directory must be the bill's (the tests chdir there: a shorter name to type, ~60 ms a key).
    """
    assert bill.parent.resolve() == Path.cwd().resolve()
    await pilot.press("7")
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, ReconcileScreen)
    for _ in range(3):  # from the tables, Tab reaches the form within a few presses
        if _focused(app) == "Input#start":
            break
        await pilot.press("tab")
    assert _focused(app) == "Input#start"
    await _type_into_focused(pilot, START)
    await pilot.press("tab")
    assert _focused(app) == "Input#end"
    await _type_into_focused(pilot, END)
    await pilot.press("tab")
    assert _focused(app) == "Input#file"
    await _type_into_focused(pilot, bill.name)  # relative to the working directory, as a person would type it
    await pilot.press("enter")
    await until(pilot, lambda: screen.report is not None, "the reconciliation report")
    assert app.screen is screen  # the digits typed into the dates went to the fields, not to screen switching
    return screen


async def test_the_form_run_and_restate_work_from_the_keyboard_alone(
    tui_db: Path, make_app, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Digits switch screens until Tab enters the form; Tab walks start, end, file, Run, Restate; Enter confirms."""
    bill = _saved_bill(tui_db)
    monkeypatch.chdir(bill.parent)
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("7")
        await settle(app, pilot)
        assert isinstance(app.screen, ReconcileScreen)
        assert _focused(app).startswith("KeyedTable#")  # not a date field: a digit here must still switch screens
        await pilot.press("1")
        await settle(app, pilot)
        assert isinstance(app.screen, LiveScreen)

        screen = await _fill_form_and_run(app, pilot, bill)
        assert screen.report is not None and abs(screen.report["global_calibration_factor"] - 1.5) < 1e-6
        await pilot.press("tab")
        assert _focused(app) == "Button#run"
        await pilot.press("tab")
        assert _focused(app) == "Button#restate"  # enabled now that the report has a factor
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the restate confirmation")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the confirmation to close")
        assert _restatement_factors(tui_db) == []  # cancelled: nothing happened
        assert _focused(app) == "Button#restate"
        await pilot.press("shift+tab")
        assert _focused(app) == "Button#run"
        await pilot.press("tab", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the restate confirmation")
        await pilot.press("y")
        await until(pilot, lambda: len(_restatement_factors(tui_db)) == 1, "the restatement")


async def test_restate_scales_the_stored_costs_in_the_range_by_the_reports_factor(
    tui_db: Path, make_app, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Every AWS service's rollup row in the range becomes round(factor x old), other services' stay (the factor
    comes from the AWS bill); spans follow; rows outside the range stay put."""
    bill = _saved_bill(tui_db)
    monkeypatch.chdir(bill.parent)
    before_rollups = _rollup_day(tui_db)
    before_spans = _span_costs(tui_db)
    before_items = _item_costs_in_range(tui_db)
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = await _fill_form_and_run(app, pilot, bill)
        assert screen.report is not None
        factor = screen.report["global_calibration_factor"]
        # the bill was written at 1.5x the model, so the report's factor is 1.5 but for the bill's 10 decimals
        assert abs(factor - float(BILL_OVER_MODEL)) < 1e-6
        await pilot.press("tab", "tab")  # file -> Run -> Restate
        assert _focused(app) == "Button#restate"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the restate confirmation")
        await pilot.press("y")
        await until(pilot, lambda: len(_restatement_factors(tui_db)) == 1, "the restatement")
    after_rollups = _rollup_day(tui_db)
    assert after_rollups.keys() == before_rollups.keys()
    exact = Fraction(factor)
    in_range = {k for k in before_rollups if START_S <= k[0] < END_S}
    assert in_range and len(in_range) < len(before_rollups)  # the range splits the data
    for key, old in before_rollups.items():
        service = key[-1]
        if key not in in_range or (service and service not in AWS_SERVICES):
            assert after_rollups[key] == old, key
        elif service:  # each AWS service row is scaled on its own, half to even
            assert after_rollups[key] == round(exact * old), (key, old, after_rollups[key])
    moved = sum(after_rollups[k] - before_rollups[k] for k in in_range if k[-1])
    span_level = sum(after_rollups[k] - before_rollups[k] for k in in_range if not k[-1])
    assert span_level == moved  # the span-level row stays the sum of its service rows

    after_spans = _span_costs(tui_db)
    old_aws, old_other = before_items
    new_aws, new_other = _item_costs_in_range(tui_db)
    items = _priced_items_in_range(tui_db)
    assert old_aws > 0 and abs(Fraction(new_aws) - exact * old_aws) <= Fraction(items, 2)  # one rounding per item
    assert old_other > 0 and new_other == old_other  # OpenAI / Anthropic spend is not on the AWS bill
    outside = {sid for sid, (start, _) in before_spans.items() if not START_S * 10**9 <= start < END_S * 10**9}
    assert outside and all(after_spans[sid] == before_spans[sid] for sid in outside)
    assert _restatement_factors(tui_db) == [factor]  # and the record says which factor it was


def _rollup_day(db: Path) -> dict[tuple[Any, ...], int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT bucket, feature, user_id, endpoint, service, cost_nano FROM rollup_day").fetchall()
    finally:
        conn.close()
    return {tuple(r[:5]): int(r[5]) for r in rows}


def _span_costs(db: Path) -> dict[str, tuple[int, int]]:
    conn = sqlite3.connect(db)
    try:
        return {sid: (int(start), int(cost)) for sid, start, cost in conn.execute(
            "SELECT span_id, start_ns, cost_nano FROM spans")}  # fmt: skip
    finally:
        conn.close()


def _item_costs_in_range(db: Path) -> tuple[int, int]:
    """(AWS services', other services') priced item cost of the spans in the range."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT usage FROM spans WHERE start_ns >= ? AND start_ns < ?", (START_S * 10**9, END_S * 10**9)
        ).fetchall()
    finally:
        conn.close()
    items = [it for (u,) in rows for it in json.loads(u) if it.get("priced")]
    aws = sum(int(it["cost_nano"]) for it in items if it["service"] in AWS_SERVICES)
    return aws, sum(int(it["cost_nano"]) for it in items) - aws


def _priced_items_in_range(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT usage FROM spans WHERE start_ns >= ? AND start_ns < ?", (START_S * 10**9, END_S * 10**9)
        ).fetchall()
    finally:
        conn.close()
    return sum(len(json.loads(u)) for (u,) in rows)


def _restatement_factors(db: Path) -> list[float]:
    conn = sqlite3.connect(db)
    try:
        return [f for (f,) in conn.execute("SELECT factor FROM restatements WHERE undone_ns IS NULL ORDER BY id")]
    finally:
        conn.close()


async def _reconcile_start_field(app: SpendtraceApp, pilot: Pilot[None]) -> ReconcileScreen:
    """From Live: '7', then Tab until the start-date field has focus, as a person would."""
    await pilot.press("7")
    await settle(app, pilot)
    screen = app.screen
    assert isinstance(screen, ReconcileScreen)
    for _ in range(3):
        if _focused(app) == "Input#start":
            break
        await pilot.press("tab")
    assert _focused(app) == "Input#start"
    return screen


async def test_esc_leaves_a_form_field_and_the_global_keys_work_again(tui_db: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """In a date field digits are text; after Esc, '1' switches to Live as on every other screen."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _reconcile_start_field(app, pilot)
        await _type_into_focused(pilot, "2026-01-0")
        await pilot.press("1")  # typed into the field
        assert app.screen is screen and screen.query_one("#start", Input).value == "2026-01-01"
        await pilot.press("escape")
        assert not _focused(app).startswith("Input#")
        await pilot.press("1")
        await settle(app, pilot)
        assert isinstance(app.screen, LiveScreen)


@pytest.mark.parametrize("key", ["slash", "R", "q"])
async def test_after_esc_filter_restate_and_quit_act_instead_of_typing(tui_db: Path, make_app, key: str) -> None:  # type: ignore[no-untyped-def]
    """After Esc leaves a date field, '/' opens the filter, 'R' asks for a report to restate, 'q' quits."""
    app = make_app(tui_db)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _reconcile_start_field(app, pilot)
        await _type_into_focused(pilot, "2026-01-01")
        await pilot.press("escape")
        await pilot.press(key)
        await pilot.pause()
        assert screen.query_one("#start", Input).value == "2026-01-01"  # nothing typed into the field
        if key == "slash":
            assert _focused(app) == "Input#filter" and not screen.query_one("#filter", Input).has_class("hidden")
        elif key == "R":
            assert app.screen is screen
            assert any("Run a reconciliation first" in n.message for n in app._notifications)
        else:
            assert app._exit, "q did not quit"
