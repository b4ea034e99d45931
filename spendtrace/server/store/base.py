"""The storage interface, split by role, and ``open_store(url)``.

Operations, never SQL: a backend is a package under ``spendtrace/server/store/`` (``sqlite`` today)
and the only place where a database driver or SQL text appears. Apps (workers, TUI, HTTP API,
CLI) use these protocols and ``open_store``; they never import a backend module.

Roles:

- ``ReadStore`` / ``AsyncReadStore``: every query the TUI, API, CLI and the Python API read.
- ``IngestStore``: what the workers write (see the effectively-once contract below).
- ``AdminStore``: retention, restatement and its undo.

The effectively-once contract, which every backend states how it keeps:

1. A batch is identified by the records it came from: (group, topic, partition, first offset,
   last offset) for each partition it covers. Applying a batch stores its spans, every rollup
   delta of the spans that were new, and the offsets reached; it is applied at most once, and a
   batch replayed after a crash (re-formed from the same records) is recognised and not counted
   again. Spans are idempotent on ``span_id`` across batches too.
2. ``stored_offsets`` is the truth a worker resumes from: on start and on every rebalance it seeks
   each partition to the offset stored with the last applied batch, then commits to Kafka only
   after the store has applied the batch. A crash at any point loses nothing and counts nothing
   twice.
3. SQLite keeps this with one transaction per batch (spans, rollups and offsets together). A
   backend without multi-table transactions (ClickHouse) keeps it with a deduplication token per
   batch derived from 1., on the spans table and every materialized view's target, and by
   re-forming batches identically after a crash from the offsets it stored.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from spendtrace.errors import ConfigError
from spendtrace.server.model import Row, TimeLike

if TYPE_CHECKING:
    from spendtrace.server.model.ingest import (
        DeadLetter,
        PartitionOffsets,
        PreparedBatch,
        RetentionProgress,
        StagedBatch,
        WriteResult,
    )

__all__ = [
    "BACKENDS",
    "AdminStore",
    "AsyncIngestStore",
    "AsyncReadStore",
    "IngestStore",
    "ReadStore",
    "Store",
    "StoreURL",
    "open_ingest_store",
    "open_ingest_store_async",
    "open_store",
    "open_store_async",
    "parse_store_url",
]


@runtime_checkable
class ReadStore(Protocol):
    """Every dashboard and detail query, synchronous (CLI, HTTP API, Python API).

    Aggregates take ``start`` (inclusive) and ``end`` (exclusive) and the names ``feature``,
    ``user_id``, ``endpoint``, ``service`` as filters; names are user data and always bound as
    parameters. Money comes back as exact ``*_nano`` integers beside USD floats; usage no price
    covered is counted in ``unpriced_count``, never shown as $0.
    """

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
    ) -> list[Row]: ...

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
    ) -> list[Row]: ...

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
    ) -> list[Row]: ...

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
    ) -> list[Row]: ...

    def get_feature_cost_breakdown(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        limit: int | None = None,
    ) -> list[Row]: ...

    def total(
        self,
        start: TimeLike = None,
        end: TimeLike = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
    ) -> Row: ...

    def get_cost_trend(
        self,
        feature: str | None = None,
        days: int = 30,
        *,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
        now: TimeLike = None,
    ) -> list[Row]: ...

    def cost_trend_by_feature(self, days: int = 30, *, now: TimeLike = None) -> list[Row]: ...

    def feature_timeseries(self, minutes: int = 60, now_ns: int | None = None) -> dict[str, list[float]]: ...

    def spend_rate(
        self,
        minutes: int = 5,
        now_ns: int | None = None,
        *,
        feature: str | None = None,
        user_id: str | None = None,
        endpoint: str | None = None,
        service: str | None = None,
    ) -> Row: ...

    def ingest_stats(self, now_ns: int | None = None) -> Row: ...

    def dead_letters(self, limit: int = 50) -> list[Row]: ...

    def unpriced_usage(self) -> list[Row]: ...

    def store_metric_values(self) -> Row:
        """Stored spend for ``/metrics``: ``cost_nano``, ``spans``, ``unpriced``, ``dead_letters``, ``alerts_fired``,
        ``webhook_failures`` (ints) and ``features`` / ``services``: ``[(name, cost_nano)]`` sorted by name."""
        ...

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
    ) -> list[Row]: ...

    def get_request_subtree(self, request_id: str) -> list[Row]: ...

    def get_transaction_subtree(self, span_id: str) -> list[Row]: ...

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
    ) -> list[Row]: ...

    def change_token(self) -> int:
        """A value that differs after another writer commits: readers refresh only when it moved."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncReadStore(Protocol):
    """The queries of ``ReadStore`` for asyncio code (the TUI, the workers); same names, awaited."""

    async def aggregate_by_feature(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]: ...

    async def aggregate_by_user(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]: ...

    async def aggregate_by_endpoint(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]: ...

    async def aggregate_by_service(
        self, start: TimeLike = None, end: TimeLike = None, *, limit: int | None = None, **names: str | None
    ) -> list[Row]: ...

    async def total(self, start: TimeLike = None, end: TimeLike = None, **names: str | None) -> Row: ...

    async def get_request_subtree(self, request_id: str) -> list[Row]: ...

    async def change_token(self) -> int: ...

    async def close(self) -> None: ...


@runtime_checkable
class AdminStore(Protocol):
    """Retention, restatement and undo: the operations that change what is already stored."""

    def set_retention(self, **kwargs: Any) -> Any: ...

    def apply_retention(self, **kwargs: Any) -> Any: ...

    def restate_historical_costs(self, factor: float | None = None, **kwargs: Any) -> Any: ...

    def undo_restatement(self, restatement_id: int) -> Any: ...


@runtime_checkable
class Store(ReadStore, AdminStore, Protocol):
    """What ``open_store`` returns: the reads and the admin operations of one database."""

    url: str


class StoreURL:
    """A parsed store URL: ``scheme`` (the backend) and what the backend needs to open it."""

    __slots__ = ("path", "raw", "scheme")

    def __init__(self, scheme: str, path: str, raw: str) -> None:
        self.scheme = scheme
        self.path = path
        self.raw = raw

    def __repr__(self) -> str:
        return f"StoreURL({self.scheme!r}, {self.path!r})"


#: Backends by URL scheme ("module:attribute" of an opener taking a ``StoreURL``), found by name so
#: this module imports no driver and apps never import a backend.
BACKENDS: dict[str, tuple[str, str]] = {
    "sqlite": ("spendtrace.server.store.sqlite", "open_sqlite"),
}


def parse_store_url(url: str | os.PathLike[str]) -> StoreURL:
    """``sqlite:///abs/path.db``, ``sqlite://relative.db`` or a bare path (the SQLite shorthand)."""
    raw = os.fspath(url)
    if "://" not in raw:
        if not raw:
            raise ConfigError("store URL is empty")
        return StoreURL("sqlite", raw, raw)
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in BACKENDS:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise ConfigError(f"unknown store URL scheme {parts.scheme!r} (known: {known}, or a bare SQLite path)")
    if scheme == "sqlite":
        # sqlite:///abs/path -> /abs/path; sqlite://rel/path -> rel/path (netloc + path)
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ConfigError(f"store URL {raw!r} names no database file")
        return StoreURL("sqlite", path, raw)
    return StoreURL(scheme, unquote(parts.netloc + parts.path), raw)


def _opener(scheme: str, suffix: str = "") -> Any:
    module, attr = BACKENDS[scheme]
    return getattr(importlib.import_module(module), attr + suffix)


def open_store(url: str | os.PathLike[str], *, readonly: bool = False) -> Store:
    """Open the store at ``url`` for reading (and admin operations); the same query object for any backend."""
    parsed = parse_store_url(url)
    store: Store = _opener(parsed.scheme)(parsed, readonly=readonly)
    return store


def open_store_async(url: str | os.PathLike[str], *, readonly: bool = False) -> AsyncReadStore:
    """The asyncio variant of ``open_store``: the same queries, awaited."""
    parsed = parse_store_url(url)
    store: AsyncReadStore = _opener(parsed.scheme, "_async")(parsed, readonly=readonly)
    return store


# ================================================================================================
# IngestStore / AsyncIngestStore: what the workers (and the local exporter) write.
# The operations of the effectively-once contract above; a backend implements both, and opens
# them by URL below (its opener "<name>_ingest" / "<name>_ingest_async" beside "<name>").
# ================================================================================================


@runtime_checkable
class IngestStore(Protocol):
    """The write side of ingestion, synchronous (the local exporter, tools, tests).

    ``apply_batch`` is the effectively-once operation: the prepared batch, the offsets it reaches
    and its dead letters are applied together or not at all. ``StoreBusyError`` from any operation
    means another writer held the store and nothing was written: try again later.
    """

    def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        """partition -> next offset to consume, as applied with the last batch of ``group`` (contract 2.)."""
        ...

    def apply_batch(
        self,
        batch: PreparedBatch,
        offsets: Sequence[PartitionOffsets] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> WriteResult:
        """Store ``batch`` with the offsets it reaches and its dead letters, at most once (contract 1.).

        Spans already stored (a replay, a duplicate) are counted in ``duplicate_spans`` and add no delta.
        """
        ...

    def retention_chunk(self, now_ns: int, limit: int) -> RetentionProgress:
        """Delete up to about ``limit`` rows the stored retention policy calls aged, in one short step.

        Run between batches until ``done``; every chunk leaves rollups and dashboards consistent.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncIngestStore(Protocol):
    """The write side of ingestion for asyncio workers: a batch is staged off the loop, then applied awaited.

    ``stage_batch`` is CPU work only (a backend encodes the batch for its writer there); the worker
    calls it in its pricing thread, so the event loop only waits for the store.
    """

    async def stored_offsets(self, group: str, topic: str) -> dict[int, int]:
        """``IngestStore.stored_offsets``: where a worker seeks each partition it is assigned."""
        ...

    def stage_batch(
        self,
        batch: PreparedBatch,
        offsets: Sequence[PartitionOffsets] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> StagedBatch:
        """Make ``batch`` (with its offsets and dead letters) ready to apply; no I/O, safe in any thread."""
        ...

    async def apply_batch(self, staged: StagedBatch) -> WriteResult:
        """``IngestStore.apply_batch`` for a staged batch: applied at most once, replays recognised."""
        ...

    async def retention_chunk(self, now_ns: int, limit: int) -> RetentionProgress:
        """``IngestStore.retention_chunk``."""
        ...

    async def close(self) -> None: ...


def open_ingest_store(url: str | os.PathLike[str], *, readonly: bool = False) -> IngestStore:
    """The ingest operations of the store at ``url`` (``readonly``: ``stored_offsets`` only, nothing created)."""
    parsed = parse_store_url(url)
    store: IngestStore = _opener(parsed.scheme, "_ingest")(parsed, readonly=readonly)
    return store


async def open_ingest_store_async(url: str | os.PathLike[str]) -> AsyncIngestStore:
    """The ingest operations for a worker: opened (created or migrated) and ready when this returns."""
    parsed = parse_store_url(url)
    store: AsyncIngestStore = await _opener(parsed.scheme, "_ingest_async")(parsed)
    return store
