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
