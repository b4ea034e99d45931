"""Rollup request counts: each distinct request id counts once, whatever its roots, batches, replays or writers."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from spendtrace import PriceBook, Span, UsageItem
from spendtrace.server.store.sqlite import SQLiteStorage
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

BOOK = PriceBook.default()
#: 2026-11-02 10:59:30 UTC: requests below straddle minute and hour boundaries
T0 = 1_793_620_800_000_000_000 - 3_600_000_000_000 + 59 * 60_000_000_000 + 30_000_000_000
SEC = 1_000_000_000


def span(
    rid: str,
    sid: str,
    parent: str | None,
    feature: str,
    t: int,
    *,
    user: str | None = "tenant-acme",
    endpoint: str | None = "/search",
) -> Span:
    """A span of request ``rid`` with one priced DynamoDB read."""
    return Span(
        sid,
        parent,
        rid,
        feature,
        endpoint=endpoint,
        user_id=user,
        start_ns=t,
        duration_ns=SEC // 100,
        path=(feature,),
        usage=(UsageItem("dynamodb_read", count=1.0),),
    )


def write(conn: sqlite3.Connection, spans: list[Span]) -> None:
    """Prepare and store ``spans`` as one batch."""
    write_batch_sync(conn, prepare_batch(spans, BOOK))


def rollup_requests(conn: sqlite3.Connection) -> dict[str, dict[tuple[Any, ...], int]]:
    """grain -> {(bucket, feature, user, endpoint): requests} of the non-zero span-level rollup rows."""
    out: dict[str, dict[tuple[Any, ...], int]] = {}
    for g in ("minute", "hour", "day"):
        rows = conn.execute(
            f"SELECT bucket, feature, user_id, endpoint, requests FROM rollup_{g} WHERE service = '' AND requests != 0"
        )
        out[g] = {tuple(r[:4]): r[4] for r in rows}
    return out


def assert_counts(db_path: Path, spans: list[Span]) -> None:
    """Every rollup grain, every dashboard dimension and the query API count each distinct request id once."""
    by_user: dict[str, set[str]] = defaultdict(set)
    by_endpoint: dict[str, set[str]] = defaultdict(set)
    for s in spans:
        by_user[s.user_id or ""].add(s.request_id)
        by_endpoint[s.endpoint or ""].add(s.request_id)
    n = len({s.request_id for s in spans})
    conn = connect(db_path)
    for g, rows in rollup_requests(conn).items():
        assert sum(rows.values()) == n, g
        assert conn.execute(f"SELECT sum(requests) FROM rollup_{g} WHERE service != ''").fetchone()[0] in (0, None)
    for g in ("hour", "day"):
        for dim in ("feature", "user_id", "endpoint"):
            got = conn.execute(f"SELECT sum(requests) FROM dash_{g} WHERE dim = ?", (dim,)).fetchone()[0]
            assert got == n, (g, dim)
    conn.close()
    with SQLiteStorage(db_path, readonly=True) as st:
        assert st.total()["request_count"] == n
        users = {r["user_id"]: r["request_count"] for r in st.aggregate_by_user()}
        assert users == {u: len(ids) for u, ids in by_user.items()}
        assert {r["user_id"]: r["transaction_count"] for r in st.aggregate_by_user()} == users
        endpoints = {r["endpoint"]: r["request_count"] for r in st.aggregate_by_endpoint()}
        assert endpoints == {e: len(ids) for e, ids in by_endpoint.items()}


def test_a_request_with_two_root_spans_counts_once_at_its_earliest_root(db_path: Path) -> None:
    """Two features called one after the other under a featureless track_request are one request, on the first."""
    spans = [
        span("r1", "a", None, "search", T0),
        span("r1", "b", None, "ranking", T0 + 40 * SEC),  # the next minute and the next hour
    ]
    prepared = prepare_batch(spans[::-1], BOOK)
    assert prepared.heads == {"r1": (T0 // SEC // 60 * 60, "search", "tenant-acme", "/search")}
    assert all(v[6] == 0 for grain in prepared.rollups.values() for v in grain.values())  # counted at write
    conn = connect(db_path)
    write_batch_sync(conn, prepared)
    minute = T0 // SEC // 60 * 60
    assert rollup_requests(conn)["minute"] == {(minute, "search", "tenant-acme", "/search"): 1}
    assert_counts(db_path, spans)


def test_a_request_split_across_two_batches_counts_once(db_path: Path) -> None:
    """A request whose two roots (and a child) come in two batches is counted by the first batch only."""
    spans = [
        span("r1", "a", None, "search", T0),
        span("r1", "a1", "a", "lookup", T0 + SEC),
        span("r1", "b", None, "ranking", T0 + 2 * SEC),
    ]
    conn = connect(db_path)
    write(conn, spans[:2])
    write(conn, spans[2:])
    assert_counts(db_path, spans)


def test_a_replayed_batch_adds_no_request(db_path: Path) -> None:
    """The same prepared batch rewritten, re-prepared or retried after a failed transaction counts nothing twice."""
    spans = [span(f"r{i}", f"s{i}-{j}", None, "search", T0 + i * SEC + j) for i in range(5) for j in range(2)]
    conn = connect(db_path)
    prepared = prepare_batch(spans[:6], BOOK)
    bad_offsets: list[Any] = [(None, "t", 0, 1)]
    with pytest.raises(sqlite3.IntegrityError):  # NOT NULL violation after the counts were computed
        write_batch_sync(conn, prepared, offsets=bad_offsets)
    assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 0
    write_batch_sync(conn, prepared)  # the retry of the very same object
    write_batch_sync(conn, prepared)
    write(conn, spans[:6])
    assert_counts(db_path, spans[:6])
    write(conn, spans[4:])  # half replay, half new
    write(conn, spans)
    assert_counts(db_path, spans)


def test_children_first_across_batches_counts_once_at_the_first_batchs_earliest_span(db_path: Path) -> None:
    """Leaf, then parent, then root in three batches: one request, counted where its first span landed."""
    root = span("r1", "root", None, "api", T0)
    child = span("r1", "child", "root", "search", T0 + SEC)
    leaf = span("r1", "leaf", "child", "lookup", T0 + 2 * SEC)
    late_leaf = span("r1", "leaf2", "child", "lookup", T0 + 3 * SEC)
    conn = connect(db_path)
    write(conn, [late_leaf, leaf])
    write(conn, [child])
    write(conn, [root])
    minute = (T0 + 2 * SEC) // SEC // 60 * 60
    assert rollup_requests(conn)["minute"] == {(minute, "lookup", "tenant-acme", "/search"): 1}
    assert_counts(db_path, [root, child, leaf, late_leaf])


def test_two_writers_of_disjoint_halves_of_the_same_requests_count_each_once(db_path: Path) -> None:
    """Two connections at once, each storing one root and its child of every request, leave one count per request."""
    spans = [  # spans 0 and 1 are roots (two features under a featureless track_request), 2 and 3 their children
        span(f"r{i}", f"r{i}-{j}", None if j < 2 else f"r{i}-{j - 2}", f"f{j}", T0 + i * SEC + j, user=f"t{i % 7}")
        for i in range(150)
        for j in range(4)
    ]
    halves = [[s for s in spans if int(s.span_id.rsplit("-", 1)[1]) % 2 == k] for k in (0, 1)]
    connect(db_path).close()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(half: list[Span]) -> None:
        conn = connect(db_path)
        try:
            barrier.wait()
            for i in range(0, len(half), 10):
                write(conn, half[i : i + 10])
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = connect(db_path)
    assert conn.execute("SELECT count(*) FROM spans").fetchone()[0] == len(spans)
    assert_counts(db_path, spans)


def test_per_user_and_endpoint_counts_equal_the_distinct_request_ids(db_path: Path) -> None:
    """Random requests (0-3 roots, shuffled, random batches, replays) count as distinct ids per user and endpoint."""
    rng = random.Random(11)
    spans: list[Span] = []
    for i in range(300):
        rid = f"req-{i}"
        user = rng.choice(["tenant-a", "tenant-b", "tenant-c", None])
        endpoint = rng.choice(["/search", "/checkout", None])
        t = T0 + rng.randrange(0, 7200) * SEC
        roots = [f"{rid}-root{k}" for k in range(rng.choice([0, 1, 1, 2, 3]))]
        parents = roots or [f"{rid}-missing"]  # no root at all: only children whose root never arrived
        for k, sid in enumerate(roots):
            spans.append(
                span(rid, sid, None, rng.choice(["search", "ranking"]), t + k * SEC, user=user, endpoint=endpoint)
            )
        for k in range(rng.randrange(0 if roots else 1, 4)):
            spans.append(
                span(
                    rid,
                    f"{rid}-c{k}",
                    rng.choice(parents),
                    "lookup",
                    t + rng.randrange(0, 90) * SEC,
                    user=user,
                    endpoint=endpoint,
                )
            )
    rng.shuffle(spans)
    conn = connect(db_path)
    i = 0
    while i < len(spans):
        size = rng.randrange(1, 60)
        write(conn, spans[i : i + size])
        if rng.random() < 0.3:  # a replay of an earlier stretch
            j = rng.randrange(0, i + 1)
            write(conn, spans[j : j + size])
        i += size
    assert_counts(db_path, spans)
