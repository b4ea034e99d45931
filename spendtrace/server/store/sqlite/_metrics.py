"""The numbers behind the store's Prometheus metrics (``spendtrace.server.metrics``), as one ``Query``.

Read in one snapshot: spend in total, for the ``top`` costliest features and per service, spans,
unpriced items, dead letters, alerts fired, failed webhooks. On a file with ``dash_all`` (the dash
rollups over every day) that is a few hundred index entries however many tenants and days are
stored; otherwise the daily rollups are summed (so the figures survive raw-span retention).
"""

from __future__ import annotations

from typing import Any

from spendtrace.server.store.sqlite._sql import Query, Row

__all__ = ["store_metric_values"]

_ALL = "EXISTS (SELECT 1 FROM meta WHERE key = 'dash_all')"
# a dimension's values add up to the total, so the endpoint rows of dash_all (fewest, usually) give it
_SUMMED = (
    "SELECT CASE WHEN {all} THEN (SELECT SUM({c}) FROM dash_all WHERE dim = 'endpoint' AND service = '')"
    " ELSE (SELECT SUM({c}) FROM rollup_day WHERE service = '') END AS v"
)
_SCALARS = (
    ("cost_nano", _SUMMED.format(all=_ALL, c="cost_nano")),
    ("spans", _SUMMED.format(all=_ALL, c="spans")),
    ("unpriced", _SUMMED.format(all=_ALL, c="unpriced")),
    ("dead_letters", "SELECT COUNT(*) AS v FROM dead_letters"),
    ("alerts_fired", "SELECT COUNT(*) AS v FROM alert_events"),
    ("webhook_failures", "SELECT COUNT(*) AS v FROM alert_deliveries WHERE error IS NOT NULL OR status >= 300"),
)
#: the top features by cost (ties by name): through dash_all's cost index, else a sort of the rollups
_TOP_FEATURES = (
    "SELECT k, v FROM (SELECT value AS k, cost_nano AS v FROM dash_all WHERE dim = 'feature' AND service = ''"
    f" AND {_ALL} ORDER BY cost_nano DESC, value LIMIT ?)"
    " UNION ALL SELECT k, v FROM (SELECT feature AS k, SUM(cost_nano) AS v FROM rollup_day WHERE service = ''"
    f" AND NOT {_ALL} GROUP BY feature ORDER BY v DESC, k LIMIT ?)"
)
_PER_SERVICE = (
    "SELECT service AS k, SUM(cost_nano) AS v FROM dash_all WHERE dim = 'endpoint' AND service != ''"
    f" AND {_ALL} GROUP BY service"
    " UNION ALL SELECT service AS k, SUM(cost_nano) AS v FROM rollup_day WHERE service != ''"
    f" AND NOT {_ALL} GROUP BY service"
)


def store_metric_values(top: int) -> Query[dict[str, Any]]:
    """``{cost_nano, spans, unpriced, dead_letters, alerts_fired, webhook_failures: int,
    features: [(name, cost_nano)] of the ``top`` costliest, sorted by name, features_other_nano: int (the rest),
    services: [(name, cost_nano)] sorted by name}``."""

    def post(results: list[list[Row]]) -> dict[str, Any]:
        scalars = zip(_SCALARS, results[: len(_SCALARS)], strict=True)
        out: dict[str, Any] = {name: int(rows[0]["v"] or 0) for (name, _), rows in scalars}
        features, services = results[len(_SCALARS) :]
        out["features"] = sorted((str(r["k"]), int(r["v"] or 0)) for r in features)
        out["features_other_nano"] = out["cost_nano"] - sum(c for _, c in out["features"])
        out["services"] = sorted((str(r["k"]), int(r["v"] or 0)) for r in services)
        return out

    steps = (*((sql, ()) for _, sql in _SCALARS), (_TOP_FEATURES, (top, top)), (_PER_SERVICE, ()))
    return Query(steps, post)
