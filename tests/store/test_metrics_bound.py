"""``/metrics`` stays small however many features and tenants a store holds: the top N features plus ``__other__``.

Run once per backend. 300 features and 300 tenants, feature i costing (i + 1) reads.
"""

from __future__ import annotations

import pytest
from store_backends import Backend
from test_contract import BOOK, HOUR, NOW, READ

from spendtrace.errors import ConfigError
from spendtrace.schema import Span, UsageItem
from spendtrace.server.metrics import render_store_metrics, top_features
from spendtrace.server.store.base import open_store

N = 300


def _spans() -> list[Span]:
    return [
        Span(f"m{i}", None, f"mr{i}", f"feature-{i:03d}", endpoint="/x", user_id=f"tenant-{i:03d}",
             start_ns=NOW - HOUR + i, usage=(UsageItem("t_read", count=float(i + 1)),), path=(f"feature-{i:03d}",))
        for i in range(N)
    ]  # fmt: skip


def _series(text: str, family: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(family + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(family) :]] = float(value)
    return out


def test_a_scrape_has_the_top_features_and_one_other_series(backend: Backend) -> None:
    """top=20: 21 feature series (the 20 costliest and ``__other__``), adding up to the total; no tenant anywhere."""
    backend.ingest(_spans(), BOOK)
    store = open_store(backend.url)
    try:
        text = render_store_metrics(store, top=20)
        small = render_store_metrics(store, top=0)
    finally:
        store.close()
    features = _series(text, "spendtrace_feature_cost_usd_total")
    want = {f'{{feature="feature-{i:03d}"}}' for i in range(N - 20, N)} | {'{feature="__other__"}'}
    assert set(features) == want
    total = sum((i + 1) * READ for i in range(N))
    assert features['{feature="__other__"}'] == pytest.approx(sum((i + 1) * READ for i in range(N - 20)) / 1e9)
    assert sum(features.values()) == pytest.approx(total / 1e9)
    assert "tenant-" not in text
    assert len(text.splitlines()) < 60  # bounded: 300 features and 300 tenants stored
    assert _series(small, "spendtrace_feature_cost_usd_total") == {'{feature="__other__"}': pytest.approx(total / 1e9)}


def test_top_features_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SPENDTRACE_METRICS_TOP_FEATURES`` sets N (default 50); a bad value is a clear ConfigError."""
    monkeypatch.delenv("SPENDTRACE_METRICS_TOP_FEATURES", raising=False)
    assert top_features() == 50
    monkeypatch.setenv("SPENDTRACE_METRICS_TOP_FEATURES", "7")
    assert top_features() == 7
    for bad in ("many", "-1", "1000000"):
        monkeypatch.setenv("SPENDTRACE_METRICS_TOP_FEATURES", bad)
        with pytest.raises(ConfigError, match="SPENDTRACE_METRICS_TOP_FEATURES"):
            top_features()


def test_a_feature_retention_took_whole_leaves_the_metrics(backend: Backend) -> None:
    """After retention takes every day of one feature and some of another's, the totals and the feature
    series are those of the days left (ClickHouse reads them from its all-time sums, which retention negates)."""
    day = 24 * HOUR
    old = [Span("o1", None, "o1", "gone", endpoint="/x", start_ns=NOW - 100 * day,
                usage=(UsageItem("t_read", count=7.0),), path=("gone",)),
           Span("o2", None, "o2", "kept", endpoint="/x", start_ns=NOW - 100 * day,
                usage=(UsageItem("t_read", count=5.0),), path=("kept",)),
           Span("n1", None, "n1", "kept", endpoint="/y", start_ns=NOW - HOUR,
                usage=(UsageItem("t_read", count=3.0),), path=("kept",))]  # fmt: skip
    backend.ingest(old, BOOK)
    store = open_store(backend.url)
    try:
        before = store.store_metric_values()
        assert dict(before["features"]) == {"gone": 7 * READ, "kept": 8 * READ} and before["spans"] == 3
        store.set_retention(raw_data_days=30, hourly_rollups_days=30, daily_rollups_days=30)
        store.apply_retention(now_ns=NOW)
        after = store.store_metric_values()
    finally:
        store.close()
    assert dict(after["features"]) == {"kept": 3 * READ} and after["features_other_nano"] == 0
    assert (after["cost_nano"], after["spans"]) == (3 * READ, 1)
