"""The demo's backfilled history: recorded by the real SDK and shop, dated into the past with a weekly shape."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest

import spendtrace
from spendtrace.schema import Span
from tui.demo_app import HISTORY_WEIGHT, SONNET, SPIKE_WEIGHT, Shop, record_history

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
