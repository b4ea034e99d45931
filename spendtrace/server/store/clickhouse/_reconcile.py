"""``ClickHouseReconcileStore``: what ``reconcile()`` reads and records, in the store's ClickHouse database.

Modelled spend is summed from ``rollup_day``'s per-service rows (parts merge lazily: always
aggregated), restatements read ``FINAL`` from the ReplacingMergeTree ``_admin`` keeps them in. The
Cost Explorer cache (``ce_cache``) keeps the newest copy per (range, grouping) by a version stamp,
and a saved report is one row whose id is claimed by the insert itself (``_claims``): concurrent
saves get distinct ids, and the stored JSON carries its id from the start (schema v5, ``_ddl``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spendtrace.errors import StorageError
from spendtrace.server.model.reconcile import CachedPages, ModelledSpend, Restatement
from spendtrace.server.store.clickhouse._claims import new_nonce, token, try_insert
from spendtrace.server.store.clickhouse._client import Conn, connect

if TYPE_CHECKING:
    from spendtrace.server.store.base import ReconcileStore

__all__ = ["ClickHouseReconcileStore"]

_MAX_TRIES = 1000


class ClickHouseReconcileStore:
    """The reconciliation records of one ClickHouse database (migrated unless ``readonly``)."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self._readonly = readonly
        self._ch: Conn = connect(url, readonly=readonly)
        self._lock = threading.Lock()
        self._last_ver = 0
        if readonly:
            try:
                found = self._ch.tuples("EXISTS TABLE reconciliations")
            except StorageError:
                found = []
            if not found or not int(found[0][0]):
                self._ch.close()
                raise StorageError(f"{url}: no spendtrace store (or one older than schema 5) to read")

    def __repr__(self) -> str:
        return f"ClickHouseReconcileStore({self.url!r})"

    def close(self) -> None:
        """Close the ClickHouse client."""
        self._ch.close()

    def _writable(self) -> None:
        if self._readonly:
            raise StorageError(f"{self.url}: reconciliation store opened read-only")

    def _ver(self) -> int:
        with self._lock:
            self._last_ver = max(time.time_ns(), self._last_ver + 1)
            return self._last_ver

    # -- modelled spend and restatements --------------------------------------------------------

    def modelled_spend(self, start_s: int, end_s: int) -> list[ModelledSpend]:
        """Per (day, feature, service) nano-dollars from the day rollup's per-service rows in [start_s, end_s)."""
        rows = self._ch.tuples(
            "SELECT bucket, toString(feature) AS f, toString(service) AS s, sum(cost_nano) FROM rollup_day"
            " WHERE service != '' AND bucket >= %s AND bucket < %s GROUP BY bucket, f, s",
            (start_s, end_s),
        )
        return [ModelledSpend(int(b), str(f), str(s), int(c)) for b, f, s, c in rows]

    def restatements_between(self, start: str, end: str) -> list[Restatement]:
        """Restatements overlapping ``[start, end)`` (their newest version), by id."""
        rows = self._ch.tuples(
            "SELECT id, created_ns, who, why, start_date, end_date, factor, factors, undone_ns, kind, features, detail"
            " FROM restatements FINAL WHERE start_date < %s AND end_date > %s ORDER BY id",
            (end, start),
        )
        return [
            Restatement(
                id=int(r[0]), created_ns=int(r[1]), who=str(r[2]), why=str(r[3]), start_date=str(r[4]),
                end_date=str(r[5]), factor=None if r[6] is None else float(r[6]), factors=json.loads(r[7] or "{}"),
                undone_ns=None if r[8] is None else int(r[8]), kind=str(r[9]), features=json.loads(r[10] or "[]"),
                detail=json.loads(r[11] or "{}"),
            )
            for r in rows
        ]

    # -- the Cost Explorer cache ----------------------------------------------------------------

    def cached_pages(self, start: str, end: str, group_by: str) -> CachedPages | None:
        """The newest cached copy for this range and grouping, or None."""
        rows = self._ch.tuples(
            "SELECT fetched_ns, pages FROM ce_cache WHERE start_date = %s AND end_date = %s AND group_by = %s"
            " ORDER BY ver DESC LIMIT 1",
            (start, end, group_by),
        )
        return None if not rows else CachedPages(int(rows[0][0]), list(json.loads(rows[0][1])))

    def cache_pages(
        self, start: str, end: str, group_by: str, pages: Sequence[Mapping[str, Any]], *, fetched_ns: int
    ) -> None:
        """A newer copy for this range and grouping (the older ones merge away)."""
        self._writable()
        text = json.dumps(list(pages), default=str)
        row = (start, end, group_by, fetched_ns, text, self._ver())
        self._ch.insert("ce_cache", [[v] for v in row], ("start_date", "end_date", "group_by", "fetched_ns", "pages",
                                                         "ver"))

    # -- saved reports --------------------------------------------------------------------------

    def save_report(self, report: Mapping[str, Any]) -> int:
        """Insert the report under the next free id (claimed by the insert, the id inside its JSON)."""
        self._writable()
        created_ns, start, end = int(report["created_ns"]), str(report["start"]), str(report["end"])
        n = int(self._ch.tuples("SELECT max(id) FROM reconciliations")[0][0] or 0) + 1
        for _ in range(_MAX_TRIES):
            nonce = new_nonce()
            row = (n, created_ns, start, end, json.dumps({**report, "id": n}), nonce)
            try_insert(self._ch, "reconciliations", ("id", "created_ns", "start_date", "end_date", "report", "nonce"),
                       row, token("report", n))
            got = self._ch.tuples("SELECT nonce FROM reconciliations WHERE id = %s LIMIT 1", (n,))
            if got and str(got[0][0]) == nonce:
                return n
            n += 1
        raise StorageError(f"{self.url}: no free reconciliation id after {_MAX_TRIES} tries")

    def latest_report(self) -> dict[str, Any] | None:
        """The report with the highest id, or None."""
        rows = self._ch.tuples("SELECT report FROM reconciliations ORDER BY id DESC LIMIT 1")
        return None if not rows else dict(json.loads(rows[0][0]))


if TYPE_CHECKING:

    def _conforms(store: ClickHouseReconcileStore) -> ReconcileStore:
        """mypy checks here that the class implements the role."""
        return store
