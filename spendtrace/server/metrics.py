"""Prometheus metrics for what a store holds (the HTTP API's and the workers' ``/metrics``).

``render_store_metrics`` writes the exposition text and needs no extra package. Labels are
bounded: services, and the ``top`` costliest features (``SPENDTRACE_METRICS_TOP_FEATURES``, default
50) with the rest summed under ``feature="__other__"``; never tenants. A scrape's size therefore
does not grow with the number of features or tenants stored. The SDK's exporter counters live in
``spendtrace.sdk.metrics``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from spendtrace.errors import ConfigError

if TYPE_CHECKING:
    from spendtrace.server.store.base import ReadStore

__all__ = ["OTHER", "render_store_metrics", "store_metric_values", "top_features"]

NANO = 1_000_000_000


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


#: The label value of every feature outside the top set (double underscores, like ``__unattributed__``,
#: so it cannot be mistaken for a feature someone named "other").
OTHER = "__other__"
DEFAULT_TOP_FEATURES = 50


def top_features() -> int:
    """How many features get a label of their own: ``SPENDTRACE_METRICS_TOP_FEATURES`` (default 50; 0: none)."""
    raw = os.environ.get("SPENDTRACE_METRICS_TOP_FEATURES", "").strip()
    if not raw:
        return DEFAULT_TOP_FEATURES
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"SPENDTRACE_METRICS_TOP_FEATURES must be a whole number, got {raw!r}") from None
    if not 0 <= value <= 10_000:
        raise ConfigError(f"SPENDTRACE_METRICS_TOP_FEATURES must be between 0 and 10000, got {value}")
    return value


def store_metric_values(store: ReadStore, top: int | None = None) -> dict[str, Any]:
    """The numbers behind the store metrics, read in one snapshot (money in nano-dollars)."""
    return store.store_metric_values(top_features() if top is None else top)


def render_store_metrics(store: ReadStore, top: int | None = None) -> str:
    """Prometheus exposition text for the spend ``store`` holds (any ``ReadStore``: ``open_store(url)``).

    ``top`` features get their own label (default: ``top_features()``); the others share ``__other__``
    (always present, 0 when none is left out). Its value can go down when a feature joins the top set.
    """
    v = store_metric_values(store, top)
    features = [*v["features"], (OTHER, v["features_other_nano"])]  # always there (0 when none is left out)
    out: list[str] = []

    def family(name: str, help_: str, kind: str, samples: Iterable[tuple[str, float | int]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {value}")

    def usd(nano: int) -> str:
        return repr(nano / NANO)

    family("spendtrace_cost_usd_total", "Modelled spend stored, in USD.", "counter", [("", usd(v["cost_nano"]))])  # type: ignore[list-item]
    family(
        "spendtrace_feature_cost_usd_total",
        "Modelled direct spend per feature, in USD.",
        "counter",
        [(f'{{feature="{_escape(f)}"}}', usd(c)) for f, c in features],  # type: ignore[misc]
    )
    family(
        "spendtrace_service_cost_usd_total",
        "Modelled spend per service, in USD.",
        "counter",
        [(f'{{service="{_escape(s)}"}}', usd(c)) for s, c in v["services"]],  # type: ignore[misc]
    )
    family("spendtrace_spans_ingested_total", "Spans stored.", "counter", [("", v["spans"])])
    family(
        "spendtrace_dead_letters_total",
        "Messages rejected into the dead-letter table.",
        "counter",
        [("", v["dead_letters"])],
    )
    family("spendtrace_unpriced_usage_total", "Usage items no price covered.", "counter", [("", v["unpriced"])])
    family("spendtrace_alerts_fired_total", "Alert events fired.", "counter", [("", v["alerts_fired"])])
    family(
        "spendtrace_webhook_failures_total",
        "Failed webhook delivery attempts.",
        "counter",
        [("", v["webhook_failures"])],
    )
    return "\n".join(out) + "\n"
