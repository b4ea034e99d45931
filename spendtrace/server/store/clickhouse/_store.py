"""``ClickHouseStore`` (the ``ReadStore`` and ``AdminStore`` roles) and ``AsyncClickHouseStore``.

One ``clickhouse_connect`` client per store, calls serialised (a second one, opened on first use, runs
the last two statements of a top-of-all-time aggregate beside each other). A query of several statements is not
one snapshot on ClickHouse (there are no read transactions); every statement reads whole parts, so
each is consistent on its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from spendtrace.errors import StorageError
from spendtrace.server.store.clickhouse import _admin
from spendtrace.server.store.clickhouse import _reads as q
from spendtrace.server.store.clickhouse._client import Conn, connect
from spendtrace.server.store.sqlite._sql import Filters, Query, Row, TimeLike, coarsen, to_ns

if TYPE_CHECKING:
    from datetime import date

    from spendtrace.server.model.reprice import RepriceResult
    from spendtrace.server.pricing import PriceBook

__all__ = ["CHANGE_TOKEN", "AsyncClickHouseStore", "ClickHouseStore"]

T = TypeVar("T")
#: the oldest stored minute and hour buckets (NULL when none): older bounds round to hours / days
_FLOORS = "SELECT (SELECT minOrNull(bucket) FROM rollup_minute) AS m, (SELECT minOrNull(bucket) FROM rollup_hour) AS h"
#: moves on every insert, delete or merge of the store's tables (a merge moves it too: a spurious refresh)
CHANGE_TOKEN = (
    "SELECT cityHash64(sum(rows), count(), max(modification_time), sum(bytes_on_disk)) FROM system.parts "
    "WHERE database = currentDatabase() AND active"
)


def _now_ns(now: TimeLike) -> int:
    ns = to_ns(now, what="now")
    return time.time_ns() if ns is None else ns


def _limit(rows: list[Row], limit: int | None) -> list[Row]:
    return rows if limit is None else rows[: max(int(limit), 0)]


class ClickHouseStore:
    """Read (and restate, and set retention on) a spendtrace store on ClickHouse or chDB.

    The same methods and result rows as ``SQLiteStorage``; open it with ``open_store(url)``.
    """

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self._conn: Conn = connect(url, readonly=readonly)
        self._side_lock = threading.Lock()
        self._side: tuple[Conn, ThreadPoolExecutor] | None = None

    # -- plumbing --------------------------------------------------------------------------------
    def run(self, query: Query[T]) -> T:
        """Run a query's statements in order and shape their rows."""
        return query.post([self._conn.rows(sql, params) for sql, params in query.steps])

    def _rollup_filters(self, start: TimeLike, end: TimeLike, *names: str | None) -> Filters:
        f = Filters.of(start, end, *names)
        if f.start_ns is None and f.end_ns is None:
            return f
        minute_floor, hour_floor = self._conn.tuples(_FLOORS)[0]
        return coarsen(f, minute_floor, hour_floor)

    def change_token(self) -> int:
        """A value that differs after any write to the store's tables (from ``system.parts``)."""
        return int(self._conn.tuples(CHANGE_TOKEN)[0][0])

    def _beside(self, first: tuple[str, Sequence[Any]], second: tuple[str, Sequence[Any]]) -> list[list[Row]]:
        """The rows of two statements run at once: ``second`` on the side client, in its own thread.

        The engine runs the two in parallel (a server, and chDB in this process alike): the top 100
        tenants of all time 50 -> 40 ms at 100,000 tenants, their per-service rows and first and last days
        read together.
        """
        with self._side_lock:
            if self._side is None:
                self._side = (connect(self.url, readonly=True), ThreadPoolExecutor(1, "spendtrace-ch-side"))
            side, pool = self._side
        later = pool.submit(side.rows, *second)
        try:
            rows = self._conn.rows(*first)
        finally:
            other = later.result()
        return [rows, other]

    def close(self) -> None:
        """Close the clients."""
        self._conn.close()
        with self._side_lock:
            side, self._side = self._side, None
        if side is not None:
            side[1].shutdown()
            side[0].close()

    def __enter__(self) -> ClickHouseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- aggregates ------------------------------------------------------------------------------
    def _aggregate(
        self, dim: str, start: TimeLike, end: TimeLike, names: tuple[str | None, ...], limit: int | None = None
    ) -> list[Row]:
        f = self._rollup_filters(start, end, *names)
        if limit is not None and f == Filters():  # the top of all time: from ``dim_all``, not every day
            n = max(int(limit), 0)
            page = self._conn.rows(*q.aggregate_top_all_time(dim, n).steps[0])
            keys = [str(r["k"]) for r in page]
            query = q.aggregate_top_all_time(dim, n, keys)
            return query.post([page, *(self._beside(*query.steps[1:]) if keys else [[], []])])
        return _limit(self.run(q.aggregate(dim, f)), limit)

    def aggregate_by_feature(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """Spend per feature, most expensive first."""
        return self._aggregate("feature", start, end, (feature, user_id, endpoint, service), limit)

    def aggregate_by_user(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """Spend per tenant (``user_id``), most expensive first."""
        return self._aggregate("user_id", start, end, (feature, user_id, endpoint, service), limit)

    def aggregate_by_endpoint(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """Spend per endpoint, most expensive first."""
        return self._aggregate("endpoint", start, end, (feature, user_id, endpoint, service), limit)

    def aggregate_by_service(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """Spend per service, most expensive first."""
        f = self._rollup_filters(start, end, feature, user_id, endpoint, service)
        return _limit(self.run(q.aggregate_by_service(f)), limit)

    def get_feature_cost_breakdown(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """Direct vs fully-loaded cost per feature."""
        f = self._rollup_filters(start, end, feature, user_id, endpoint)
        return _limit(self.run(q.feature_breakdown(f)), limit)

    def total(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
    ) -> Row:
        """One total: ``total_cost``, ``cost_nano``, ``transaction_count``, ``unpriced_count``, ``stderr`` ..."""
        return self.run(q.total(self._rollup_filters(start, end, feature, user_id, endpoint, service)))

    def get_cost_trend(
        self,
        feature: str | None = None,
        days: int = 30,
        *,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
        now: TimeLike = None,
    ) -> list[Row]:
        """One row per UTC day for the last ``days`` days (today included), oldest first, zero-filled."""
        f = Filters(feature=feature, user_id=user_id, endpoint=endpoint, service=service)
        return self.run(q.cost_trend(f, int(days), _now_ns(now)))

    def cost_trend_by_feature(self, days: int = 30, *, now: TimeLike = None) -> list[Row]:
        """Per feature (largest first) its daily cost points for the last ``days`` days."""
        return self.run(q.cost_trend_by_feature(int(days), _now_ns(now)))

    # -- live views ------------------------------------------------------------------------------
    def feature_timeseries(self, minutes: int = 60, now_ns: int | None = None) -> dict[str, list[float]]:
        """{feature: USD per minute, oldest first} for the last ``minutes`` minutes."""
        return self.run(q.feature_timeseries(int(minutes), _now_ns(now_ns)))

    def spend_rate(
        self,
        minutes: int = 5,
        now_ns: int | None = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
    ) -> Row:
        """``usd_per_hour`` spent over the last ``minutes`` minutes."""
        f = Filters(feature=feature, user_id=user_id, endpoint=endpoint, service=service)
        return self.run(q.spend_rate(f, int(minutes), _now_ns(now_ns)))

    def ingest_stats(self, now_ns: int | None = None) -> Row:
        """Spans started in the last minute, total spans / requests / cost, unpriced items, dead letters."""
        return self.run(q.ingest_stats(_now_ns(now_ns)))

    def dead_letters(self, limit: int = 50) -> list[Row]:
        """The newest dead letters, with their reason."""
        return self.run(q.dead_letters(limit))

    def unpriced_usage(self) -> list[Row]:
        """Usage no price covered, per key / service / feature."""
        return self.run(q.unpriced_usage())

    def store_metric_values(self, top: int = 50) -> Row:
        """The numbers behind the store's Prometheus metrics (``spendtrace.server.metrics``).

        Spend from the daily rollups (they survive raw-span retention) as ``dim_all`` sums them per value
        (one row per endpoint or feature instead of every day's rows: the total and the top features
        read 2,000 and 10,000 rows, not 680,000 each), summed since parts merge lazily; a feature whose
        every day retention took (its sums negated to 0) is left out, as the day rollups no longer hold
        it. Alert counts from its alert tables (``_alerts``).
        """
        cost, spans, unpriced = self._conn.tuples(
            "SELECT sum(cost_nano), sum(spans), sum(unpriced) FROM dim_all WHERE dim = 'endpoint' AND service = ''"
            + q.ONE_THREAD
        )[0]
        dead = self._conn.tuples("SELECT count() FROM dead_letters")[0][0]
        features = sorted(
            (str(f), int(c))
            for f, c, _ in self._conn.tuples(
                "SELECT value AS f, sum(cost_nano) AS c, sum(spans) AS s FROM dim_all WHERE dim = 'feature'"
                f" AND service = '' GROUP BY f HAVING s != 0 ORDER BY c DESC, f LIMIT %s{q.ONE_THREAD}",
                (max(0, int(top)),),
            )
        )
        services = self._conn.tuples(
            "SELECT toString(service) AS s, sum(cost_nano) FROM rollup_day WHERE service != '' GROUP BY s ORDER BY s"
        )
        try:
            fired, failures = self._conn.tuples(
                "SELECT (SELECT count() FROM alert_events), (SELECT count() FROM alert_deliveries"
                " WHERE attempt IS NOT NULL AND (error IS NOT NULL OR status >= 300))"
            )[0]
        except StorageError:  # a store not migrated to v5 yet (no alert tables): nothing fired here
            fired = failures = 0
        return {
            "cost_nano": int(cost or 0),
            "spans": int(spans or 0),
            "unpriced": int(unpriced or 0),
            "dead_letters": int(dead or 0),
            "alerts_fired": int(fired),
            "webhook_failures": int(failures),
            "features": features,
            "features_other_nano": int(cost or 0) - sum(c for _, c in features),
            "services": [(str(k), int(v or 0)) for k, v in services],
        }

    # -- requests and raw spans ------------------------------------------------------------------
    def get_request_cost(
        self,
        limit: int = 20,
        order: str = "recent",
        *,
        start: TimeLike = None,
        end: TimeLike = None,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        offset: int = 0,
    ) -> list[Row]:
        """Cost per request: newest first, or most expensive first with ``order='cost'``.

        The newest come from ``request_index``, the days back from the newest read only as far as the page
        needs (``_reads.page_is_exact``).
        """
        f = Filters.of(start, end, feature, user_id, endpoint)
        if order != "recent" or limit <= 0:
            return self.run(q.request_costs(f, limit, order, offset))
        rows: list[Row] = []
        newest = int(self._conn.tuples(q.NEWEST_DAY)[0][0] or 0)
        for since in q.since_days(newest):
            rows = self.run(q.request_costs(f, limit, order, offset, since_day=since))
            if q.page_is_exact(len(rows), limit, rows[-1]["start_ns"] if rows else None, since):
                break
        return rows

    def get_request_subtree(self, request_id: str) -> list[Row]:
        """The request's spans as a tree in depth-first order."""
        return self.run(q.subtree(request_id=request_id))

    def get_transaction_subtree(self, span_id: str) -> list[Row]:
        """The subtree rooted at one span, in depth-first order (depth 0 at that span)."""
        return self.run(q.subtree(span_id=span_id))

    def transactions(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
        request_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Row]:
        """Raw spans newest first (stable order for paging), exact time filters."""
        f = Filters.of(start, end, feature, user_id, endpoint, service)
        return self.run(q.transactions(f, limit, offset, request_id))

    # -- admin -----------------------------------------------------------------------------------
    def set_retention(self, **kwargs: Any) -> Any:
        """Set how long data is kept: ``raw_data_days``, ``hourly_rollups_days``, ``daily_rollups_days``."""
        return _admin.set_retention(self._conn, **kwargs)

    def apply_retention(self, **kwargs: Any) -> Any:
        """Delete what the retention settings say is too old."""
        return _admin.apply_retention(self._conn, **kwargs)

    def restate_historical_costs(self, factor: float | None = None, **kwargs: Any) -> Any:
        """Scale stored costs in a date range by ``factor`` (or per-service ``factors``), by delta rows."""
        return _admin.restate_historical_costs(self._conn, factor=factor, **kwargs)

    def undo_restatement(self, restatement_id: int) -> Any:
        """Take back a restatement's (or a reprice's) delta rows."""
        return _admin.undo_restatement(self._conn, restatement_id)

    def reprice(
        self,
        *,
        start_date: str | date,
        end_date: str | date,
        features: Sequence[str] | None = None,
        book: PriceBook | None = None,
        dry_run: bool = False,
        who: str | None = None,
        why: str = "",
    ) -> RepriceResult:
        """Price the stored usage of ``[start_date, end_date)`` again from ``book`` (default ``current_book()``)."""
        from spendtrace.server.pricing import current_book
        from spendtrace.server.store.clickhouse import _reprice

        return _reprice.reprice(
            self._conn, book or current_book(), start_date=start_date, end_date=end_date, features=features,
            dry_run=dry_run, who=who, why=why,
        )  # fmt: skip


class AsyncClickHouseStore:
    """The queries of ``ClickHouseStore`` for asyncio code: the sync client in a worker thread.

    (``clickhouse-connect``'s async client does not drive chDB; one thread per call keeps one code path.)
    """

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self._readonly = readonly
        self._store: ClickHouseStore | None = None

    async def _call(self, fn: Callable[[ClickHouseStore], T]) -> T:
        if self._store is None:
            self._store = await asyncio.to_thread(ClickHouseStore, self.url, readonly=self._readonly)
        store = self._store
        return await asyncio.to_thread(fn, store)

    async def aggregate_by_feature(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``ClickHouseStore.aggregate_by_feature``."""
        return await self._call(lambda s: s.aggregate_by_feature(start, end, limit=limit, **names))

    async def aggregate_by_user(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``ClickHouseStore.aggregate_by_user``."""
        return await self._call(lambda s: s.aggregate_by_user(start, end, limit=limit, **names))

    async def aggregate_by_endpoint(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``ClickHouseStore.aggregate_by_endpoint``."""
        return await self._call(lambda s: s.aggregate_by_endpoint(start, end, limit=limit, **names))

    async def aggregate_by_service(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``ClickHouseStore.aggregate_by_service``."""
        return await self._call(lambda s: s.aggregate_by_service(start, end, limit=limit, **names))

    async def get_feature_cost_breakdown(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``ClickHouseStore.get_feature_cost_breakdown``."""
        return await self._call(lambda s: s.get_feature_cost_breakdown(start, end, limit=limit, **names))

    async def total(self, start: TimeLike = None, end: TimeLike = None, **names: str | None) -> Row:
        """``ClickHouseStore.total``."""
        return await self._call(lambda s: s.total(start, end, **names))

    async def get_request_subtree(self, request_id: str) -> list[Row]:
        """``ClickHouseStore.get_request_subtree``."""
        return await self._call(lambda s: s.get_request_subtree(request_id))

    async def get_request_cost(self, limit: int = 20, order: str = "recent", **kwargs: Any) -> list[Row]:
        """``ClickHouseStore.get_request_cost``."""
        return await self._call(lambda s: s.get_request_cost(limit, order, **kwargs))

    async def change_token(self) -> int:
        """``ClickHouseStore.change_token``."""
        return await self._call(lambda s: s.change_token())

    async def close(self) -> None:
        """Close the client (if it was opened)."""
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.to_thread(store.close)
