"""Public metrics helpers: ``register_sdk_metrics`` (the exporter counters of this process)."""

from __future__ import annotations

from spendtrace.sdk.metrics import SDK_COUNTERS, register_sdk_metrics

__all__ = ["SDK_COUNTERS", "register_sdk_metrics"]
