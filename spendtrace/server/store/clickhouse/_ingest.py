"""The write path on ClickHouse: one prepared batch -> one ``spans`` insert that feeds every rollup view.

ClickHouse has no transaction spanning ``spans``, the views' targets and the offsets, so the storage
interface's effectively-once contract is kept this way (the ClickHouse Kafka Connect sink's design):

1. A batch has a **token** derived from what it was formed from: ``kafka_token`` of the
   (group, topic, partition, first offset, last offset) ranges it covers, or ``spans_token`` (a hash
   of its span ids) for a batch that did not come from Kafka.
2. ``write_batch`` first reads which of the batch's span ids are stored already (``span_id`` bloom
   index, pruned to the batch's time range) and by which token. Spans stored by *another* batch are
   left out and counted as duplicates (spans are idempotent on ``span_id`` across batches). Spans
   stored by *this* token are kept: the batch is being replayed and must be inserted again
   identically, so that every table the first attempt did not reach gets it. The head span of each
   request not in ``requests`` yet is marked ``new_request = 1`` (the rollups count requests by it);
   a replayed span keeps the mark it was stored with.
3. The rows go in as one insert with ``insert_deduplication_token`` = the token and
   ``deduplicate_blocks_in_dependent_materialized_views = 1``; ``spans`` and every view's target have
   ``non_replicated_deduplication_window`` set (``_ddl``), so each table drops a block it already has
   from this token, and views still run for the tables that missed it. Rollups are never doubled.
4. Then dead letters (same token) and the offsets reached. Before 1., the ingest store
   (``_ingest_store``) recorded the batch's ranges (``record_ranges``); a crash before 4 leaves
   them unconfirmed (``read_unconfirmed``), and the worker re-forms exactly that batch from them
   (same first/last offsets, so the same token), which 3. recognises.

What this does not cover (stated in README Known gaps): two *different* batches holding the same
span, written at the same moment by two workers, can both pass the check in 2. (no transaction);
a batch re-formed with other boundaries gets another token (the workers re-form the recorded range
exactly; it can differ only when Kafka deleted some of its records meanwhile, or the price book
changed, which changes its rows but not its token); a span re-sent with
another ``start_ns`` is not recognised (the check looks in the batch's time range).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spendtrace.server.ingest.prepare import SPAN_COLUMNS, PreparedBatch
from spendtrace.server.store.clickhouse._client import Conn

__all__ = [
    "SPAN_NAMES",
    "WriteResult",
    "kafka_token",
    "read_offsets",
    "read_unconfirmed",
    "record_ranges",
    "spans_token",
    "write_batch",
]

#: ``spans`` columns in ``PreparedBatch.span_values`` order, then the batch token.
SPAN_NAMES = (
    "span_id",
    "parent_id",
    "request_id",
    "feature",
    "operation",
    "endpoint",
    "user_id",
    "start_ns",
    "duration_ns",
    "cpu_ns",
    "error",
    "error_type",
    "weight",
    "path",
    "usage",
    "cost_nano",
    "unpriced",
    "var_nano2",
    "price_version",
)
assert len(SPAN_NAMES) == SPAN_COLUMNS

#: ids per "already stored?" query, and their characters at most (``_chunks``)
_CHUNK = 5000
_CHUNK_BYTES = 120_000
#: bytes of one requests query's JSON id list: its hex (twice that) stays under ClickHouse's 256 KiB
#: ``max_query_size`` with the rest of the query (an id is at most 512 characters: 2 KiB of UTF-8)
_JSON_BYTES = 100_000
#: stored spans in a batch's time range (per span of the batch) up to which their ids are read back as
#: one column (0.5 us per span of the batch at 4, measured; ``span_id IN`` chunks cost 2.4 us per span)
_CROWD = 20
_DAY_NS = 86_400 * 1_000_000_000
_INSERT_SETTINGS = {"insert_deduplicate": 1, "deduplicate_blocks_in_dependent_materialized_views": 1}

#: (group_id, topic, partition, next_offset)
OffsetRow = tuple[str, str, int, int]
#: (topic, partition, offset, key, value, reason)
DeadLetter = tuple[str, int, int, bytes | None, bytes | None, str]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one ``write_batch`` stored."""

    new_spans: int
    #: spans left out: stored by another batch, or repeated within this one
    duplicate_spans: int
    #: spans this token had stored already (a replay: inserted again, dropped by deduplication)
    replayed_spans: int
    cost_nano: int
    unpriced_items: int
    token: str


def kafka_token(group_id: str, ranges: Iterable[tuple[str, int, int, int]]) -> str:
    """The token of a batch formed from Kafka records: ``ranges`` are (topic, partition, first, last offset)."""
    text = ";".join(f"{t}/{p}/{a}-{b}" for t, p, a, b in sorted(ranges))
    return "k:" + hashlib.sha256(f"{group_id}|{text}".encode()).hexdigest()


def spans_token(span_ids: Iterable[str]) -> str:
    """The token of a batch that came from no Kafka records: a hash of its span ids, in order."""
    h = hashlib.sha256()
    for sid in span_ids:
        h.update(sid.encode())
        h.update(b"\0")
    return "s:" + h.hexdigest()


def _stored(conn: Conn, ids: list[str], lo_ns: int, hi_ns: int) -> dict[str, tuple[str, int, int]]:
    """span_id -> (token of the batch that stored it, its ``new_request`` mark, its ``request_day``), for ``ids``
    already stored.

    A span's ``start_ns`` is part of the span, so only rows in the batch's time range can match (a
    primary-key range). Usually few are stored there: their ids are read back as one column (binary,
    no SQL text per id, no tuple per row) and matched here with a set intersection, and only the
    matches (a replay, duplicates: rare) are asked for their token and mark; a crowded range is asked
    with ``span_id IN (...)`` (the bloom index). In a worker's run of 200,000 spans the ids of the
    range read back as rows were 5.8 us per span of the batch, a quarter of the store's time.
    """
    where = "start_ns >= %s AND start_ns <= %s"
    crowd = int(conn.tuples(f"SELECT count() FROM spans WHERE {where}", (lo_ns, hi_ns))[0][0])
    if not crowd:
        return {}
    out: dict[str, tuple[str, int, int]] = {}
    if crowd <= _CROWD * len(ids):
        hits = set(ids).intersection(conn.column(f"SELECT span_id FROM spans WHERE {where}", (lo_ns, hi_ns)))
        if not hits:
            return {}
        ids = sorted(hits)
    for piece in _chunks(ids):
        chunk = tuple(piece)
        sql = (
            f"SELECT span_id, any(batch), max(new_request), min(request_day) FROM spans WHERE {where} AND span_id IN %s"
            " GROUP BY span_id"
        )
        for sid, batch, mark, day in conn.tuples(sql, (lo_ns, hi_ns, chunk)):
            out[sid] = (batch, mark, day)
    return out


def _request_days(conn: Conn, request_ids: set[str]) -> dict[str, int]:
    """request id -> its ``first_day``, for those of ``request_ids`` in ``requests`` already (its primary key)."""
    # The ids go as one JSON array per query, hex-encoded into the SQL text: a hex literal needs no
    # escaping, so no Python loop runs over the characters (the client's escaping of the JSON string
    # was 2 us per span of a 200,000-span worker run, as much as the read itself).
    sql = (
        "SELECT request_id, min(first_day) FROM requests "
        "WHERE request_id IN (SELECT arrayJoin(JSONExtract(unhex('{}'), 'Array(String)'))) GROUP BY request_id"
    )
    out: dict[str, int] = {}
    for piece in _json_pieces(list(request_ids)):
        out.update(conn.tuples(sql.format(piece.hex())))
    return out


def _json_pieces(ids: list[str]) -> list[bytes]:
    """``ids`` as JSON arrays (UTF-8) of at most ``_JSON_BYTES`` bytes each (hex-encoded, under ``max_query_size``)."""
    text = json.dumps(ids, ensure_ascii=False, separators=(",", ":")).encode()
    if len(text) <= _JSON_BYTES or len(ids) == 1:
        return [text]
    # one piece more than the size needs (ids differ in length); a piece still too long is cut again
    step = -(-len(ids) // (len(text) // _JSON_BYTES + 2))
    return [piece for i in range(0, len(ids), step) for piece in _json_pieces(ids[i : i + step])]


def _chunks(ids: list[str]) -> list[list[str]]:
    """``ids`` cut so that each piece, as SQL text, stays far under ClickHouse's 256 KiB ``max_query_size``.

    At most ``_CHUNK`` ids and about ``_CHUNK_BYTES`` characters each (ids may be 512 characters long).
    """
    out: list[list[str]] = []
    piece: list[str] = []
    size = 0
    for sid in ids:
        if piece and (len(piece) >= _CHUNK or size + len(sid) > _CHUNK_BYTES):
            out.append(piece)
            piece, size = [], 0
        piece.append(sid)
        # worst case as SQL text: each character escaped (ASCII), or 4 UTF-8 bytes and escaped
        size += (2 if sid.isascii() else 8) * len(sid) + 4
    if piece:
        out.append(piece)
    return out


def _request_marks(known: dict[str, int], head: dict[str, int]) -> dict[int, int]:
    """Span index -> 1 for the head span (``_heads``) of each request not stored before (not in ``known``).

    Spans are keyed by request id in Kafka, so one worker at a time applies a request's batches, in
    order: the check cannot race with another batch of the request.
    """
    return {i: 1 for rid, i in head.items() if rid not in known}


def _heads(rids: list[str], parents: list[str | None], starts: list[int], fresh: list[int]
           ) -> tuple[dict[str, int], dict[str, int]]:  # fmt: skip
    """request id -> index among ``fresh`` of (its earliest span, its head span), with sorts and dicts built in C.

    The head is ``prepare_batch``'s: the earliest-starting root span, else the earliest span, the
    first in batch order on a tie. ``fresh`` ascends, and the sort by start is stable, so equal starts
    stay in batch order; a dict built from the reversed order keeps each request's first index. (The
    loop over the spans this replaced was 1.5 us per span of a worker run.)
    """
    order = sorted(fresh, key=starts.__getitem__)
    order.reverse()
    earliest = dict(zip(map(rids.__getitem__, order), order, strict=True))
    head = dict(earliest)
    roots = [i for i in order if parents[i] is None]
    head.update(zip(map(rids.__getitem__, roots), roots, strict=True))
    return earliest, head


def _day_column(
    rids: list[str], starts: list[int], keep: list[int], known: dict[str, int], earliest: dict[str, int],
    replayed: dict[str, int],
) -> list[int]:
    """Each kept span's ``request_day``: fixed by the request's first stored batch (``_ddl`` v8).

    A replayed span's request keeps the day it was stored with; a request in ``requests`` already keeps
    its ``first_day``; a new one takes the day of its earliest span here. ``replayed``: request id -> the
    day its spans of this batch were stored with in an earlier attempt.
    """
    day = {rid: starts[i] // _DAY_NS * 86_400 for rid, i in earliest.items()}
    day.update(known)
    day.update(replayed)
    if len(keep) == len(rids):  # every span kept (the usual case): a pass in C
        return list(map(day.__getitem__, rids))
    return [day[rids[i]] for i in keep]


def write_batch(
    conn: Conn,
    batch: PreparedBatch,
    *,
    token: str | None = None,
    offsets: Sequence[OffsetRow] = (),
    dead_letters: Sequence[DeadLetter] = (),
) -> WriteResult:
    """Store ``batch`` effectively once (see the module docstring); ``token`` defaults to ``spans_token``."""
    values = batch.span_values
    n = SPAN_COLUMNS
    ids: list[str] = values[0::n]
    if token is None:
        token = spans_token(ids)
    now_ns = time.time_ns()
    settings = {**_INSERT_SETTINGS, "insert_deduplication_token": token}
    columns = [values[i::n] for i in range(n)]
    new = replayed = 0
    cost = unpriced = 0
    left_out = 0
    if ids:
        rids: list[str] = columns[2]
        parents: list[str | None] = columns[1]
        starts: list[int] = columns[7]
        stored = _stored(conn, ids, min(starts), max(starts))
        if not stored:  # the usual case, in C-speed passes: every span is new
            fresh = keep = list(range(len(ids)))
            cost, unpriced = sum(columns[15]), sum(columns[16])
        else:
            keep = [i for i, sid in enumerate(ids) if stored.get(sid, (token,))[0] == token]
            replayed = sum(1 for sid in ids if sid in stored and stored[sid][0] == token)
            left_out = len(ids) - len(keep)
            if left_out:
                columns = [[col[i] for i in keep] for col in columns]
            fresh = [i for i in keep if ids[i] not in stored]
            cost = sum(values[i * n + 15] for i in fresh)
            unpriced = sum(values[i * n + 16] for i in fresh)
        new = len(fresh)
        earliest, head = _heads(rids, parents, starts, fresh) if fresh else ({}, {})
        known = _request_days(conn, set(head)) if head else {}
        marks = _request_marks(known, head)
        replayed_days: dict[str, int] = {}
        if stored:
            for i in keep:
                if ids[i] in stored:
                    replayed_days[rids[i]] = stored[ids[i]][2]
        days = _day_column(rids, starts, keep, known, earliest, replayed_days)
        columns.append([token] * len(keep))
        if not stored:
            mark_column = [0] * len(keep)
            for i in marks:
                mark_column[i] = 1
            columns.append(mark_column)
        else:  # a replay keeps the marks it stored the first time, so its rows are the same rows
            columns.append([stored[ids[i]][1] if ids[i] in stored else marks.get(i, 0) for i in keep])
        columns.append(days)
        conn.insert("spans", columns, (*SPAN_NAMES, "batch", "new_request", "request_day"), settings)
        book = batch.book
        if book.version not in conn.books:  # a ReplacingMergeTree row per version: once per connection will do
            conn.insert(
                "price_versions",
                [[book.version], [now_ns], [book.name], [book.to_json()]],
                ("version", "created_ns", "source", "book"),
                settings,
            )
            conn.books.add(book.version)
    if dead_letters:
        rows = list(zip(*dead_letters, strict=True))
        conn.insert(
            "dead_letters",
            [[now_ns] * len(dead_letters), *(list(c) for c in rows)],
            ("received_ns", "topic", "partition", "offset", "key", "value", "reason"),
            settings,
        )
    if offsets:
        rows = list(zip(*offsets, strict=True))
        conn.insert(
            "consumer_offsets",
            [*(list(c) for c in rows), [now_ns] * len(offsets)],
            ("group_id", "topic", "partition", "next_offset", "updated_ns"),
        )
    return WriteResult(
        new_spans=new,
        duplicate_spans=left_out + batch.duplicates_in_batch,
        replayed_spans=replayed,
        cost_nano=cost,
        unpriced_items=unpriced,
        token=token,
    )


def record_ranges(conn: Conn, token: str, ranges: Sequence[tuple[str, str, int, int, int]]) -> None:
    """Record that the batch ``token`` is begun: (group, topic, partition, first, next offset) per partition.

    Written (and acknowledged) before any row of the batch, so that after a crash anywhere in
    ``write_batch`` the worker knows which records to re-form the batch from (``read_unconfirmed``).
    """
    if not ranges:
        return
    now_ns = time.time_ns()
    rows = list(zip(*ranges, strict=True))
    conn.insert(
        "batch_ranges",
        [*(list(c) for c in rows), [token] * len(ranges), [now_ns] * len(ranges)],
        ("group_id", "topic", "partition", "first_offset", "next_offset", "token", "updated_ns"),
    )


def read_unconfirmed(conn: Conn, group_id: str, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (first, next offset) of the last batch begun whose offsets were not stored after it."""
    sql = (
        "SELECT partition, argMax(first_offset, updated_ns), argMax(next_offset, updated_ns) FROM batch_ranges "
        "WHERE group_id = %s AND topic = %s GROUP BY partition"
    )
    begun = {int(p): (int(a), int(b)) for p, a, b in conn.tuples(sql, (group_id, topic))}
    done = read_offsets(conn, group_id, topic) if begun else {}
    return {p: r for p, r in begun.items() if done.get(p, -1) < r[1]}


def read_offsets(conn: Conn, group_id: str, topic: str) -> dict[int, int]:
    """partition -> next offset to consume, as stored after the last applied batch of ``group_id``."""
    sql = (
        "SELECT partition, argMax(next_offset, updated_ns) FROM consumer_offsets "
        "WHERE group_id = %s AND topic = %s GROUP BY partition"
    )
    return {int(p): int(o) for p, o in conn.tuples(sql, (group_id, topic))}
