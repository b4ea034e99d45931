"""Prometheus metrics for what a store holds (the HTTP API's and the workers' ``/metrics``).

``render_store_metrics`` writes the exposition text and needs no extra package. Labels are
bounded: features and services only, never tenants. The SDK's exporter counters live in
``spendtrace.sdk.metrics``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

__all__ = ["render_store_metrics", "store_metric_values"]

NANO = 1_000_000_000

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
