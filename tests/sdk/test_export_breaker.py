"""The circuit breaker: closed -> open after N errors -> half-open after the timeout -> closed or open again."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import spendtrace
from spendtrace import CircuitBreaker, InMemoryExporter, set_circuit_breaker
from spendtrace.schema import Span
from spendtrace.sdk.export import get_circuit_breaker


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_transitions() -> None:
    """Opens at the threshold, refuses until the timeout, lets one trial through, and closes on its success."""
    clock = Clock()
    cb = CircuitBreaker(error_threshold=3, recovery_timeout_sec=60, clock=clock)
    assert cb.state == "closed" and cb.allow()
    cb.record_failure()
    cb.record_failure()
    assert cb.state == "closed" and cb.allow()
    cb.record_failure()
    assert cb.state == "open" and not cb.allow()
    clock.now += 59
    assert not cb.allow()
    clock.now += 1
    assert cb.state == "half_open"
    assert cb.allow()  # the one trial
    assert not cb.allow()  # no second trial while the first is out
    cb.record_success()
    assert cb.state == "closed" and cb.consecutive_failures == 0 and cb.allow()


def test_failed_trial_reopens_for_a_full_timeout() -> None:
    """A failed half-open trial opens the breaker again, for another full recovery timeout."""
    clock = Clock()
    cb = CircuitBreaker(error_threshold=1, recovery_timeout_sec=10, clock=clock)
    cb.record_failure()
    clock.now += 10
    assert cb.allow()
    cb.record_failure()
    assert cb.state == "open" and cb.times_opened == 2
    clock.now += 9.9
    assert not cb.allow()
    clock.now += 0.1
    assert cb.allow()


def test_success_resets_the_count() -> None:
    """Errors must be consecutive: a success in between starts the count again."""
    cb = CircuitBreaker(error_threshold=2, recovery_timeout_sec=1)
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    assert cb.state == "closed"


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"error_threshold": 0}, ValueError),
        ({"error_threshold": 2.5}, ValueError),
        ({"recovery_timeout_sec": -1}, ValueError),
        ({"recovery_timeout_sec": float("nan")}, ValueError),
    ],
)
def test_bad_arguments(kwargs: dict[str, float], exc: type[Exception]) -> None:
    """Nonsensical thresholds and timeouts are refused at construction."""
    with pytest.raises(exc):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_set_circuit_breaker_type_checked(export_reset: None) -> None:
    """set_circuit_breaker installs a breaker process-wide and refuses anything else."""
    cb = CircuitBreaker(error_threshold=10, recovery_timeout_sec=300)
    set_circuit_breaker(cb)
    assert get_circuit_breaker() is cb
    with pytest.raises(TypeError):
        set_circuit_breaker("nope")  # type: ignore[arg-type]


class CountingFailExporter(InMemoryExporter):
    """Fails while ``failing`` is set, counting the calls it received."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.failing = threading.Event()
        self.failing.set()

    def export(self, spans: Sequence[Span]) -> None:
        self.calls += 1
        if self.failing.is_set():
            raise ConnectionError("down")
        super().export(spans)


def test_open_breaker_skips_the_exporter(tmp_path: Path, export_reset: None) -> None:
    """Once open, batches go straight to the spill without calling the failing exporter; after recovery they replay."""
    clock = Clock()
    exporter = CountingFailExporter()
    set_circuit_breaker(CircuitBreaker(error_threshold=2, recovery_timeout_sec=30, clock=clock))
    spendtrace.configure(exporter=exporter, spill_dir=tmp_path, batch_size=10, max_delay=0.01)
    from spendtrace.sdk import pipeline as _pipeline

    spans = [Span(span_id=f"s{i}", parent_id=None, request_id="r", feature="f") for i in range(100)]
    for i in range(0, 100, 10):
        for s in spans[i : i + 10]:
            _pipeline.submit(s)
        assert spendtrace.flush(5).ok
    assert exporter.calls == 2  # two failures opened it; the other 8 batches never reached the exporter
    stats = spendtrace.get_stats()
    assert stats.spilled == 100 and stats.export_errors == 2 and stats.breaker_state == "open"
    exporter.failing.clear()
    clock.now += 30  # half-open: the next replay is the trial
    deadline = time.monotonic() + 30
    while spendtrace.get_stats().replayed < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert spendtrace.get_stats().replayed == 100
    assert sorted(s.span_id for s in exporter.spans) == sorted(s.span_id for s in spans)
    assert get_circuit_breaker().state == "closed"
