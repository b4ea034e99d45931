"""Prometheus metrics for what a store holds (the HTTP API's and the workers' ``/metrics``).

``render_store_metrics`` writes the exposition text and needs no extra package. Labels are
bounded: features and services only, never tenants. The SDK's exporter counters live in
``spendtrace.sdk.metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spendtrace.server.store.base import ReadStore

__all__ = ["render_store_metrics", "store_metric_values"]

NANO = 1_000_000_000


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def store_metric_values(store: ReadStore) -> dict[str, Any]:
    """The numbers behind the store metrics, read in one snapshot (money in nano-dollars)."""
    return store.store_metric_values()


def render_store_metrics(store: ReadStore) -> str:
    """Prometheus exposition text for the spend ``store`` holds (any ``ReadStore``: ``open_store(url)``)."""
    v = store_metric_values(store)
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
        [(f'{{feature="{_escape(f)}"}}', usd(c)) for f, c in v["features"]],  # type: ignore[misc]
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
