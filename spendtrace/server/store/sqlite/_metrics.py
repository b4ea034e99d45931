"""The numbers behind the store's Prometheus metrics (``spendtrace.server.metrics``), as one ``Query``.

Read in one snapshot: spend in total, per feature and per service from the daily rollups (so they
survive raw-span retention), spans, unpriced items, dead letters, alerts fired, failed webhooks.
"""

from __future__ import annotations

from typing import Any

from spendtrace.server.store.sqlite._sql import Query, Row

__all__ = ["store_metric_values"]

_SCALARS = (
    ("cost_nano", "SELECT SUM(cost_nano) AS v FROM rollup_day WHERE service = ''"),
    ("spans", "SELECT SUM(spans) AS v FROM rollup_day WHERE service = ''"),
    ("unpriced", "SELECT SUM(unpriced) AS v FROM rollup_day WHERE service = ''"),
    ("dead_letters", "SELECT COUNT(*) AS v FROM dead_letters"),
    ("alerts_fired", "SELECT COUNT(*) AS v FROM alert_events"),
    ("webhook_failures", "SELECT COUNT(*) AS v FROM alert_deliveries WHERE error IS NOT NULL OR status >= 300"),
)
_PER_FEATURE = (
    "SELECT feature AS k, SUM(cost_nano) AS v FROM rollup_day WHERE service = '' GROUP BY feature ORDER BY feature"
)
_PER_SERVICE = (
    "SELECT service AS k, SUM(cost_nano) AS v FROM rollup_day WHERE service != '' GROUP BY service ORDER BY service"
)


def store_metric_values() -> Query[dict[str, Any]]:
    """``{cost_nano, spans, unpriced, dead_letters, alerts_fired, webhook_failures: int,
    features, services: [(name, cost_nano)] sorted by name}``."""

    def post(results: list[list[Row]]) -> dict[str, Any]:
        scalars = zip(_SCALARS, results[: len(_SCALARS)], strict=True)
        out: dict[str, Any] = {name: int(rows[0]["v"] or 0) for (name, _), rows in scalars}
        features, services = results[len(_SCALARS) :]
        out["features"] = [(str(r["k"]), int(r["v"] or 0)) for r in features]
        out["services"] = [(str(r["k"]), int(r["v"] or 0)) for r in services]
        return out

    steps = (*((sql, ()) for _, sql in _SCALARS), (_PER_FEATURE, ()), (_PER_SERVICE, ()))
    return Query(steps, post)
