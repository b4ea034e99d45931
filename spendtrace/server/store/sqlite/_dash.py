"""Dashboard rollups: the hour and day rollups summed over all dimensions but one.

``rollup_*`` rows are keyed by (bucket, feature, user_id, endpoint, service), so a month of them
grows with tenants x endpoints x features x services and a "spend per tenant" scan of it costs
hundreds of milliseconds with a hundred tenants. ``dash_hour`` / ``dash_day`` hold the same sums
keyed by (dim, service, value, bucket), one row set per dimension (``dim`` = 'feature', 'user_id'
or 'endpoint'), so "per feature" or "per tenant" is one primary-key range scan.

Invariant: a ``dash_*`` row equals the sum of the ``rollup_*`` rows of the same grain with that
value of ``dim``, that service and that bucket. The ingest runs ``dash_statements`` of a batch in
the same transaction as its rollup deltas; anything that rewrites rollups in place (restatement,
undo) calls ``rebuild`` for the buckets it touched; retention deletes by bucket like the rollups.
Readers use the tables only once the ``meta`` marker says a writer maintains them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

__all__ = ["ALL_MARKER", "DIMS", "GRAINS", "MARKER", "dash_rows", "dash_statements", "rebuild", "rebuild_statements"]

DIMS = ("feature", "user_id", "endpoint")
GRAINS = ("hour", "day")
_VALUES = ("cost_nano", "calls", "spans", "errors", "unpriced", "var_nano2", "requests")

_UPSERT = (
    "INSERT INTO dash_{g} (dim, service, value, bucket, cost_nano, calls, spans, errors, unpriced, var_nano2, "
    "requests) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (dim, service, value, bucket) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _VALUES)
)

RollupDeltas = Mapping[tuple[int, str, str, str, str], list[Any]]


def dash_rows(rollup: RollupDeltas) -> list[tuple[Any, ...]]:
    """Dashboard deltas of one grain's rollup deltas ``{(bucket, feature, user, endpoint, service): [values]}``."""
    return [(*k, *v) for k, v in _dash_deltas(rollup).items()]


def _dash_deltas(rollup: RollupDeltas) -> dict[tuple[str, str, str, int], list[Any]]:
    """``{(dim, service, value, bucket): 7 sums}``. Hot (once per batch over every rollup key): unrolled on purpose."""
    out: dict[tuple[str, str, str, int], list[Any]] = {}
    get = out.get
    for (bucket, feature, user, endpoint, service), v in rollup.items():
        req = v[6] if len(v) > 6 else 0
        for key in (
            ("feature", service, feature, bucket),
            ("user_id", service, user, bucket),
            ("endpoint", service, endpoint, bucket),
        ):
            acc = get(key)
            if acc is None:
                out[key] = [v[0], v[1], v[2], v[3], v[4], v[5], req]
            else:
                acc[0] += v[0]
                acc[1] += v[1]
                acc[2] += v[2]
                acc[3] += v[3]
                acc[4] += v[4]
                acc[5] += v[5]
                acc[6] += req
    return out


def _coarsen(deltas: dict[tuple[str, str, str, int], list[Any]], size: int) -> list[tuple[Any, ...]]:
    out: dict[tuple[str, str, str, int], list[Any]] = {}
    for (dim, service, value, bucket), v in deltas.items():
        key = (dim, service, value, bucket - bucket % size)
        acc = out.get(key)
        if acc is None:
            out[key] = list(v)
        else:
            for i in range(7):
                acc[i] += v[i]
    return [(*k, *v) for k, v in out.items()]


MARKER = "dash_rollups"
_MARKED = f"EXISTS (SELECT 1 FROM meta WHERE key = '{MARKER}')"
#: set once ``dash_all`` holds ``dash_day`` summed over buckets (readers use it only then)
ALL_MARKER = "dash_all"
_ALL_MARKED = f"EXISTS (SELECT 1 FROM meta WHERE key = '{ALL_MARKER}')"
_ALL_FILL = (
    f"INSERT INTO dash_all (dim, service, value, {', '.join(_VALUES)}) SELECT dim, service, value, "
    + ", ".join(f"SUM({c})" for c in _VALUES)
    + f" FROM (SELECT 1 AS todo WHERE NOT {_ALL_MARKED}) AS first CROSS JOIN dash_day GROUP BY dim, service, value"
)


def dash_statements(rollups: Mapping[str, RollupDeltas]) -> Iterable[tuple[str, list[tuple[Any, ...]]]]:
    """The statements adding a batch's dashboard deltas, given its ``{grain: rollup deltas}``.

    Run them in the batch's transaction *before* its rollup upserts. The first time on a file
    (no ``meta`` marker yet: a file written before these tables existed), they create the tables
    if needed and fill them from the rollups already stored; then they set the marker, which
    tells readers the tables are maintained.
    """
    from spendtrace.server.store.sqlite._ddl import DASH_TABLES

    for ddl in DASH_TABLES:
        yield ddl, [()]
    # dash_day about to be filled from scratch (no marker): whatever dash_all holds is void, rebuilt below
    yield f"DELETE FROM meta WHERE key = '{ALL_MARKER}' AND NOT {_MARKED}", [()]
    for g in GRAINS:
        yield _first_fill(g), [()]
    yield f"INSERT OR IGNORE INTO meta (key, value) VALUES ('{MARKER}', '1')", [()]
    # dash_all (kept by triggers on dash_day) starts from what dash_day holds, once per file
    yield f"DELETE FROM dash_all WHERE NOT {_ALL_MARKED}", [()]
    yield _ALL_FILL, [()]
    yield f"INSERT OR IGNORE INTO meta (key, value) VALUES ('{ALL_MARKER}', '1')", [()]
    hour = rollups.get("hour")
    if hour:  # the hour deltas from the hour rollups, the day deltas from those (fewer rows)
        deltas = _dash_deltas(hour)
        yield _UPSERT.format(g="hour"), [(*k, *v) for k, v in deltas.items()]
        yield _UPSERT.format(g="day"), _coarsen(deltas, 86_400)


def _fill(grain: str, source: str, where: str) -> str:
    cols = ", ".join(_VALUES)
    sums = ", ".join(f"SUM({c})" for c in _VALUES)
    selects = " UNION ALL ".join(
        f"SELECT '{dim}', service, {dim}, bucket, {sums} FROM {source} WHERE {where} GROUP BY service, {dim}, bucket"
        for dim in DIMS
    )
    return f"INSERT INTO dash_{grain} (dim, service, value, bucket, {cols}) {selects}"


def _first_fill(grain: str) -> str:
    """Fill ``dash_{grain}`` from all stored rollups, only on a file with no marker yet (else a no-op).

    The marker test is the outer side of a CROSS JOIN, so once the marker exists the rollups are
    not even opened: this runs with every batch and must cost nothing then.
    """
    todo = f"(SELECT 1 AS todo WHERE NOT {_MARKED}) AS first CROSS JOIN rollup_{grain}"
    return _fill(grain, todo, "1")


def rebuild_statements(grain: str) -> list[str]:
    """SQL (parameters: lo, hi epoch seconds, twice for the second) recomputing ``dash_{grain}`` buckets in [lo, hi)."""
    return [
        f"DELETE FROM dash_{grain} WHERE bucket >= ? AND bucket < ?",
        _fill(grain, f"rollup_{grain}", "bucket >= ? AND bucket < ?"),
    ]


def rebuild(conn: sqlite3.Connection, lo_s: int | None = None, hi_s: int | None = None) -> None:
    """Recompute the dashboard rows of buckets in [lo_s, hi_s) from the rollups (inside the caller's transaction)."""
    lo = -(2**62) if lo_s is None else lo_s
    hi = 2**62 if hi_s is None else hi_s
    for grain in GRAINS:
        delete, fill = rebuild_statements(grain)
        conn.execute(delete, (lo, hi))
        conn.execute(fill, (lo, hi) * len(DIMS))
