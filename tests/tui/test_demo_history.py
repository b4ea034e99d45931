"""The demo's backfilled history: recorded by the real SDK and shop, dated into the past with a weekly shape."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

import spendtrace
from spendtrace.schema import Span
from tui.demo_app import HISTORY_WEIGHT, SONNET, SPIKE_WEIGHT, Shop, history_bill, make_request, record_history

NOW_S = int(dt.datetime(2026, 12, 5, 14, 30, tzinfo=dt.UTC).timestamp())  # a Saturday afternoon
NS = 1_000_000_000


@pytest.fixture(scope="module")
def history() -> Iterator[list[Span]]:
    memory = spendtrace.InMemoryExporter()
    spendtrace.configure(exporter=memory)
    spendtrace.auto_instrument()
    try:
        yield record_history(Shop(random.Random(7)), memory, 21, now_s=NOW_S)
    finally:
        spendtrace.uninstrument()
        spendtrace.configure(exporter=spendtrace.InMemoryExporter())


def _day(span: Span) -> dt.date:
    return dt.datetime.fromtimestamp(span.start_ns / NS, dt.UTC).date()


def test_history_covers_the_days_asked_and_ends_an_hour_before_now(history: list[Span]) -> None:
    """Every day from 21 days ago has traffic; nothing is later than an hour ago (the live alert window)."""
    days = {_day(s) for s in history}
    first = dt.date(2026, 12, 5) - dt.timedelta(days=21)
    assert days == {first + dt.timedelta(days=i) for i in range(22)}
    assert max(s.start_ns for s in history) <= (NOW_S - 3600) * NS
    assert [s.start_ns for s in history] == sorted(s.start_ns for s in history)


def test_weekdays_are_busier_than_weekends(history: list[Span]) -> None:
    """Recorded requests per day follow the weekly pattern: every full weekday beats every weekend day."""
    per_day = Counter(_day(s) for s in history if s.parent_id is None)
    full = [d for d in per_day if d != dt.date(2026, 12, 5)]
    weekdays = [per_day[d] for d in full if d.weekday() < 5]
    weekends = [per_day[d] for d in full if d.weekday() >= 5]
    assert len(weekends) == 6 and min(weekdays) > max(weekends)


def test_request_trees_keep_their_shape_and_weight(history: list[Span]) -> None:
    """Moved as a whole: children start inside their parent; one root per request; one weight per request."""
    by_id = {s.span_id: s for s in history}
    trees: dict[str, list[Span]] = defaultdict(list)
    for s in history:
        trees[s.request_id].append(s)
        if s.parent_id is not None and s.parent_id in by_id:
            parent = by_id[s.parent_id]
            assert parent.start_ns <= s.start_ns <= parent.start_ns + parent.duration_ns
    for tree in trees.values():
        assert sum(s.parent_id is None for s in tree) == 1
        assert len({s.weight for s in tree}) == 1 and tree[0].weight in (HISTORY_WEIGHT, SPIKE_WEIGHT)


def test_the_past_spike_is_on_one_afternoon_only(history: list[Span]) -> None:
    """Sonnet calls (the spike's) happen 9 days ago, 14:00-16:00 UTC, and nowhere else."""
    spike = [s for s in history if any(u.model == SONNET or SONNET in u.key for u in s.usage)]
    assert spike
    when = {(_day(s), dt.datetime.fromtimestamp(s.start_ns / NS, dt.UTC).hour) for s in spike}
    assert {d for d, _ in when} == {dt.date(2026, 11, 26)} and {h for _, h in when} <= {14, 15}


@pytest.fixture
def stored(history: list[Span], tmp_path: Path) -> tuple[Path, Path]:
    """The history in a SQLite store through the real ingest path, and its bill saved beside it."""
    from spendtrace.server.ingest.prepare import prepare_batch
    from spendtrace.server.pricing import current_book
    from spendtrace.server.store.base import open_ingest_store

    db = tmp_path / "history.db"
    ingest = open_ingest_store(db)
    ingest.apply_batch(prepare_batch(history, current_book()))
    ingest.close()
    bill = tmp_path / "ce.json"
    bill.write_text(json.dumps(history_bill(history, now_s=NOW_S)), encoding="utf-8")
    return db, bill


def test_the_bill_is_the_model_times_its_factors_plus_cloudwatch(stored: tuple[Path, Path]) -> None:
    """Reconciling the stored history against its bill: each AWS service's actual is its modelled cost
    times the bill factor written here (1.08, 1.15, 1.00); CloudWatch is on the bill and not in the model;
    a shorter range counts only its own days of the bill."""
    from spendtrace.server.reconcile.costexplorer import load_actuals_file
    from spendtrace.server.reconcile.report import reconcile

    db, bill = stored
    pages = load_actuals_file(bill)
    days = [r["TimePeriod"]["Start"] for r in pages[0]["ResultsByTime"]]
    assert days[0] == "2026-11-14" and days[-1] == "2026-12-05" and len(days) == 22
    assert [r["Estimated"] for r in pages[0]["ResultsByTime"]] == [False] * 21 + [True]

    report = reconcile(db_path=str(db), start="2026-11-14", end="2026-12-06", actuals_file=str(bill),
                       now=NOW_S * NS)  # fmt: skip
    rows = {r.service: r for r in report.service_rows}
    for service, factor in {"dynamodb": Fraction(108, 100), "s3": Fraction(115, 100), "bedrock": Fraction(1)}.items():
        modelled, actual = rows[service].modelled_nano, rows[service].actual_nano
        assert modelled > 0 and abs(actual - modelled * factor) <= len(days), service  # a nano-dollar a day
    cloudwatch = rows["Amazon CloudWatch"]
    assert not cloudwatch.covered and cloudwatch.actual_nano == 1_200_000_000 * len(days)
    assert report.provisional_days == ["2026-12-03", "2026-12-04", "2026-12-05"]  # settling, then today's estimate

    shorter = reconcile(db_path=str(db), start="2026-12-01", end="2026-12-03", actuals_file=str(bill),
                        now=NOW_S * NS, save=False)  # fmt: skip
    assert {r.service: r.actual_nano for r in shorter.service_rows}["Amazon CloudWatch"] == 2 * 1_200_000_000


async def test_the_demo_app_offers_its_bill_on_the_reconciliation_screen(stored: tuple[Path, Path]) -> None:
    """With ``actuals_file`` (what the demo passes), '7' then ctrl+r reconciles against that bill, keys only."""
    from _tui_helpers import SIZE, until
    from textual.widgets import Input, Static

    from tui.app import SpendtraceApp
    from tui.format import money

    db, bill = stored
    app = SpendtraceApp(db, clock=lambda: NOW_S * NS, live=False, actuals_file=bill)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await until(pilot, lambda: bool(app.screen.query("#file")), "the reconciliation form")
        assert app.screen.query_one("#file", Input).value == str(bill)
        await pilot.press("ctrl+r")
        summary = app.screen.query_one("#summary", Static)
        await until(pilot, lambda: "actual $" in str(summary.render()), "the report")
        # the form's default range is this month (Dec 1-6): the bill's November days are not in it
        days = [r for r in json.loads(bill.read_text())["ResultsByTime"] if r["TimePeriod"]["Start"] >= "2026-12-01"]
        amounts = [(g["Keys"][0], Decimal(g["Metrics"]["UnblendedCost"]["Amount"])) for r in days for g in r["Groups"]]
        modelled_services = sum(a for name, a in amounts if name != "Amazon CloudWatch")
        assert f"actual {money(int(modelled_services * 10**9))}" in str(summary.render())
        notes = str(app.screen.query_one("#notes", Static).render())
        assert f"not in the model Amazon CloudWatch {money(5 * 1_200_000_000)}" in notes
        assert "direct LLM spend anthropic $" in notes and "openai $" in notes
        assert "provisional 2026-12-03 .. 2026-12-05" in notes


def _live(shop: Shop, memory: spendtrace.InMemoryExporter, spiking: bool, n: int, last_at_s: int) -> list[Span]:
    """``n`` live-shop requests (weight 1, as the running demo sends them), moved to end at ``last_at_s``."""
    import msgspec

    memory.clear()
    for _ in range(n):
        make_request(shop, spiking)()
    spendtrace.flush()
    spans = list(memory.spans)
    memory.clear()
    shift = max(s.start_ns for s in spans) - last_at_s * NS
    return [msgspec.structs.replace(s, start_ns=s.start_ns - shift) for s in spans]


async def test_the_live_spike_fires_the_demo_rate_rule_against_the_backfilled_history(
    history: list[Span], tmp_path: Path
) -> None:
    """With the demo's rules (``add_demo_rules``) evaluated as its worker does (``AlertEvaluator`` after each
    committed batch, at the wall clock): the backfilled history, past spike included, fires nothing now;
    20 s of normal live traffic fires nothing either; the live spike fires the rate rule on tenant-globex
    (its baseline is the history's same clock hour), the daily budget's 50% and the threshold rule."""
    from consumers.alerting import AlertEvaluator
    from spendtrace.server.ingest.prepare import prepare_batch
    from spendtrace.server.pricing import current_book
    from spendtrace.server.store.base import open_alert_store, open_ingest_store
    from tui.demo import add_demo_rules

    db = tmp_path / "demo.db"
    add_demo_rules(db)
    ingest = open_ingest_store(db)
    evaluator = AlertEvaluator(str(db), clock=lambda: NOW_S * NS)
    memory = spendtrace.InMemoryExporter()
    spendtrace.configure(exporter=memory)
    shop = Shop(random.Random(11))

    def fired() -> dict[str, str]:
        store = open_alert_store(db, readonly=True)
        try:
            return {e.rule_name: e.message for e in store.latest_events(20)}
        finally:
            store.close()

    try:
        await evaluator(ingest.apply_batch(prepare_batch(history, current_book())))
        assert fired() == {}, "the backfilled history (an hour old and more) must not fire anything now"
        normal = _live(shop, memory, False, 400, NOW_S - 20)  # the demo's default: 20 s at 20 requests/s
        await evaluator(ingest.apply_batch(prepare_batch(normal, current_book())))
        assert fired() == {}
        spike = _live(shop, memory, True, 300, NOW_S - 1)  # then 15 s of spike
        await evaluator(ingest.apply_batch(prepare_batch(spike, current_book())))
    finally:
        await evaluator.aclose()
        ingest.close()
    events = fired()
    assert set(events) == {"demo-globex-rate", "demo-recs-budget", "demo-recs-spike"}
    assert events["demo-globex-rate"].startswith("[spendtrace] demo-globex-rate: tenant 'tenant-globex' spent $")
    assert "7-day average for this hour" in events["demo-globex-rate"]
    assert "of its day budget" in events["demo-recs-budget"]
