"""The storage interface, split by role, and ``open_store(url)``.

Operations, never SQL: a backend is a package under ``spendtrace/server/store/`` (``sqlite``, the
embedded default; ``clickhouse``, for chDB and servers) and the only place where a database driver
or SQL text appears. Apps (workers, TUI, HTTP API, CLI) use these protocols and the openers; they
never import a backend module. Each opener finds the backend by URL scheme in ``BACKENDS``.

Roles:

- ``ReadStore`` / ``AsyncReadStore``: every query the API, CLI and the Python API read
  (``open_store`` / ``open_store_async``).
- ``DashboardReads``: the TUI's live snapshots and its change token (``open_dashboard``).
- ``IngestStore`` / ``AsyncIngestStore``: what the workers write (``open_ingest_store``; see the
  effectively-once contract below).
- ``AdminStore``: retention, restatement, repricing and their undo.
- ``AlertStore``: alert rules, their firing state, fired events and webhook deliveries
  (``open_alert_store``); it states how "one firing per cooldown" is kept.
- ``ReconcileStore``: modelled spend for the bill, the Cost Explorer cache and saved reports
  (``open_reconcile_store``).

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
   re-forming batches identically after a crash (4.).
4. Re-forming (a store with ``atomic_batches = False``; the ClickHouse Kafka Connect sink's
   per-partition BEFORE / AFTER states). Before writing anything of a batch, the store records the
   range of every partition it covers (``PartitionOffsets``: begun); the offsets stored after the
   rest mark it done. ``unconfirmed_ranges`` returns the ranges begun and not done: a batch that
   may be partly applied. A worker writing to such a store applies each partition's share of its
   records as a batch of its own (so a batch never depends on which partitions a worker owns), and
   when it is assigned a partition with an unconfirmed range, it seeks to the range's first offset
   and forms its next batch of that partition from exactly the records of that range, no more, no
   fewer: the same identity, so the same token, and the replay completes whatever tables the first
   attempt did not reach. Nothing is decided by the workers among themselves: a partition has one
   owner at a time (Kafka's group protocol), and the store's record of the range is the only
   state. An atomic store (SQLite) never has unconfirmed ranges.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from spendtrace.errors import ConfigError
from spendtrace.server.model import Row, TimeLike
from spendtrace.server.model.alerts import AlertEvent, AlertRule, Grain
from spendtrace.settings import default_db_path

if TYPE_CHECKING:
    from datetime import date

    from spendtrace.server.model.dashboard import (
        AlertEventRow,
        AlertRuleRow,
        DeadLetterLine,
        DimSnapshot,
        Overview,
        RequestRow,
        TreeNode,
        TrendSnapshot,
        UnpricedLine,
    )
    from spendtrace.server.model.reprice import RepriceResult
    from spendtrace.server.pricing import PriceBook

if TYPE_CHECKING:
    from spendtrace.server.model.ingest import (
        DeadLetter,
        PartitionOffsets,
        PreparedBatch,
        RetentionFacts,
        RetentionProgress,
        StagedBatch,
        WriteResult,
    )

__all__ = [
    "BACKENDS",
    "AdminStore",
    "AlertStore",
    "AsyncIngestStore",
    "AsyncReadStore",
    "IngestStore",
    "ReadStore",
    "Store",
    "StoreURL",
    "open_alert_store",
    "open_ingest_store",
    "open_ingest_store_async",
    "open_store",
    "open_store_async",
    "parse_store_url",
    "resolve_store_url",
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

    def store_metric_values(self, top: int = 50) -> Row:
        """Stored spend for ``/metrics``: ``cost_nano``, ``spans``, ``unpriced``, ``dead_letters``, ``alerts_fired``,
        ``webhook_failures`` (ints), ``features``: ``[(name, cost_nano)]`` of the ``top`` costliest features
        (ties by name) sorted by name, ``features_other_nano``: the spend of every other feature, and
        ``services``: ``[(name, cost_nano)]`` sorted by name. Bounded: never one row per tenant or feature."""
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
    """Retention, restatement, repricing and undo: the operations that change what is already stored."""

    def set_retention(self, **kwargs: Any) -> Any: ...

    def apply_retention(self, **kwargs: Any) -> Any: ...

    def restate_historical_costs(self, factor: float | None = None, **kwargs: Any) -> Any: ...

    def undo_restatement(self, restatement_id: int) -> Any: ...

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
        """Price the stored usage of ``[start_date, end_date)`` (UTC days) again from ``book``.

        ``book`` defaults to ``current_book()``; ``features`` limits it to spans of those features.
        Every total the changed spans fed (rollups of each grain, fully-loaded, requests, unpriced
        usage, dashboard sums) changes by exactly the spans' change, atomically on SQLite (one
        transaction) and by delta rows on ClickHouse. Recorded as a restatement of kind
        ``reprice`` (who, when, range, features, per-service totals before and after), listed by
        reconciliation reports and taken back by ``undo_restatement``. ``dry_run`` changes nothing.
        """
        ...


# --- AlertStore: alert rules, firing state, events, deliveries ------------------------------------


@runtime_checkable
class AlertStore(Protocol):
    """What alert rules, their evaluation and webhook delivery need from a store (``open_alert_store``).

    Used by ``spendtrace.server.alerts`` (the Python API ``set_alert`` and friends, the evaluator,
    the local exporter's delivery thread), the workers' ``consumers.alerting`` / ``consumers.webhooks``
    and ``spendtrace alerts tail``. Money is integer nano-dollars, times are epoch nanoseconds
    (``*_ns``) or seconds (``*_s``, rollup bucket starts). A database failure raises
    ``StorageError``; a store is safe to share between threads (calls are serialised).

    **One firing per cooldown, however many processes evaluate.** Workers and apps writing locally
    evaluate the same rules against the same store, each with its own connection. ``claim_firing``
    is the only way an event is recorded, and a backend must make its check and its writes one
    atomic step against every other ``claim_firing`` of the same rule: check that the rule is still
    at the version evaluated (``rule.updated_ns``), that ``state_key`` has not fired within
    ``cooldown_ns`` (or ever, with ``cooldown_ns=None``), then record the event (delivery
    ``pending``) and stamp ``state_key`` and ``also_mark`` with ``fired_ns``. Two concurrent claims
    of one crossing must yield exactly one event. SQLite keeps this with one ``BEGIN IMMEDIATE``
    transaction (the write lock is taken before the check). A backend without such transactions
    (ClickHouse) must not emulate it with read-then-insert: it needs a linearisable compare-and-set
    and records the event only after winning it. ClickHouse's is an insert deduplicated by token
    (``clickhouse._claims``): the claim names the firing *after the one the caller read*, so of two
    callers that read the same state one wins, and one that read a stale state loses; there the
    steps after winning (marks, the event) are separate inserts, not one transaction.
    ``last_fired`` is a cheap pre-check outside that step and may be stale; the claim decides.

    Likewise ``claim_delivery`` moves an event from ``pending`` to ``sending`` for exactly one
    caller, so an event is POSTed by one process even when several recover it.
    """

    url: str

    # -- rules --------------------------------------------------------------------------------

    def save_rule(
        self,
        *,
        name: str,
        kind: str,
        scope: str,
        scope_value: str,
        threshold_nano: int | None,
        window_minutes: int | None,
        cooldown_minutes: int,
        params: Mapping[str, object],
        webhook: str | None,
        webhook_format: str,
        now_ns: int,
    ) -> AlertRule:
        """Add the rule, or replace the one of the same ``name`` (keeping its id, enabling it); return it.

        Its ``updated_ns`` is ``now_ns`` or, when that is not newer, one more than the newest stored
        ``updated_ns``, so ``rules_version`` changes on every save.
        """
        ...

    def list_rules(self, *, enabled_only: bool = True) -> list[AlertRule]:
        """The stored rules (only the enabled ones unless told otherwise), ordered by id."""
        ...

    def rules_version(self) -> tuple[int, int]:
        """A cheap fingerprint of the rules, (count, newest ``updated_ns``): changes on add, edit and remove."""
        ...

    def remove_rule(self, name_or_id: str | int) -> bool:
        """Delete a rule (by name, or by id: an int or a string of digits) and its firing state.

        Returns whether it existed. Its past events stay as history.
        """
        ...

    # -- spend, read from the rollups -----------------------------------------------------------

    def spend(
        self, grain: Grain, since_s: int, until_s: int | None = None, *, scope: str, scope_value: str = ""
    ) -> int:
        """Nano-dollars spent by one scope in the ``grain`` rollup buckets starting in [since_s, until_s).

        ``scope`` is ``feature``, ``user``, ``endpoint`` (matching ``scope_value``) or ``total`` (so is
        any other value); span-level totals (what a span cost, whichever services it used).
        ``until_s=None``: no end.
        """
        ...

    def spend_per_value(self, grain: Grain, since_s: int, until_s: int | None = None, *, scope: str) -> dict[str, int]:
        """``spend`` for every value of ``scope`` at once; absent means 0.

        Spans without a value of the scope count under ``""``; ``total`` has the one key ``""``. Rules
        sharing a window and a scope kind read it once per evaluation round.
        """
        ...

    # -- firing -------------------------------------------------------------------------------

    def last_fired(self, rule_id: int, state_keys: Sequence[str]) -> dict[str, int | None]:
        """When each of ``state_keys`` of the rule last fired; keys that never fired are absent."""
        ...

    def claim_firing(
        self,
        rule: AlertRule,
        *,
        state_key: str,
        cooldown_ns: int | None,
        fired_ns: int,
        value_nano: int,
        message: str,
        also_mark: Sequence[str] = (),
    ) -> AlertEvent | None:
        """Record one firing of ``rule`` atomically, as the class docstring says; the event, or None.

        None when the rule was removed or changed since ``rule`` was read, or ``state_key`` fired
        less than ``cooldown_ns`` before ``fired_ns`` (``cooldown_ns=None``: fired at all).
        """
        ...

    # -- events and their delivery ------------------------------------------------------------

    def claim_delivery(self, event_id: int) -> bool:
        """Take a ``pending`` event for delivery (-> ``sending``); False when another caller has it."""
        ...

    def record_delivery(
        self,
        event_id: int,
        *,
        attempt: int | None,
        status: int | None = None,
        error: str | None = None,
        final: str | None = None,
        at_ns: int | None = None,
    ) -> None:
        """Store one delivery attempt (when ``attempt`` is given) and the event's final status (when ``final`` is).

        Both or neither: one atomic write. ``at_ns`` defaults to now.
        """
        ...

    def pending_events(self, before_ns: int, *, limit: int | None = None) -> list[AlertEvent]:
        """Events still ``pending`` that fired before ``before_ns``, oldest first (``kind``, ``state_key`` empty)."""
        ...

    def events_after(self, after_id: int, limit: int = 1000) -> list[AlertEvent]:
        """Events with an id above ``after_id``, in id order, with their ``delivery``: a tail to follow."""
        ...

    def latest_events(self, limit: int = 100) -> list[AlertEvent]:
        """The newest events, newest first, with their ``delivery``."""
        ...

    def last_event_id(self) -> int:
        """The highest event id (0 when none fired yet)."""
        ...

    def count_events(self) -> int:
        """Alert events fired, ever."""
        ...

    def count_failed_deliveries(self) -> int:
        """Webhook delivery attempts that failed (an error, or an HTTP status of 300 or more)."""
        ...

    def close(self) -> None: ...


# --- end of AlertStore -------------------------------------------------------------------------


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
    "chdb": ("spendtrace.server.store.clickhouse", "open_clickhouse"),
    "clickhouse": ("spendtrace.server.store.clickhouse", "open_clickhouse"),
    "clickhouses": ("spendtrace.server.store.clickhouse", "open_clickhouse"),
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


def resolve_store_url(store: str | None = None, db: str | os.PathLike[str] | None = None) -> str:
    """Which store an entry point opens: ``--store URL``, else ``--db PATH`` (the SQLite shorthand),
    else ``$SPENDTRACE_STORE``, else the default SQLite file (``$SPENDTRACE_DB`` or ``cost_data.db``)."""
    if store and db:
        raise ConfigError("give --store URL or --db PATH, not both")
    if store:
        return store
    if db:
        return os.fspath(db)
    return os.environ.get("SPENDTRACE_STORE", "").strip() or default_db_path()


def _opener(scheme: str, suffix: str = "") -> Any:
    module, attr = BACKENDS[scheme]
    return getattr(importlib.import_module(module), attr + suffix)


def open_store(url: str | os.PathLike[str], *, readonly: bool = False) -> Store:
    """Open the store at ``url`` for reading (and admin operations); the same query object for any backend."""
    parsed = parse_store_url(url)
    store: Store = _opener(parsed.scheme)(parsed, readonly=readonly)
    return store


def open_alert_store(url: str | os.PathLike[str], *, readonly: bool = False) -> AlertStore:
    """Open the alert state of the store at ``url`` (the backend's opener named ``<opener>_alerts``)."""
    parsed = parse_store_url(url)
    store: AlertStore = _opener(parsed.scheme, "_alerts")(parsed, readonly=readonly)
    return store


def open_store_async(url: str | os.PathLike[str], *, readonly: bool = False) -> AsyncReadStore:
    """The asyncio variant of ``open_store``: the same queries, awaited."""
    parsed = parse_store_url(url)
    store: AsyncReadStore = _opener(parsed.scheme, "_async")(parsed, readonly=readonly)
    return store


# --- the dashboard's reads (the TUI) -----------------------------------------------------------

__all__ += ["DashboardReads", "open_dashboard"]


@runtime_checkable
class DashboardReads(Protocol):
    """The live dashboard's queries (the TUI), async, returning the snapshots of ``server.model.dashboard``.

    Every figure comes from rollups, so a refresh costs the same however many raw spans are stored;
    only ``request_tree`` reads raw spans, of one request. "Now" (windows, the last hour, today) is
    the opener's ``clock``. A reader polls ``change_token`` and re-queries only when it moved.
    """

    async def open(self) -> DashboardReads:
        """Connect (an absent store opens as an empty one) and return self."""
        ...

    async def close(self) -> None:
        """Release the connections (idempotent)."""
        ...

    async def change_token(self) -> int:
        """A value that differs after another writer commits: refresh only when it moved."""
        ...

    async def overview(self) -> Overview:
        """The header: totals, last hour, spans and their rate since the previous call, what is left out."""
        ...

    async def dimension(
        self, dimension: str, window: str = "all", *, limit: int | None = None, offset: int = 0, search: str = ""
    ) -> DimSnapshot:
        """Spend per ``dimension`` (``DIMENSIONS``) in ``window`` (``WINDOWS``), last-hour rate, sparkline.

        Costliest first (ties by name), one page: ``limit`` values (1..``MAX_PAGE``; None: all) from
        ``offset`` of those whose name contains ``search`` (case folded for ASCII letters; no wildcards).
        The snapshot also carries the window's total and value count, so "others" is exact, and how
        many values matched. A backend reads only the page's values for the per-service, last-hour
        and fully-loaded figures, so a page costs about the same with 100 or 100,000 values.
        """
        ...

    async def requests(
        self, order: str = "recent", limit: int = 200, *, offset: int = 0, search: str = ""
    ) -> list[RequestRow]:
        """The newest (``order="recent"``) or costliest (``"cost"``) requests: ``limit`` (1..1000) from ``offset``.

        ``search`` keeps the requests whose id, endpoint, tenant or root feature contains it (case folded
        for ASCII letters, as ``dimension``), found in the whole store, not only among the newest.
        """
        ...

    async def request_tree(self, request_id: str) -> list[TreeNode]:
        """One request's call tree(s) with subtree costs; empty if the request is unknown."""
        ...

    async def trends(self, days: int = 14, *, limit: int | None = None) -> TrendSnapshot:
        """Daily cost per feature over the last ``days`` UTC days, today included (``limit``: the costliest
        features only, the rest summed per day in ``others``)."""
        ...

    async def alert_rules(self) -> list[AlertRuleRow]:
        """Every alert rule, by name, with its webhook URL masked."""
        ...

    async def alert_events(self, limit: int = 200) -> list[AlertEventRow]:
        """The latest fired alerts, newest first."""
        ...

    async def dead_letters(self, limit: int = 50) -> list[DeadLetterLine]:
        """The latest dead letters, newest first."""
        ...

    async def unpriced(self, limit: int = 50) -> list[UnpricedLine]:
        """Usage no price covered, most items first."""
        ...


def open_dashboard(
    url: str | os.PathLike[str],
    *,
    clock: Callable[[], int] | None = None,
    monotonic: Callable[[], float] | None = None,
) -> DashboardReads:
    """The dashboard reads of the store at ``url`` (call ``await reads.open()`` before the first query).

    ``clock`` is "now" in epoch nanoseconds (default: the wall clock) and ``monotonic`` times the
    ingest rate (default ``time.monotonic``); tests pass fixed ones.
    """
    parsed = parse_store_url(url)
    reads: DashboardReads = _opener(parsed.scheme, "_dashboard")(parsed, clock=clock, monotonic=monotonic)
    return reads


# ================================================================================================
# IngestStore / AsyncIngestStore: what the workers (and the local exporter) write.
# The operations of the effectively-once contract above; a backend implements both, and opens
# them by URL below (its opener "<name>_ingest" / "<name>_ingest_async" beside "<name>").
# ================================================================================================


@runtime_checkable
class IngestStore(Protocol):
    """The write side of ingestion, synchronous (the local exporter, tools, tests).

    ``apply_batch`` is the effectively-once operation: the prepared batch, the offsets it reaches
    and its dead letters are applied together or not at all, or (``atomic_batches`` False) so that
    the same batch applied again completes it (contract 4.). ``StoreBusyError`` from any operation
    means another writer held the store and nothing was written: try again later.
    """

    #: True when a batch is applied in one transaction; False when a half-applied batch is completed
    #: by applying it again, re-formed from exactly the same records (contract 4.)
    atomic_batches: bool
    #: False when the store derives the rollups, fully-loaded and request deltas from the span rows
    #: itself (ClickHouse's materialized views): give it ``prepare_batch(..., deltas=False)``
    needs_deltas: bool

    def unconfirmed_ranges(self, group: str, topic: str) -> dict[int, PartitionOffsets]:
        """partition -> the range of a batch begun and not confirmed by its stored offsets (contract 4.).

        Always empty for an atomic store.
        """
        ...

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

    def retention_facts(self) -> RetentionFacts:
        """The stored policy's raw-span retention and the newest stored span start (two cheap reads).

        A worker dates retention with them (never past the newest span plus a margin, whatever its
        clock says) and refuses spans older than the raw horizon: their stored copy may have been
        deleted, so storing them again could count them twice (``server.ingest.horizon``).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncIngestStore(Protocol):
    """The write side of ingestion for asyncio workers: a batch is staged off the loop, then applied awaited.

    ``stage_batch`` is CPU work only (a backend encodes the batch for its writer there); the worker
    calls it in its pricing thread, so the event loop only waits for the store.
    """

    #: ``IngestStore.atomic_batches``: False asks the worker for one batch per partition (contract 4.)
    atomic_batches: bool
    #: ``IngestStore.needs_deltas``: False lets the worker prepare batches without the Python deltas
    needs_deltas: bool

    async def unconfirmed_ranges(self, group: str, topic: str) -> dict[int, PartitionOffsets]:
        """``IngestStore.unconfirmed_ranges``: where a worker must re-form a batch exactly."""
        ...

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

    async def retention_facts(self) -> RetentionFacts:
        """``IngestStore.retention_facts``."""
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


# ================================================================================================
# ReconcileStore: what reconciliation with the AWS bill reads and records (spendtrace.server.reconcile).
# Opened by URL below (the backend's opener "<name>_reconcile" beside "<name>"). Restatement itself
# is an AdminStore operation; this role only reads the restatements recorded over a range.
# ================================================================================================

if TYPE_CHECKING:
    from spendtrace.server.model.reconcile import CachedPages, ModelledSpend, Restatement

__all__ += ["ReconcileStore", "open_reconcile_store"]


@runtime_checkable
class ReconcileStore(Protocol):
    """What ``reconcile()`` and ``latest_report()`` need from a store (``open_reconcile_store``).

    Money is integer nano-dollars; days are UTC (rollup bucket starts in epoch seconds, dates as
    ``YYYY-MM-DD``); ranges are ``[start, end)``. A database failure raises ``StorageError``. A
    ``readonly`` store answers the reads (``latest_report``, ``cached_pages`` as None when nothing was
    ever cached) and refuses the writes.
    """

    def modelled_spend(self, start_s: int, end_s: int) -> list[ModelledSpend]:
        """Modelled spend per (UTC day, feature, service): the per-service day rollups in [start_s, end_s).

        Only rows with a service (spend a usage item was priced for); one read, so per-day and
        per-feature sums of one report always agree. Order is unspecified.
        """
        ...

    def restatements_between(self, start: str, end: str) -> list[Restatement]:
        """Restatements whose date range overlaps ``[start, end)`` (undone ones too, with ``undone_ns``), by id."""
        ...

    def cached_pages(self, start: str, end: str, group_by: str) -> CachedPages | None:
        """The Cost Explorer response last cached for this range and grouping, or None.

        Whether a copy is still good (settled, or young enough) is the caller's decision.
        """
        ...

    def cache_pages(
        self, start: str, end: str, group_by: str, pages: Sequence[Mapping[str, Any]], *, fetched_ns: int
    ) -> None:
        """Cache ``pages`` for this range and grouping, replacing any copy (values JSON cannot hold: as ``str``)."""
        ...

    def save_report(self, report: Mapping[str, Any]) -> int:
        """Record a reconciliation report (JSON-ready, with ``created_ns``, ``start``, ``end``); return its new id.

        The stored copy is ``report`` with ``"id"`` set to that id, written in one step: a reader
        never sees a report without its content.
        """
        ...

    def latest_report(self) -> dict[str, Any] | None:
        """The report saved last (the highest id), as ``save_report`` stored it, or None."""
        ...

    def close(self) -> None: ...


def open_reconcile_store(url: str | os.PathLike[str], *, readonly: bool = False) -> ReconcileStore:
    """The reconciliation records of the store at ``url`` (``readonly``: an existing store, reads only)."""
    parsed = parse_store_url(url)
    store: ReconcileStore = _opener(parsed.scheme, "_reconcile")(parsed, readonly=readonly)
    return store


# --- end of ReconcileStore ---------------------------------------------------------------------
