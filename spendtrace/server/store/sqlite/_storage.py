"""``SQLiteStorage`` (sqlite3) and ``AsyncStorage`` (aiosqlite): the same queries, two runners.

Each instance keeps one connection of its own (WAL, autocommit), so readers never wait on the
workers writing; a query of several statements runs inside one read transaction (a snapshot).
Before each read, spans this process recorded through the local exporter are flushed, so
``track(...)`` followed by ``storage.total()`` sees them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from spendtrace.server.store.sqlite import _queries as q
from spendtrace.server.store.sqlite import _raw as raw
from spendtrace.server.store.sqlite._db import connect, connect_async
from spendtrace.server.store.sqlite._sql import Filters, Query, Row, TimeLike, coarsen, to_ns
from spendtrace.settings import before_read, default_db_path

if TYPE_CHECKING:
    import sqlite3
    from datetime import date

    import aiosqlite

    from spendtrace.server.model.reprice import RepriceResult
    from spendtrace.server.pricing import PriceBook

__all__ = ["AsyncStorage", "SQLiteStorage", "resolve_path"]

T = TypeVar("T")
# dashboard rollups are read only when a writer maintains them (see _dash); else the wide rollups
_FLOORS = "SELECT (SELECT MIN(bucket) FROM rollup_minute), (SELECT MIN(bucket) FROM rollup_hour)"
_HAS_DASH = "SELECT COUNT(*) FROM meta WHERE key = 'dash_rollups'"  # set by the writer that maintains them
_HAS_DASH_ALL = "SELECT COUNT(*) FROM meta WHERE key = 'dash_all'"
_log = logging.getLogger("spendtrace.storage")


def resolve_path(db_path: str | os.PathLike[str] | None) -> str:
    """``db_path``, or the process default (``configure(db=...)``, ``SPENDTRACE_DB``, ``cost_data.db``)."""
    return os.fspath(db_path) if db_path is not None else default_db_path()


def flush_local(path: str) -> None:
    """Make spans recorded in this process by the local exporter visible (a no-op without one)."""
    try:
        before_read(path)
    except Exception:  # a failed flush must not hide what is already stored
        _log.warning("spendtrace: flushing locally recorded spans to %s failed", path, exc_info=True)


def _rows(cursor: Any, fetched: list[Any]) -> list[Row]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, r, strict=True)) for r in fetched]


def _now_ns(now: TimeLike) -> int:
    ns = to_ns(now, what="now")
    return time.time_ns() if ns is None else ns


def _limit(rows: list[Row], limit: int | None) -> list[Row]:
    return rows if limit is None else rows[: max(int(limit), 0)]


class SQLiteStorage:
    """Read (and restate, and set retention on) a spendtrace database with ``sqlite3``.

    ``SQLiteStorage("cost_data.db")`` creates the file with the current schema when missing.
    Every aggregate takes the same optional filters: ``start`` (inclusive) and ``end``
    (exclusive) as 'YYYY-MM-DD', an ISO datetime, a ``datetime`` (naive = UTC) or epoch ns, and
    ``feature``, ``user_id``, ``endpoint``, ``service`` names (always bound as SQL parameters).
    Thread-safe: calls are serialised on the instance's connection.
    """

    def __init__(self, db_path: str | os.PathLike[str] | None = None, *, readonly: bool = False) -> None:
        self.db_path = resolve_path(db_path)
        self.url = f"sqlite:///{os.path.abspath(self.db_path)}"
        self._conn: sqlite3.Connection = connect(self.db_path, readonly=readonly, check_same_thread=False)
        self._lock = threading.Lock()
        self._dash = bool(self._conn.execute(_HAS_DASH).fetchone()[0])
        self._dash_all = False

    # -- plumbing --------------------------------------------------------------------------------
    def run(self, query: Query[T]) -> T:
        """Run a prepared query inside one read snapshot and shape its rows."""
        flush_local(self.db_path)
        results: list[list[Row]] = []
        with self._lock:
            snapshot = len(query.steps) > 1 and not self._conn.in_transaction
            if snapshot:
                self._conn.execute("BEGIN")
            try:
                for sql, params in query.steps:
                    cur = self._conn.execute(sql, params)
                    results.append(_rows(cur, cur.fetchall()))
            finally:
                if snapshot:
                    self._conn.execute("COMMIT")
        return query.post(results)

    def _dash_now(self) -> bool:
        """Whether the dashboard rollups are maintained (checked again until they are: a new file gets them)."""
        if not self._dash:
            with self._lock:
                self._dash = bool(self._conn.execute(_HAS_DASH).fetchone()[0])
        return self._dash

    def _dash_all_now(self) -> bool:
        """Whether ``dash_all`` (the dashboard rollups over every day) is filled in this file (checked until it is)."""
        if not self._dash_all:
            with self._lock:
                self._dash_all = bool(self._conn.execute(_HAS_DASH_ALL).fetchone()[0])
        return self._dash_all

    def _rollup_filters(self, start: TimeLike, end: TimeLike, *names: str | None) -> Filters:
        """Filters for a rollup query, time bounds rounded where the finer rollups have aged out."""
        f = Filters.of(start, end, *names)
        if f.start_ns is None and f.end_ns is None:
            return f
        with self._lock:
            minute_floor, hour_floor = self._conn.execute(_FLOORS).fetchone()
        return coarsen(f, minute_floor, hour_floor)

    def data_version(self) -> int:
        """A number that changes whenever another connection commits (``PRAGMA data_version``): a cheap change check."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def change_token(self) -> int:
        """The storage interface's change check: SQLite's ``data_version`` of this connection."""
        return self.data_version()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- dashboards (rollups) --------------------------------------------------------------------
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
        """Spend per feature, most expensive first: ``total_cost``, ``service_costs``, ``transaction_count`` (spans)."""
        f = self._rollup_filters(start, end, feature, user_id, endpoint, service)
        if limit is not None and f == Filters() and self._dash_all_now():  # the top of all time: an index walk
            return self.run(q.aggregate_top_all_time("feature", max(int(limit), 0)))
        return _limit(self.run(q.aggregate("feature", f, dash=self._dash_now())), limit)

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
        """Spend per user / tenant (``''`` = none), most expensive first; ``transaction_count`` counts requests."""
        f = self._rollup_filters(start, end, feature, user_id, endpoint, service)
        if limit is not None and f == Filters() and self._dash_all_now():  # the top of all time: an index walk
            return self.run(q.aggregate_top_all_time("user_id", max(int(limit), 0)))
        return _limit(self.run(q.aggregate("user_id", f, dash=self._dash_now())), limit)

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
        """Spend per endpoint (``''`` = none), most expensive first; ``transaction_count`` counts requests."""
        f = self._rollup_filters(start, end, feature, user_id, endpoint, service)
        if limit is not None and f == Filters() and self._dash_all_now():  # the top of all time: an index walk
            return self.run(q.aggregate_top_all_time("endpoint", max(int(limit), 0)))
        return _limit(self.run(q.aggregate("endpoint", f, dash=self._dash_now())), limit)

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
        """Spend per service (``dynamodb``, ``bedrock``, ``lambda`` ...), most expensive first."""
        f = self._rollup_filters(start, end, feature, user_id, endpoint, service)
        return _limit(self.run(q.aggregate_by_service(f, dash=self._dash_now())), limit)

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
        """Direct vs fully-loaded (everything it triggered downstream) cost per feature."""
        f = self._rollup_filters(start, end, feature, user_id, endpoint)
        return _limit(self.run(q.feature_breakdown(f, dash=self._dash_now())), limit)

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
        f = self._rollup_filters(start, end, feature, user_id, endpoint, service)
        return self.run(q.total(f, dash=self._dash_now(), dash_all=f == Filters() and self._dash_all_now()))

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
        return self.run(q.cost_trend(f, int(days), _now_ns(now), dash=self._dash_now()))

    def cost_trend_by_feature(self, days: int = 30, *, now: TimeLike = None) -> list[Row]:
        """Per feature (largest first) its daily cost points for the last ``days`` days, for charts."""
        return self.run(q.cost_trend_by_feature(int(days), _now_ns(now), dash=self._dash_now()))

    # -- live views ------------------------------------------------------------------------------
    def feature_timeseries(self, minutes: int = 60, now_ns: int | None = None) -> dict[str, list[float]]:
        """{feature: USD per minute, oldest first} for the last ``minutes`` minutes, for sparklines."""
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
        return self.run(q.ingest_stats(_now_ns(now_ns), dash=self._dash_now()))

    def dead_letters(self, limit: int = 50) -> list[Row]:
        """The newest dead letters, with their reason."""
        return self.run(raw.dead_letters(limit))

    def unpriced_usage(self) -> list[Row]:
        """Usage no price covered, per key / service / feature."""
        return self.run(raw.unpriced_usage())

    def store_metric_values(self, top: int = 50) -> Row:
        """The numbers behind the store's Prometheus metrics (``spendtrace.server.metrics``), in one snapshot.

        Per-feature spend for the ``top`` costliest features only, the rest summed in ``features_other_nano``.
        """
        from spendtrace.server.store.sqlite._metrics import HAS_DASH_ALL, store_metric_values

        with self._lock:  # once there, dash_all stays (writers keep it), but a file may get it later
            dash_all = bool(self._conn.execute(HAS_DASH_ALL).fetchone()[0])
        return self.run(store_metric_values(max(0, int(top)), dash_all=dash_all))

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
        """Cost per request: newest first, or most expensive first with ``order='cost'``."""
        f = Filters.of(start, end, feature, user_id, endpoint)
        return self.run(raw.request_costs(f, limit, order, offset))

    def get_request_subtree(self, request_id: str) -> list[Row]:
        """The request's spans as a tree in depth-first order, with ``depth``, ``direct_cost``, ``subtree_cost``."""
        return self.run(raw.subtree(request_id=request_id))

    def get_transaction_subtree(self, span_id: str) -> list[Row]:
        """The subtree rooted at one span, in depth-first order (depth 0 at that span)."""
        return self.run(raw.subtree(span_id=span_id))

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
        """Raw spans newest first (stable order for paging with ``limit``/``offset``), exact time filters."""
        f = Filters.of(start, end, feature, user_id, endpoint, service)
        return self.run(raw.transactions(f, limit, offset, request_id))

    # -- maintenance (delegated to the storage writers) ------------------------------------------
    def set_retention(self, **kwargs: Any) -> Any:
        """Set how long data is kept: ``raw_data_days``, ``hourly_rollups_days``, ``daily_rollups_days``."""
        from spendtrace.server.store.sqlite import _retention

        with self._lock:
            return _retention.set_retention(self._conn, **kwargs)

    def apply_retention(self, **kwargs: Any) -> Any:
        """Delete what the retention settings say is too old (the workers do this on their own)."""
        from spendtrace.server.store.sqlite import _retention

        with self._lock:
            return _retention.apply_retention(self._conn, **kwargs)

    def restate_historical_costs(self, factor: float | None = None, **kwargs: Any) -> Any:
        """Multiply stored costs in a date range by ``factor`` (or per-service ``factors``), atomically and undoably."""
        from spendtrace.server.store.sqlite import _restate

        with self._lock:
            return _restate.restate_historical_costs(self._conn, factor=factor, **kwargs)

    def undo_restatement(self, restatement_id: int) -> Any:
        """Restore every value a restatement changed."""
        from spendtrace.server.store.sqlite import _reprice, _restate

        with self._lock:
            return _restate.undo_restatement(self._conn, restatement_id, undo_reprice=_reprice.undo_reprice)

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
        """Price the stored usage of ``[start_date, end_date)`` (UTC days) again from ``book``, in one transaction.

        ``book`` defaults to ``current_book()`` (the default book with in-process overrides). Recorded
        as a restatement of kind ``reprice`` (undo it with ``undo_restatement``); ``dry_run`` changes nothing.
        """
        from spendtrace.server.pricing import current_book
        from spendtrace.server.store.sqlite import _reprice

        if not dry_run:
            flush_local(self.db_path)
        with self._lock:
            return _reprice.reprice(
                self._conn, book or current_book(), start_date=start_date, end_date=end_date, features=features,
                dry_run=dry_run, who=who, why=why,
            )  # fmt: skip


class AsyncStorage:
    """The queries of ``SQLiteStorage`` for asyncio code (TUI, workers), on one ``aiosqlite`` connection.

    Needs the ``consumer`` or ``tui`` extra. Use ``async with AsyncStorage(path) as s:`` or call
    ``close()``; the connection opens on first use.
    """

    def __init__(self, db_path: str | os.PathLike[str] | None = None, *, readonly: bool = False) -> None:
        self.db_path = resolve_path(db_path)
        self.url = f"sqlite:///{os.path.abspath(self.db_path)}"
        self._readonly = readonly
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._dash = False

    async def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            self._conn = await connect_async(self.db_path, readonly=self._readonly)
        if not self._dash:  # checked again until a writer maintains them (a new file gets them)
            async with self._conn.execute(_HAS_DASH) as cur:
                row = await cur.fetchone()
            self._dash = bool(row and row[0])
        return self._conn

    async def _build(self, build: Callable[..., Query[T]], f: Filters | None = None) -> T:
        """Build the query once the file is open (it decides between dashboard and wide rollups), then run it.

        ``build(dash)``, or ``build(dash, f)`` with ``f``'s time bounds rounded where the finer rollups
        have aged out (see ``SQLiteStorage._rollup_filters``).
        """
        async with self._lock:
            conn = await self._connection()
            if f is None:
                query = build(self._dash)
            else:
                if f.start_ns is not None or f.end_ns is not None:
                    async with conn.execute(_FLOORS) as cur:
                        floors = await cur.fetchone()
                    f = coarsen(f, *(floors or (None, None)))
                query = build(self._dash, f)
        return await self.run(query)

    async def run(self, query: Query[T]) -> T:
        """Run a prepared query inside one read snapshot and shape its rows."""
        await asyncio.to_thread(flush_local, self.db_path)
        results: list[list[Row]] = []
        async with self._lock:
            conn = await self._connection()
            snapshot = len(query.steps) > 1 and not conn.in_transaction
            if snapshot:
                await conn.execute("BEGIN")
            try:
                for sql, params in query.steps:
                    async with conn.execute(sql, params) as cur:
                        results.append(_rows(cur, list(await cur.fetchall())))
            finally:
                if snapshot:
                    await conn.execute("COMMIT")
        return query.post(results)

    async def data_version(self) -> int:
        """``PRAGMA data_version`` of this connection: changes whenever another connection commits."""
        async with self._lock:
            conn = await self._connection()
            async with conn.execute("PRAGMA data_version") as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def change_token(self) -> int:
        """The storage interface's change check: SQLite's ``data_version`` of this connection."""
        return await self.data_version()

    async def close(self) -> None:
        """Close the connection (if it was opened)."""
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def __aenter__(self) -> AsyncStorage:
        await self._connection()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def aggregate_by_feature(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``SQLiteStorage.aggregate_by_feature``; ``names`` are ``feature``, ``user_id``, ``endpoint``, ``service``."""
        return _limit(
            await self._build(lambda dash, f: q.aggregate("feature", f, dash=dash), Filters.of(start, end, **names)),
            limit,
        )

    async def aggregate_by_user(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``SQLiteStorage.aggregate_by_user``."""
        return _limit(
            await self._build(lambda dash, f: q.aggregate("user_id", f, dash=dash), Filters.of(start, end, **names)),
            limit,
        )

    async def aggregate_by_endpoint(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``SQLiteStorage.aggregate_by_endpoint``."""
        return _limit(
            await self._build(lambda dash, f: q.aggregate("endpoint", f, dash=dash), Filters.of(start, end, **names)),
            limit,
        )

    async def aggregate_by_service(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``SQLiteStorage.aggregate_by_service``."""
        return _limit(
            await self._build(lambda dash, f: q.aggregate_by_service(f, dash=dash), Filters.of(start, end, **names)),
            limit,
        )

    async def get_feature_cost_breakdown(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]:
        """``SQLiteStorage.get_feature_cost_breakdown``."""
        return _limit(
            await self._build(lambda dash, f: q.feature_breakdown(f, dash=dash), Filters.of(start, end, **names)), limit
        )

    async def total(self, start: TimeLike = None, end: TimeLike = None, **names: str | None) -> Row:
        """``SQLiteStorage.total``."""
        return await self._build(lambda dash, f: q.total(f, dash=dash), Filters.of(start, end, **names))

    async def get_cost_trend(
        self, feature: str | None = None, days: int = 30, *, now: TimeLike = None, **names: str | None
    ) -> list[Row]:
        """``SQLiteStorage.get_cost_trend``."""
        return await self._build(
            lambda dash: q.cost_trend(Filters.of(None, None, feature, **names), int(days), _now_ns(now), dash=dash)
        )

    async def cost_trend_by_feature(self, days: int = 30, *, now: TimeLike = None) -> list[Row]:
        """``SQLiteStorage.cost_trend_by_feature``."""
        return await self._build(lambda dash: q.cost_trend_by_feature(int(days), _now_ns(now), dash=dash))

    async def feature_timeseries(self, minutes: int = 60, now_ns: int | None = None) -> dict[str, list[float]]:
        """``SQLiteStorage.feature_timeseries``."""
        return await self.run(q.feature_timeseries(int(minutes), _now_ns(now_ns)))

    async def spend_rate(self, minutes: int = 5, now_ns: int | None = None, **names: str | None) -> Row:
        """``SQLiteStorage.spend_rate``."""
        return await self.run(q.spend_rate(Filters.of(**names), int(minutes), _now_ns(now_ns)))

    async def ingest_stats(self, now_ns: int | None = None) -> Row:
        """``SQLiteStorage.ingest_stats``."""
        return await self._build(lambda dash: q.ingest_stats(_now_ns(now_ns), dash=dash))

    async def dead_letters(self, limit: int = 50) -> list[Row]:
        """``SQLiteStorage.dead_letters``."""
        return await self.run(raw.dead_letters(limit))

    async def unpriced_usage(self) -> list[Row]:
        """``SQLiteStorage.unpriced_usage``."""
        return await self.run(raw.unpriced_usage())

    async def get_request_cost(
        self,
        limit: int = 20,
        order: str = "recent",
        *,
        start: TimeLike = None,
        end: TimeLike = None,
        offset: int = 0,
        **names: str | None,
    ) -> list[Row]:
        """``SQLiteStorage.get_request_cost``."""
        return await self.run(raw.request_costs(Filters.of(start, end, **names), limit, order, offset))

    async def get_request_subtree(self, request_id: str) -> list[Row]:
        """``SQLiteStorage.get_request_subtree``."""
        return await self.run(raw.subtree(request_id=request_id))

    async def get_transaction_subtree(self, span_id: str) -> list[Row]:
        """``SQLiteStorage.get_transaction_subtree``."""
        return await self.run(raw.subtree(span_id=span_id))

    async def transactions(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        request_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        **names: str | None,
    ) -> list[Row]:
        """``SQLiteStorage.transactions``."""
        return await self.run(raw.transactions(Filters.of(start, end, **names), limit, offset, request_id))
