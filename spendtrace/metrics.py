"""Prometheus metrics: spend read from the store, and the SDK exporter's own counters.

``render_store_metrics`` writes the exposition text for what a database holds (the HTTP API's
and the workers' ``/metrics``); it needs no extra package. ``register_sdk_metrics`` adds the
exporter counters of this process to a ``prometheus_client`` registry, for apps that already
serve one. Labels are bounded: features and services only, never tenants.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["SDK_COUNTERS", "register_sdk_metrics", "render_store_metrics", "store_metric_values"]

NANO = 1_000_000_000

#: ExporterStats field -> metric name (without the ``_total`` that prometheus_client appends).
SDK_COUNTERS = {
    "recorded": "spendtrace_exporter_recorded",
    "exported": "spendtrace_exporter_exported",
    "spilled": "spendtrace_exporter_spilled",
    "replayed": "spendtrace_exporter_replayed",
    "dropped": "spendtrace_exporter_dropped",
    "export_errors": "spendtrace_exporter_errors",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _scalar(conn: sqlite3.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0] or 0) if row else 0


def store_metric_values(conn: sqlite3.Connection) -> dict[str, Any]:
    """The numbers behind the store metrics, read in one snapshot (money in nano-dollars)."""
    conn.execute("BEGIN")
    try:
        per_feature = conn.execute(
            "SELECT feature, SUM(cost_nano) FROM rollup_day WHERE service = '' GROUP BY feature ORDER BY feature"
        ).fetchall()
        per_service = conn.execute(
            "SELECT service, SUM(cost_nano) FROM rollup_day WHERE service != '' GROUP BY service ORDER BY service"
        ).fetchall()
        values = {
            "cost_nano": _scalar(conn, "SELECT SUM(cost_nano) FROM rollup_day WHERE service = ''"),
            "spans": _scalar(conn, "SELECT SUM(spans) FROM rollup_day WHERE service = ''"),
            "unpriced": _scalar(conn, "SELECT SUM(unpriced) FROM rollup_day WHERE service = ''"),
            "dead_letters": _scalar(conn, "SELECT COUNT(*) FROM dead_letters"),
            "alerts_fired": _scalar(conn, "SELECT COUNT(*) FROM alert_events"),
            "webhook_failures": _scalar(
                conn, "SELECT COUNT(*) FROM alert_deliveries WHERE error IS NOT NULL OR status >= 300"
            ),
            "features": [(str(f), int(c or 0)) for f, c in per_feature],
            "services": [(str(s), int(c or 0)) for s, c in per_service],
        }
    finally:
        conn.execute("COMMIT")
    return values


def render_store_metrics(conn: sqlite3.Connection) -> str:
    """Prometheus exposition text for the spend stored in ``conn``'s database."""
    v = store_metric_values(conn)
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


class _SDKCollector:
    """A prometheus_client collector over ``spendtrace.get_stats()``; every counter exists at 0 from the start."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from spendtrace._config import get_stats

        stats = get_stats()
        for field, name in SDK_COUNTERS.items():
            yield CounterMetricFamily(
                name, f"Spans {field.replace('_', ' ')} by this process's exporter.", value=getattr(stats, field)
            )
        yield GaugeMetricFamily("spendtrace_exporter_queued", "Spans waiting in memory.", value=stats.queued)


def register_sdk_metrics(registry: Any = None) -> Any:
    """Register the exporter counters (``spendtrace_exporter_dropped_total`` ...) with ``registry``.

    ``registry`` defaults to prometheus_client's global ``REGISTRY``; returns the collector.
    Needs ``prometheus-client`` (the ``[api]`` extra).
    """
    try:
        from prometheus_client import REGISTRY
    except ImportError as exc:
        raise ImportError("register_sdk_metrics needs prometheus-client: pip install 'spendtrace[api]'") from exc
    collector = _SDKCollector()
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
