"""The write path: store a prepared batch in one SQLite transaction, the same plan for sqlite3 and aiosqlite.

``prepare_batch`` (``spendtrace.server.ingest.prepare``, re-exported here) does every computation;
``write_batch_sync`` and ``write_batch_async`` run the *same* statement plan (``_plan``, a
generator of SQL operations) on ``sqlite3`` or ``aiosqlite``:

    BEGIN IMMEDIATE; INSERT OR IGNORE spans
    if some span_ids were already stored: re-prepare the deltas for the new spans only (found by rowid)
    SELECT the request ids of those spans already in ``requests``: the others are new requests
    rollup, loaded, dashboard, requests, unpriced upserts (deltas of the new spans only);
    consumer offsets; dead letters
    COMMIT

so a replayed or duplicated span is never counted twice and offsets move with the data.
See ``_prepare`` for the money conventions and the ``spans.usage`` JSON format.

Request counts (``rollup_*.requests``, and the ``dash_*`` sums of them): every request id counts
exactly once, in the batch that first stores one of its spans, whatever the batch boundaries,
replays, number of writers (the check runs inside the ``BEGIN IMMEDIATE`` transaction, before the
``requests`` upsert) or number of root spans (``track_request`` without a feature records none of
its own, so a handler calling two features has two). The count lands on the ``service = ''`` row
of the request's head span in that batch: its earliest root if the batch holds one, else its
earliest span. Spans arrive children-first (a parent ends after its children), so when the root
comes in a later batch the count sits on a child's feature and minute; user and endpoint are
inherited from the request scope, so per-user and per-endpoint request counts are exact either way.
A request whose ``requests`` row was deleted by retention is counted again if more spans arrive.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from spendtrace.server.ingest.horizon import aged_dead_letters
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.model.ingest import SPAN_COLUMNS, BatchSummary, DeadLetter, PreparedBatch, WriteResult
from spendtrace.server.store.sqlite._dash import dash_statements
from spendtrace.server.store.sqlite._retention import APPLIED_KEY

if TYPE_CHECKING:
    import sqlite3

    import aiosqlite

__all__ = [
    "AgedSpans",
    "BatchSummary",
    "DeadLetter",
    "OffsetRow",
    "PreparedBatch",
    "ReplayedSpans",
    "WriteResult",
    "prepare_batch",
    "read_offsets",
    "read_offsets_async",
    "write_batch_async",
    "write_batch_sync",
]

#: (group_id, topic, partition, next_offset)
OffsetRow = tuple[str, str, int, int]

_GRAINS = ("minute", "hour", "day")


class AgedSpans(Exception):
    """A detached batch held spans older than the raw-span cutoff retention has applied; nothing was written.

    Prepare the batch again without ``span_ids`` and write them as dead letters (``horizon.aged_dead_letters``),
    as the SQLite ingest store does in the process that has the spans.
    """

    def __init__(self, span_ids: frozenset[str], cutoff_ns: int) -> None:
        super().__init__(f"{len(span_ids)} of the batch's spans start before the applied retention cutoff {cutoff_ns}")
        self.span_ids = span_ids
        self.cutoff_ns = cutoff_ns


class ReplayedSpans(Exception):
    """A detached batch (``PreparedBatch.detached_copy``) held spans already stored; nothing was written.

    ``new_span_ids`` are the batch's spans the store did not have: prepare those again and write them
    (the SQLite ingest store does, in the process that has the spans; see ``_ingest_store``).
    """

    def __init__(self, new_span_ids: frozenset[str]) -> None:
        super().__init__(f"{len(new_span_ids)} of the batch's spans are new; the others were stored already")
        self.new_span_ids = new_span_ids


# --------------------------------------------------------------------------- SQL
INSERT_SPANS = (
    "INSERT OR IGNORE INTO spans (span_id, parent_id, request_id, feature, operation, endpoint, user_id, start_ns, "
    "duration_ns, cpu_ns, error, error_type, weight, path, usage, cost_nano, unpriced, var_nano2, price_version) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
#: rows per statement of the spans insert: one multi-row ``VALUES`` statement binds 19 x 32 = 608
#: parameters (under the 999 of old SQLite builds) and costs one ``sqlite3_step`` / reset instead of 32,
#: measured 20-40% faster than one row per statement
_ROWS_PER_INSERT = 32
_INSERT_SPANS_MULTI = INSERT_SPANS + ",(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)" * (_ROWS_PER_INSERT - 1)
_ROLLUP_UPSERT = (
    "INSERT INTO rollup_{g} (bucket, feature, user_id, endpoint, service, cost_nano, calls, spans, errors, unpriced, "
    "var_nano2, requests) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (bucket, feature, user_id, endpoint, service) "
    "DO UPDATE SET "
    "cost_nano = cost_nano + excluded.cost_nano, calls = calls + excluded.calls, spans = spans + excluded.spans, "
    "errors = errors + excluded.errors, unpriced = unpriced + excluded.unpriced, "
    "var_nano2 = var_nano2 + excluded.var_nano2, requests = requests + excluded.requests"
)
_LOADED_UPSERT = (
    "INSERT INTO loaded_{g} (bucket, feature, cost_nano, calls, spans, var_nano2) VALUES (?,?,?,?,?,?) "
    "ON CONFLICT (bucket, feature) DO UPDATE SET cost_nano = cost_nano + excluded.cost_nano, "
    "calls = calls + excluded.calls, spans = spans + excluded.spans, var_nano2 = var_nano2 + excluded.var_nano2"
)
_REQUESTS_UPSERT = (
    "INSERT INTO requests (request_id, endpoint, user_id, root_feature, start_ns, end_ns, cost_nano, spans, errors, "
    "unpriced, var_nano2) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (request_id) DO UPDATE SET "
    "endpoint = CASE WHEN excluded.root_feature IS NOT NULL THEN coalesce(excluded.endpoint, endpoint) "
    "ELSE coalesce(endpoint, excluded.endpoint) END, "
    "user_id = CASE WHEN excluded.root_feature IS NOT NULL THEN coalesce(excluded.user_id, user_id) "
    "ELSE coalesce(user_id, excluded.user_id) END, "
    "root_feature = coalesce(excluded.root_feature, root_feature), "
    "start_ns = min(start_ns, excluded.start_ns), end_ns = max(end_ns, excluded.end_ns), "
    "cost_nano = cost_nano + excluded.cost_nano, spans = spans + excluded.spans, errors = errors + excluded.errors, "
    "unpriced = unpriced + excluded.unpriced, var_nano2 = var_nano2 + excluded.var_nano2"
)
_UNPRICED_UPSERT = (
    "INSERT INTO unpriced_usage (key, service, feature, items, count, input_tokens, output_tokens, bytes, first_ns, "
    "last_ns) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (key, service, feature) DO UPDATE SET "
    "items = items + excluded.items, count = count + excluded.count, "
    "input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens, "
    "bytes = bytes + excluded.bytes, first_ns = min(first_ns, excluded.first_ns), "
    "last_ns = max(last_ns, excluded.last_ns)"
)
_PRICE_VERSION = "INSERT OR IGNORE INTO price_versions (version, created_ns, source, book) VALUES (?,?,?,?)"
_OFFSETS_UPSERT = (
    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, updated_ns) VALUES (?,?,?,?,?) "
    "ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset, "
    "updated_ns = excluded.updated_ns"
)
_DEAD_LETTER = (
    'INSERT OR IGNORE INTO dead_letters (received_ns, topic, partition, "offset", key, value, reason) '
    "VALUES (?,?,?,?,?,?,?)"
)
_READ_OFFSETS = "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = ? AND topic = ?"

_book_json: dict[str, str] = {}


def delta_statements(
    batch: PreparedBatch, now_ns: int, rollups: dict[str, dict[_RollupKey, list[Any]]] | None = None
) -> Iterable[tuple[str, list[tuple[Any, ...]]]]:
    """The upserts that add ``batch``'s deltas (to be run only for spans that were new).

    ``rollups`` replaces ``batch.rollups`` (``_counted_rollups``: the same deltas plus the new requests).
    """
    if rollups is None:
        rollups = batch.rollups
    if batch.span_values:
        bj = _book_json.get(batch.book.version)
        if bj is None:
            bj = _book_json[batch.book.version] = batch.book.to_json()
        yield _PRICE_VERSION, [(batch.book.version, now_ns, batch.book.name, bj)]
    yield from dash_statements(rollups)  # before the rollup upserts (see spendtrace.server.store.sqlite._dash)
    for g in _GRAINS:
        d = rollups[g]
        if d:
            yield _ROLLUP_UPSERT.format(g=g), [(*k, *v) for k, v in d.items()]
    for g in _GRAINS:
        ld = batch.loaded[g]
        if ld:
            yield _LOADED_UPSERT.format(g=g), [(*k, *v) for k, v in ld.items()]
    if batch.requests:
        yield _REQUESTS_UPSERT, [(k, *v) for k, v in batch.requests.items()]
    if batch.unpriced:
        yield _UNPRICED_UPSERT, [(*k, *v) for k, v in batch.unpriced.items()]


_RollupKey = tuple[int, str, str, str, str]
#: request ids per ``SELECT ... IN (...)`` (well under SQLite's oldest 999-variable limit)
_CHUNK = 500
_GRAIN_SECONDS = (("minute", 60), ("hour", 3600), ("day", 86400))


def _counted_rollups(batch: PreparedBatch, new_requests: Iterable[str]) -> dict[str, dict[_RollupKey, list[Any]]]:
    """``batch.rollups`` plus 1 request for each of ``new_requests`` at its head's row (copies; the batch is kept)."""
    per_head: dict[tuple[int, str, str, str], int] = {}
    heads = batch.heads
    for rid in new_requests:
        h = heads[rid]
        per_head[h] = per_head.get(h, 0) + 1
    if not per_head:
        return batch.rollups
    out: dict[str, dict[_RollupKey, list[Any]]] = {}
    for g, size in _GRAIN_SECONDS:
        d = dict(batch.rollups[g])
        touched: set[_RollupKey] = set()
        for (mb, f, u, e), n in per_head.items():
            key = (mb - mb % size, f, u, e, "")
            if key not in touched:  # copy a row once before adding to it
                touched.add(key)
                d[key] = list(d[key])
            d[key][6] += n
        out[g] = d
    return out


# --------------------------------------------------------------------------- the one transaction plan
# Operations yielded by _plan: ("exec", sql, params) -> None, ("many", sql, rows) -> None,
# ("all", sql, params) -> list of rows.
_Op = tuple[str, str, Any]


def _insert_spans(values: list[Any]) -> Generator[_Op, Any, None]:
    """Insert the flat rows ``values`` in order (so rowids follow batch order), ``_ROWS_PER_INSERT`` per statement."""
    n = SPAN_COLUMNS
    step = _ROWS_PER_INSERT * n
    full = len(values) - len(values) % step
    if full:
        yield ("many", _INSERT_SPANS_MULTI, [values[i : i + step] for i in range(0, full, step)])
    if full < len(values):
        yield ("many", INSERT_SPANS, [values[i : i + n] for i in range(full, len(values), n)])


#: rows per statement of the rollup / requests / dashboard upserts (as for the spans insert): measured
#: 15-25% faster than one row per statement (``executemany`` binds and steps once per statement)
_UPSERT_ROWS = 32


@functools.cache
def _multi(sql: str) -> str | None:
    """``sql`` (one ``VALUES (?,...)`` row) taking ``_UPSERT_ROWS`` rows, or None if it has another shape."""
    head, sep, tail = sql.partition(" VALUES (")
    params, close, rest = tail.partition(")")
    if not sep or not close or set(params) - {"?", ","}:
        return None
    return f"{head} VALUES {','.join([f'({params})'] * _UPSERT_ROWS)}{rest}"


def _many(sql: str, rows: list[tuple[Any, ...]]) -> Generator[_Op, Any, None]:
    """Run ``sql`` for every row, ``_UPSERT_ROWS`` rows per statement where there are that many.

    Rows of one upsert have distinct keys (they come from dicts), so a multi-row statement does
    exactly what the rows one by one would.
    """
    if len(rows) == 1 and not rows[0]:  # one statement, no parameters (DDL, a one-off fill): executemany refuses DDL
        yield ("exec", sql, ())
        return
    full = len(rows) - len(rows) % _UPSERT_ROWS
    multi = _multi(sql) if full else None
    if multi is None:
        yield ("many", sql, rows)
        return
    chain = itertools.chain.from_iterable
    k = _UPSERT_ROWS
    yield ("many", multi, [list(chain(rows[i : i + k])) for i in range(0, full, k)])
    if full < len(rows):
        yield ("many", sql, rows[full:])


#: where ``start_ns`` sits in a span's flat row (``INSERT_SPANS``'s column order)
_START_COLUMN = 7
_SELECT_APPLIED = "SELECT value FROM meta WHERE key = ?"


def _without_aged(batch: PreparedBatch, cutoff_ns: int, now_ns: int) -> tuple[PreparedBatch, list[DeadLetter]]:
    """``batch`` prepared again without its spans starting before ``cutoff_ns``, and their dead letters."""
    if batch.detached:
        values = batch.span_values
        aged_ids = frozenset(
            values[i] for i in range(0, len(values), SPAN_COLUMNS) if values[i + _START_COLUMN] < cutoff_ns
        )
        raise AgedSpans(aged_ids, cutoff_ns)
    kept = [s for s in batch.spans if s.start_ns >= cutoff_ns]
    again = prepare_batch(kept, batch.book)
    again.duplicates_in_batch = batch.duplicates_in_batch
    return again, aged_dead_letters([s for s in batch.spans if s.start_ns < cutoff_ns], cutoff_ns, now_ns)


def _plan(
    batch: PreparedBatch, offsets: Sequence[OffsetRow], dead_letters: Sequence[DeadLetter], now_ns: int
) -> Generator[_Op, Any, WriteResult]:
    if not batch.deltas:
        raise ValueError("SQLite stores write prepare_batch's deltas: prepare the batch with deltas=True")
    n_rows = len(batch.span_values) // SPAN_COLUMNS
    if n_rows:
        # The applied retention cutoff, read inside this write transaction: a span older than it may
        # have had a stored copy deleted (the rollups still count it), so it becomes a dead letter here,
        # whatever the writer read before preparing the batch (a round may have run in between).
        row = yield ("all", _SELECT_APPLIED, (APPLIED_KEY,))
        cutoff = int(row[0][0]) if row else None
        if cutoff is not None and min(batch.span_values[_START_COLUMN::SPAN_COLUMNS]) < cutoff:
            batch, aged = _without_aged(batch, cutoff, now_ns)
            dead_letters = [*dead_letters, *aged]
            n_rows = len(batch.span_values) // SPAN_COLUMNS
    effective = batch
    if n_rows:
        # New rows of a rowid table get rowids above the current maximum, so after the insert the
        # spans that were really new are exactly those above it (no savepoint / sub-journal needed).
        max_rowid = (yield ("all", "SELECT coalesce(max(rowid), 0), total_changes() FROM spans", ()))[0]
        yield from _insert_spans(batch.span_values)
        after = (yield ("all", "SELECT total_changes()", ()))[0][0]
        if after - max_rowid[1] != n_rows:
            # Some spans were stored already (a replay): count the deltas of the new ones only.
            new_ids = {r[0] for r in (yield ("all", "SELECT span_id FROM spans WHERE rowid > ?", (max_rowid[0],)))}
            if batch.detached:
                raise ReplayedSpans(frozenset(new_ids))
            effective = prepare_batch([s for s in batch.spans if s.span_id in new_ids], batch.book)
            effective.duplicates_in_batch = batch.duplicates_in_batch
        # Requests not stored yet are counted once, here (the requests upsert below stores them).
        rids = list(effective.heads)
        new_requests = set(rids)
        for i in range(0, len(rids), _CHUNK):
            chunk = rids[i : i + _CHUNK]
            sql = f"SELECT request_id FROM requests WHERE request_id IN ({','.join('?' * len(chunk))})"
            new_requests.difference_update(r[0] for r in (yield ("all", sql, chunk)))
        for sql, rows in delta_statements(effective, now_ns, _counted_rollups(effective, new_requests)):
            yield from _many(sql, rows)
    if offsets:
        yield ("many", _OFFSETS_UPSERT, [(g, t, p, o, now_ns) for g, t, p, o in offsets])
    if dead_letters:
        yield ("many", _DEAD_LETTER, [(now_ns, *d) for d in dead_letters])
    new = len(effective.span_values) // SPAN_COLUMNS
    return WriteResult(
        new_spans=new,
        duplicate_spans=n_rows - new + batch.duplicates_in_batch,
        cost_nano=effective.cost_nano,
        unpriced_items=effective.unpriced_items,
        touched=effective.summary,
    )


def write_batch_sync(
    conn: sqlite3.Connection,
    batch: PreparedBatch,
    *,
    offsets: Sequence[OffsetRow] = (),
    dead_letters: Sequence[DeadLetter] = (),
) -> WriteResult:
    """Store ``batch`` (plus consumer offsets and dead letters) in one transaction on a ``connect()`` connection."""
    plan = _plan(batch, offsets, dead_letters, time.time_ns())
    conn.execute("BEGIN IMMEDIATE")
    try:
        result: Any = None
        while True:
            try:
                kind, sql, args = plan.send(result)
            except StopIteration as stop:
                conn.execute("COMMIT")
                return stop.value  # type: ignore[no-any-return]
            if kind == "many":
                conn.executemany(sql, args)
                result = None
            elif kind == "all":
                result = conn.execute(sql, args).fetchall()
            else:
                conn.execute(sql, args)
                result = None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


async def write_batch_async(
    aconn: aiosqlite.Connection,
    batch: PreparedBatch,
    *,
    offsets: Sequence[OffsetRow] = (),
    dead_letters: Sequence[DeadLetter] = (),
) -> WriteResult:
    """``write_batch_sync`` for an ``aiosqlite`` connection from ``connect_async()``."""
    plan = _plan(batch, offsets, dead_letters, time.time_ns())
    await aconn.execute("BEGIN IMMEDIATE")
    try:
        result: Any = None
        while True:
            try:
                kind, sql, args = plan.send(result)
            except StopIteration as stop:
                await aconn.execute("COMMIT")
                return stop.value  # type: ignore[no-any-return]
            if kind == "many":
                await aconn.executemany(sql, args)
                result = None
            elif kind == "all":
                async with aconn.execute(sql, args) as cur:
                    result = await cur.fetchall()
            else:
                await aconn.execute(sql, args)
                result = None
    except BaseException:
        if aconn.in_transaction:
            await aconn.execute("ROLLBACK")
        raise


def read_offsets(conn: sqlite3.Connection, group_id: str, topic: str) -> dict[int, int]:
    """partition -> next offset to consume, as stored by the last committed batch of ``group_id``."""
    return {int(p): int(o) for p, o in conn.execute(_READ_OFFSETS, (group_id, topic)).fetchall()}


async def read_offsets_async(aconn: aiosqlite.Connection, group_id: str, topic: str) -> dict[int, int]:
    """``read_offsets`` for an ``aiosqlite`` connection."""
    async with aconn.execute(_READ_OFFSETS, (group_id, topic)) as cur:
        return {int(p): int(o) for p, o in await cur.fetchall()}
