"""The numbers behind the store's Prometheus metrics (``spendtrace.server.metrics``), as one ``Query``.

Read in one snapshot: spend in total, for the ``top`` costliest features and per service, spans,
unpriced items, dead letters, alerts fired, failed webhooks. On a file with ``dash_all`` (the dash
rollups over every day) that is a few hundred index entries however many tenants and days are
stored; otherwise the daily rollups are summed (so the figures survive raw-span retention).
"""

from __future__ import annotations

from typing import Any

from spendtrace.server.store.sqlite._sql import Query, Row

__all__ = ["HAS_DASH_ALL", "store_metric_values"]

#: whether the file has ``dash_all`` filled (then every figure comes from it)
HAS_DASH_ALL = "SELECT COUNT(*) FROM meta WHERE key = 'dash_all'"
_SCALARS = (
    ("dead_letters", "SELECT COUNT(*) AS v FROM dead_letters"),
    ("alerts_fired", "SELECT COUNT(*) AS v FROM alert_events"),
    ("webhook_failures", "SELECT COUNT(*) AS v FROM alert_deliveries WHERE error IS NOT NULL OR status >= 300"),
)
# a dimension's values add up to the total, so the endpoint rows of dash_all (fewest, usually) give it
_SUMS = {
    True: "SELECT SUM(cost_nano) AS c, SUM(spans) AS s, SUM(unpriced) AS u FROM dash_all"
    " WHERE dim = 'endpoint' AND service = ''",
    False: "SELECT SUM(cost_nano) AS c, SUM(spans) AS s, SUM(unpriced) AS u FROM rollup_day WHERE service = ''",
}
#: the top features by cost (ties by name): through dash_all's cost index, else a sort of the rollups
_TOP_FEATURES = {
    True: "SELECT value AS k, cost_nano AS v FROM dash_all WHERE dim = 'feature' AND service = ''"
    " ORDER BY cost_nano DESC, value LIMIT ?",
    False: "SELECT feature AS k, SUM(cost_nano) AS v FROM rollup_day WHERE service = '' GROUP BY feature"
    " ORDER BY v DESC, k LIMIT ?",
}
_PER_SERVICE = {
    True: "SELECT service AS k, SUM(cost_nano) AS v FROM dash_all WHERE dim = 'endpoint' AND service != ''"
    " GROUP BY service",
    False: "SELECT service AS k, SUM(cost_nano) AS v FROM rollup_day WHERE service != '' GROUP BY service",
}


def store_metric_values(top: int, *, dash_all: bool) -> Query[dict[str, Any]]:
    """``{cost_nano, spans, unpriced, dead_letters, alerts_fired, webhook_failures: int,
    features: [(name, cost_nano)] of the ``top`` costliest, sorted by name, features_other_nano: int (the rest),
    services: [(name, cost_nano)] sorted by name}``; from ``dash_all`` when the file has it (``HAS_DASH_ALL``)."""

    def post(results: list[list[Row]]) -> dict[str, Any]:
        sums, *scalars, features, services = results
        out: dict[str, Any] = {name: int(rows[0]["v"] or 0) for (name, _), rows in zip(_SCALARS, scalars, strict=True)}
        out["cost_nano"] = int(sums[0]["c"] or 0)
        out["spans"] = int(sums[0]["s"] or 0)
        out["unpriced"] = int(sums[0]["u"] or 0)
        out["features"] = sorted((str(r["k"]), int(r["v"] or 0)) for r in features)
        out["features_other_nano"] = out["cost_nano"] - sum(c for _, c in out["features"])
        out["services"] = sorted((str(r["k"]), int(r["v"] or 0)) for r in services)
        return out

    steps = (
        (_SUMS[dash_all], ()),
        *((sql, ()) for _, sql in _SCALARS),
        (_TOP_FEATURES[dash_all], (top,)),
        (_PER_SERVICE[dash_all], ()),
    )
    return Query(steps, post)
