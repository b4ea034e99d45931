"""The ingest interface's effectively-once contract, written against ``IngestStore`` / ``AsyncIngestStore`` only.

Parametrised by store: each backend of ``store_backends.BACKENDS`` (SQLite, chDB) through both
protocols (SQLite's asyncio store runs its writer process); totals are read back through
``ReadStore``. A new backend adds itself to ``BACKENDS`` and ``STORES`` and must pass unchanged.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from independent_pricing import cost_nano
from store_backends import BACKENDS

from consumers.testing import make_spans
from spendtrace.errors import StoreBusyError
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.model.ingest import DeadLetter, PartitionOffsets, PreparedBatch, WriteResult
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import (
    AsyncIngestStore,
    IngestStore,
    open_ingest_store,
    open_ingest_store_async,
    open_store,
)

BOOK = PriceBook.default()
DAY_NS = 86_400 * 10**9


class Ingest:
    """One face for both protocols in these tests: every call awaited."""

    def __init__(self, store: IngestStore | AsyncIngestStore, url: str) -> None:
        self.store = store
        self.url = url

    async def apply(
        self, batch: PreparedBatch, offsets: Sequence[PartitionOffsets] = (), dead: Sequence[DeadLetter] = ()
    ) -> WriteResult:
        if isinstance(self.store, AsyncIngestStore):
            return await self.store.apply_batch(self.store.stage_batch(batch, offsets, dead))
        return self.store.apply_batch(batch, offsets, dead)

    async def offsets(self, group: str, topic: str) -> dict[int, int]:
        got = self.store.stored_offsets(group, topic)
        return await got if isinstance(self.store, AsyncIngestStore) else got  # type: ignore[misc, return-value]

    async def unconfirmed(self, group: str, topic: str) -> dict[int, PartitionOffsets]:
        got = self.store.unconfirmed_ranges(group, topic)
        return await got if isinstance(self.store, AsyncIngestStore) else got  # type: ignore[misc, return-value]

    async def retention(self, now_ns: int, limit: int) -> tuple[int, bool]:
        got = self.store.retention_chunk(now_ns, limit)
        return tuple(await got if isinstance(self.store, AsyncIngestStore) else got)  # type: ignore[misc, return-value]


#: each store under test: (backend of ``store_backends.BACKENDS``, whether through ``AsyncIngestStore``)
STORES = {
    "sqlite": ("sqlite", False),
    "sqlite-writer-process": ("sqlite", True),
    "chdb": ("chdb", False),
    "chdb-async": ("chdb", True),
}


@pytest.fixture(params=sorted(STORES))
async def ingest(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ingest]:
    """The store under test, opened by URL through the interface."""
    backend, asynchronous = STORES[request.param]
    url = BACKENDS[backend](tmp_path).url
    if not asynchronous:
        sync = open_ingest_store(url)
        assert isinstance(sync, IngestStore)
        try:
            yield Ingest(sync, url)
        finally:
            sync.close()
    else:
        store = await open_ingest_store_async(url)
        assert isinstance(store, AsyncIngestStore)
        try:
            yield Ingest(store, url)
        finally:
            await store.close()


def _cost(url: str) -> tuple[int, int]:
    """(spans, cost in nano-dollars) as the read interface reports them."""
    reader = open_store(url, readonly=True)
    try:
        t: dict[str, Any] = reader.total()
    finally:
        reader.close()
    return int(t["transaction_count"]), int(t["cost_nano"])


def _raw_spans(url: str) -> int:
    """Raw spans still stored (what retention deletes; the rollups keep the totals)."""
    reader = open_store(url, readonly=True)
    try:
        return len(reader.transactions(limit=100_000))
    finally:
        reader.close()


def _at(partition: int, first: int, nxt: int) -> list[PartitionOffsets]:
    return [PartitionOffsets("g", "t", partition, first, nxt)]


async def test_a_batch_is_applied_with_its_offsets_and_dead_letters(ingest: Ingest) -> None:
    """Spans, rollups, dead letters and the offsets reached are stored together; offsets read back per partition."""
    spans = make_spans(120, seed=1)
    batch = prepare_batch(spans, BOOK)
    dead = DeadLetter("t", 0, 120, b"k", b"\xc1", "undecodable")
    result = await ingest.apply(batch, [*_at(0, 0, 121), *_at(1, 0, 7)], [dead])
    assert (result.new_spans, result.duplicate_spans, result.cost_nano) == (120, 0, cost_nano(spans))
    assert await ingest.offsets("g", "t") == {0: 121, 1: 7}
    assert await ingest.offsets("other", "t") == {}
    assert _cost(ingest.url) == (120, cost_nano(spans))
    reader = open_store(ingest.url, readonly=True)
    try:
        assert [(d["offset"], d["reason"]) for d in reader.dead_letters()] == [(120, "undecodable")]
    finally:
        reader.close()


async def test_a_replayed_batch_counts_nothing_twice(ingest: Ingest) -> None:
    """The same records applied again (a crash before the Kafka commit) add no span and no cost."""
    spans = make_spans(200, seed=2)
    first = await ingest.apply(prepare_batch(spans, BOOK), _at(0, 0, 200))
    again = await ingest.apply(prepare_batch(spans, BOOK), _at(0, 0, 200))
    assert first.cost_nano == cost_nano(spans)
    assert (again.new_spans, again.duplicate_spans, again.cost_nano) == (0, 200, 0)
    assert _cost(ingest.url) == (200, cost_nano(spans))
    assert await ingest.offsets("g", "t") == {0: 200}


async def test_an_overlapping_batch_counts_only_its_new_spans(ingest: Ingest) -> None:
    """Batches re-formed differently after a crash still sum to exactly one application of every span."""
    spans = make_spans(300, seed=3)
    await ingest.apply(prepare_batch(spans[:180], BOOK), _at(0, 0, 180))
    second = await ingest.apply(prepare_batch(spans[90:], BOOK), _at(0, 90, 300))
    assert (second.new_spans, second.duplicate_spans) == (120, 90)
    assert _cost(ingest.url) == (300, cost_nano(spans))
    assert await ingest.offsets("g", "t") == {0: 300}


async def test_retention_chunks_delete_aged_rows_until_done(ingest: Ingest) -> None:
    """Chunks of at most ``limit`` rows, repeated until ``done``, leave only spans younger than the policy."""
    now = time.time_ns()
    await ingest.apply(prepare_batch(make_spans(100, seed=4, start_ns=now - 40 * DAY_NS), BOOK))
    young = prepare_batch(make_spans(50, seed=5, start_ns=now - DAY_NS), BOOK)
    await ingest.apply(young)
    chunks = []
    while True:
        deleted, done = await ingest.retention(now, 30)
        chunks.append(deleted)
        if done:
            break
    assert len(chunks) > 1 and sum(chunks) >= 100
    assert _raw_spans(ingest.url) == 50


def test_a_busy_sqlite_store_raises_store_busy_and_writes_nothing(db_path: Path) -> None:
    """Another writer holding the lock past the wait is ``StoreBusyError`` (retry later), and nothing is stored."""
    store = open_ingest_store(db_path)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        store._conn.execute("PRAGMA busy_timeout = 50")  # type: ignore[attr-defined]  # not 30 s in a test
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusyError):
            store.apply_batch(prepare_batch(make_spans(10, seed=6), BOOK), _at(0, 0, 10))
        with pytest.raises(StoreBusyError):
            store.retention_chunk(time.time_ns(), 10)
        blocker.execute("ROLLBACK")
        assert store.stored_offsets("g", "t") == {}
    finally:
        blocker.close()
        store.close()


async def test_an_applied_batch_leaves_no_unconfirmed_range(ingest: Ingest) -> None:
    """Once ``apply_batch`` returns, its offsets confirm every range it covered: nothing to re-form."""
    assert await ingest.unconfirmed("g", "t") == {}
    await ingest.apply(prepare_batch(make_spans(40, seed=7), BOOK), [*_at(0, 0, 25), *_at(3, 10, 25)])
    assert await ingest.unconfirmed("g", "t") == {}
    assert await ingest.offsets("g", "t") == {0: 25, 3: 25}


def test_a_batch_prepared_without_deltas_has_the_same_rows_totals_and_summary() -> None:
    """``prepare_batch(deltas=False)`` (for stores whose views derive the rollups) leaves out only the deltas."""
    spans = make_spans(600, seed=11)
    spans += spans[:5]  # repeats within the batch are left out either way
    full, rows = prepare_batch(spans, BOOK), prepare_batch(spans, BOOK, deltas=False)
    assert rows.span_values == full.span_values
    assert (rows.cost_nano, rows.unpriced_items, rows.duplicates_in_batch, rows.summary, rows.unpriced) == (
        full.cost_nano,
        full.unpriced_items,
        full.duplicates_in_batch,
        full.summary,
        full.unpriced,
    )
    assert (rows.rollups, rows.loaded, rows.requests, rows.heads, rows.deltas) == ({}, {}, {}, {}, False)


async def test_a_batch_prepared_as_the_store_asks_stores_the_same_totals(ingest: Ingest) -> None:
    """A store that needs no deltas gets batches without them and reports the same totals; one that needs them
    refuses a batch without them rather than store spans with no rollups."""
    spans = make_spans(300, seed=12)
    needs = ingest.store.needs_deltas
    batch = prepare_batch(spans, BOOK, deltas=needs)
    if needs:
        with pytest.raises(ValueError, match="deltas"):
            await ingest.apply(prepare_batch(spans, BOOK, deltas=False), _at(0, 0, 300))
        assert await ingest.offsets("g", "t") == {}
    result = await ingest.apply(batch, _at(0, 0, 300))
    assert (result.new_spans, result.cost_nano) == (300, cost_nano(spans))
    assert result.touched == prepare_batch(spans, BOOK).summary
    assert _cost(ingest.url) == (300, cost_nano(spans))


# SQLite only: ClickHouse has no write transaction to read the cutoff in (README, Known gaps)
@pytest.mark.parametrize("ingest", ["sqlite", "sqlite-writer-process"], indirect=True)
async def test_a_retention_round_between_prepare_and_write_makes_the_aged_spans_dead_letters(ingest: Ingest) -> None:
    """Stored, prepared again (a replay), a round deletes them before the write: dead letters, totals kept.

    Before, the write checked nothing: the replayed spans were stored again and their deleted day
    counted twice. Now the SQLite write reads the applied cutoff inside its transaction.
    """
    now = time.time_ns()
    old = make_spans(60, seed=91, start_ns=now - 10 * DAY_NS)
    fresh = make_spans(20, seed=92, start_ns=now - DAY_NS)
    await ingest.apply(prepare_batch(old, BOOK))
    spans_before, cost_before = _cost(ingest.url)
    assert spans_before == 60
    replay = prepare_batch(old + fresh, BOOK)  # prepared before the round, as a worker prepares its batch
    admin = open_store(ingest.url)
    try:
        admin.set_retention(raw_data_days=5, hourly_rollups_days=365, daily_rollups_days=1825)
    finally:
        admin.close()
    while not (await ingest.retention(now, 1_000))[1]:
        pass
    assert _raw_spans(ingest.url) == 0
    result = await ingest.apply(replay, _at(0, 0, 80))
    assert (result.new_spans, result.duplicate_spans) == (20, 0)
    assert result.cost_nano == cost_nano(fresh) and cost_before == cost_nano(old)
    assert _cost(ingest.url) == (80, cost_nano(old + fresh))
    assert _raw_spans(ingest.url) == 20
    assert await ingest.offsets("g", "t") == {0: 80}
    reader = open_store(ingest.url, readonly=True)
    try:
        dead = reader.dead_letters(limit=1_000)
    finally:
        reader.close()
    assert len(dead) == 60 and {d["topic"] for d in dead} == {"(horizon)"}
    assert all(d["reason"].startswith("older than the raw-span retention horizon") for d in dead)
