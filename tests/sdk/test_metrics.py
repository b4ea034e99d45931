"""SDK metrics for apps that run prometheus_client: exporter counters exist from the start and follow the stats."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import spendtrace
from spendtrace.sdk.metrics import SDK_COUNTERS, register_sdk_metrics


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}


@pytest.mark.usefixtures("export_reset")
def test_counters_exist_at_zero_and_follow_the_exporter() -> None:
    """``spendtrace_exporter_dropped_total`` is exported at 0 from the start; recorded/exported track real spans."""
    registry = CollectorRegistry()
    register_sdk_metrics(registry)
    exporter = spendtrace.InMemoryExporter()
    spendtrace.configure(exporter=exporter)
    before = _samples(registry)
    assert before["spendtrace_exporter_dropped_total"] == 0
    assert before["spendtrace_exporter_recorded_total"] == 0

    @spendtrace.cost_track(feature="metrics-test")
    def work() -> None:
        spendtrace.add_api_call("dynamodb_read", count=1)

    for _ in range(7):
        work()
    assert spendtrace.flush(timeout=10).ok
    after = _samples(registry)
    stats = spendtrace.get_stats()
    for field, name in SDK_COUNTERS.items():
        assert after[f"{name}_total"] == getattr(stats, field)
    assert after["spendtrace_exporter_recorded_total"] == 7
    assert after["spendtrace_exporter_exported_total"] == len(exporter.spans) == 7
    assert not any("tenant" in key or "feature" in key for key in after)  # no unbounded labels
