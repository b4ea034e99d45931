"""``ReconcileStore`` on SQLite: spend from ``rollup_day``, ``restatements``, ``reconciliations``, ``ce_cache``.

One connection per store (WAL, autocommit), shared by threads under a lock. ``ce_cache`` is not
part of the versioned schema: it is a cache, created when first written (``CREATE TABLE IF NOT
EXISTS``), and a store where it is missing simply has nothing cached. ``save_report`` inserts and
fills a report in one transaction, so its JSON can carry the id it gets. Driver errors surface as
``StorageError``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spendtrace.server.model.reconcile import CachedPages, ModelledSpend, Restatement
from spendtrace.server.store.sqlite._db import Guard, connect

if TYPE_CHECKING:
    from spendtrace.server.store.base import ReconcileStore

__all__ = ["SQLiteReconcileStore"]

_CACHE_DDL = """
CREATE TABLE IF NOT EXISTS ce_cache (
    start_date TEXT    NOT NULL,
    end_date   TEXT    NOT NULL,
    group_by   TEXT    NOT NULL,
    fetched_ns INTEGER NOT NULL,
    pages      TEXT    NOT NULL,
    PRIMARY KEY (start_date, end_date, group_by)
)
"""


class SQLiteReconcileStore:
    """The reconciliation records of one SQLite file (created with the current schema unless ``readonly``)."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = os.fspath(path)
        self.url = f"sqlite:///{os.path.abspath(self.path)}"
        self._readonly = readonly
        self._conn: sqlite3.Connection = connect(self.path, readonly=readonly, check_same_thread=False)
        self._guard = Guard(self.path)
        self._cache_ready = False

    def __repr__(self) -> str:
        return f"SQLiteReconcileStore({self.path!r})"

    def __enter__(self) -> SQLiteReconcileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        with self._guard:
            self._conn.close()

    # -- modelled spend and restatements --------------------------------------------------------

    def modelled_spend(self, start_s: int, end_s: int) -> list[ModelledSpend]:
        """Per (day, feature, service) nano-dollars from the day rollup's per-service rows in [start_s, end_s)."""
        with self._guard:
            rows = self._conn.execute(
                "SELECT bucket, feature, service, sum(cost_nano) FROM rollup_day"
                " WHERE service != '' AND bucket >= ? AND bucket < ? GROUP BY bucket, feature, service",
                (start_s, end_s),
            ).fetchall()
        return [ModelledSpend(int(b), str(f), str(s), int(c)) for b, f, s, c in rows]

    def restatements_between(self, start: str, end: str) -> list[Restatement]:
        """Restatements overlapping ``[start, end)``, by id."""
        with self._guard:
            rows = self._conn.execute(
                "SELECT id, created_ns, who, why, start_date, end_date, factor, factors, undone_ns, kind, features, "
                "detail FROM restatements"
                " WHERE start_date < ? AND end_date > ? ORDER BY id",
                (end, start),
            ).fetchall()
        return [
            Restatement(
                id=int(r[0]), created_ns=int(r[1]), who=r[2], why=r[3], start_date=r[4], end_date=r[5],
                factor=None if r[6] is None else float(r[6]), factors=json.loads(r[7] or "{}"),
                undone_ns=None if r[8] is None else int(r[8]), kind=str(r[9]), features=json.loads(r[10] or "[]"),
                detail=json.loads(r[11] or "{}"),
            )
            for r in rows
        ]

    # -- the Cost Explorer cache ----------------------------------------------------------------

    def _ensure_cache(self) -> None:
        if not self._cache_ready:
            self._conn.execute(_CACHE_DDL)
            self._cache_ready = True

    def cached_pages(self, start: str, end: str, group_by: str) -> CachedPages | None:
        """The cached response for this range and grouping, or None."""
        with self._guard:
            if self._readonly:
                found = self._conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ce_cache'"
                ).fetchone()
                if found is None:
                    return None
            else:
                self._ensure_cache()
            row = self._conn.execute(
                "SELECT fetched_ns, pages FROM ce_cache WHERE start_date = ? AND end_date = ? AND group_by = ?",
                (start, end, group_by),
            ).fetchone()
        return None if row is None else CachedPages(int(row[0]), list(json.loads(row[1])))

    def cache_pages(
        self, start: str, end: str, group_by: str, pages: Sequence[Mapping[str, Any]], *, fetched_ns: int
    ) -> None:
        """Store (or replace) the cached response for this range and grouping."""
        text = json.dumps(list(pages), default=str)
        with self._guard:
            self._ensure_cache()
            self._conn.execute(
                "INSERT INTO ce_cache (start_date, end_date, group_by, fetched_ns, pages) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(start_date, end_date, group_by) DO UPDATE SET fetched_ns = excluded.fetched_ns, "
                "pages = excluded.pages",
                (start, end, group_by, fetched_ns, text),
            )

    # -- saved reports --------------------------------------------------------------------------

    def save_report(self, report: Mapping[str, Any]) -> int:
        """Insert ``report`` with its new id set in its JSON; one transaction; returns the id."""
        created_ns, start, end = int(report["created_ns"]), str(report["start"]), str(report["end"])
        with self._guard:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute(
                    "INSERT INTO reconciliations (created_ns, start_date, end_date, report) VALUES (?, ?, ?, ?)",
                    (created_ns, start, end, "{}"),
                )
                rid = int(cur.lastrowid or 0)
                self._conn.execute(
                    "UPDATE reconciliations SET report = ? WHERE id = ?", (json.dumps({**report, "id": rid}), rid)
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return rid

    def latest_report(self) -> dict[str, Any] | None:
        """The report with the highest id, or None."""
        with self._guard:
            row = self._conn.execute("SELECT report FROM reconciliations ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else dict(json.loads(row[0]))


if TYPE_CHECKING:

    def _conforms(store: SQLiteReconcileStore) -> ReconcileStore:
        """mypy checks here that the class implements the role."""
        return store
