"""Storage write path: priced rows, rollups, fully-loaded and request deltas, exactly once, sync and async."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from spendtrace import PriceBook, Span, UsageItem
from spendtrace.server.pricing import PriceEntry
from spendtrace.server.store.sqlite._db import connect, connect_async
from spendtrace.server.store.sqlite._ingest import (
    _UPSERT_ROWS,
    prepare_batch,
    read_offsets,
    read_offsets_async,
    write_batch_async,
    write_batch_sync,
)

BOOK = PriceBook.default()
DAY = 86_400


def ns(y: int, m: int, d: int, h: int = 12, mi: int = 0) -> int:
    """A UTC wall-clock time in ns."""
    return int(datetime(y, m, d, h, mi, tzinfo=UTC).timestamp()) * 1_000_000_000


def item_nano(item: UsageItem, at_ns: int) -> int | None:
    """Independent unweighted cost from the entry's published Decimal rates (exact, half-even)."""
    entry: PriceEntry | None = BOOK.entry_for(item.key, at_ns)
    if entry is None:
        return None
    usd = Fraction(0)
    for units, rate, per in (
        (item.count, entry.per_request, 1),
        (item.input_tokens, entry.per_1m_input_tokens, 10**6),
        (item.output_tokens, entry.per_1m_output_tokens, 10**6),
        (item.cache_read_tokens, entry.per_1m_cache_read_tokens, 10**6),
        (item.cache_write_tokens, entry.per_1m_cache_write_tokens, 10**6),
        (item.cache_write_1h_tokens, entry.per_1m_cache_write_1h_tokens, 10**6),
        (item.bytes, entry.per_gb, 2**30),
        (item.gb_seconds, entry.per_gb_second, 1),
    ):
        if units:
            if rate is None:
                return None
            usd += Fraction(units) * Fraction(rate) / per
    return round(usd * 10**9)


def lambda_nano(span: Span) -> int:
    """Independent Lambda compute cost: MB/1024 x ceil(ms)/1000 GB-s at the GB-second rate."""
    entry = BOOK.entry_for("lambda_gb_second", span.start_ns)
    assert entry is not None and entry.per_gb_second is not None
    ms = -(-span.duration_ns // 1_000_000)
    return round(Fraction(span.lambda_memory_mb, 1024) * Fraction(ms, 1000) * Fraction(entry.per_gb_second) * 10**9)


def span_items(span: Span) -> list[tuple[str, str, int | None]]:
    """(key, service, unweighted cost) of each item the writer must price, including Lambda compute."""
    out = [(i.key, i.service or BOOK.service_of(i.key), item_nano(i, span.start_ns)) for i in span.usage]
    if span.lambda_memory_mb and span.parent_id is None:
        out.append(("lambda_gb_second", "lambda", lambda_nano(span)))
    return out


def wcost(weight: float, c: int) -> int:
    """Weighted cost: exact product with the weight's binary value, rounded half-even."""
    return round(Fraction(weight) * c)


def make_spans(n_requests: int, seed: int = 7) -> list[Span]:
    """Request trees over several days (either side of the DynamoDB price cut), tenants, weights, Lambda roots."""
    rng = random.Random(seed)
    starts = [ns(2024, 10, 31, 23, 59), ns(2024, 11, 1, 0, 1), ns(2026, 3, 1, 9, 30), ns(2026, 3, 2, 17, 45)]
    spans: list[Span] = []
    for r in range(n_requests):
        rid = f"req-{seed}-{r}"
        t = rng.choice(starts) + rng.randrange(0, 120) * 1_000_000_000
        user = rng.choice(["tenant-acme", "tenant-globex", None])
        weight = rng.choice([1.0, 1.0, 4.0, 2.5])
        root = Span(
            f"{rid}-root",
            None,
            rid,
            "api",
            endpoint="/api/search",
            user_id=user,
            start_ns=t,
            duration_ns=rng.randrange(1, 900_000_000),
            weight=weight,
            path=("api",),
            lambda_memory_mb=rng.choice([0, 512]),
            usage=(UsageItem("aws_lambda_request", count=1.0),),
        )
        search = Span(
            f"{rid}-search",
            root.span_id,
            rid,
            "search",
            endpoint="/api/search",
            user_id=user,
            start_ns=t + 1000,
            duration_ns=5_000_000,
            weight=weight,
            error=rng.random() < 0.2,
            path=("api", "search"),
            usage=(
                UsageItem("dynamodb_read", count=float(rng.randint(1, 9)) / 2),
                UsageItem(
                    "bedrock_claude_3_haiku", input_tokens=rng.randint(1, 900), output_tokens=rng.randint(1, 300)
                ),
            ),
        )
        details = Span(
            f"{rid}-details",
            search.span_id,
            rid,
            "product_details",
            user_id=user,
            start_ns=t + 2000,
            duration_ns=1_000_000,
            weight=weight,
            path=("api", "search", "product_details"),
            usage=(
                UsageItem("s3_get", count=2.0),
                UsageItem("vector_db_query", service="vectordb", count=3.0),  # no price: unpriced
            ),
        )
        spans += [root, search, details]
    return spans


def request_heads(batches: list[list[Span]]) -> set[str]:
    """Span ids each request is counted at: its earliest root in the first batch storing it, else its earliest span."""
    stored: set[str] = set()
    heads: dict[str, Span] = {}
    for batch in batches:
        fresh: dict[str, list[Span]] = defaultdict(list)
        for s in batch:
            if s.span_id not in stored:
                stored.add(s.span_id)
                fresh[s.request_id].append(s)
        for rid, group in fresh.items():
            if rid not in heads:
                roots = [s for s in group if s.parent_id is None]
                heads[rid] = min(roots or group, key=lambda s: s.start_ns)
    return {h.span_id for h in heads.values()}


def expected(spans: list[Span], batches: list[list[Span]] | None = None) -> dict[str, Any]:
    """Every total the writer must produce, computed independently from the spans (written as ``batches``)."""
    heads = request_heads([spans] if batches is None else batches)
    out: dict[str, Any] = {
        "span": {},
        "rollup": defaultdict(lambda: [0, 0.0, 0, 0, 0, 0]),
        "var": defaultdict(float),
        "service": defaultdict(lambda: [0, 0]),
        "loaded": defaultdict(lambda: [0, 0]),
        "request": defaultdict(lambda: [0, 0, 0]),
        "unpriced": defaultdict(lambda: [0, 0.0]),
    }
    for s in spans:
        items = span_items(s)
        cost = sum(wcost(s.weight, c) for _, _, c in items if c is not None)
        unpriced = sum(1 for _, _, c in items if c is None)
        out["span"][s.span_id] = (cost, unpriced)
        for grain in (60, 3600, DAY):
            bucket = s.start_ns // 10**9 // grain * grain
            key = (grain, bucket, s.feature, s.user_id or "", s.endpoint or "")
            r = out["rollup"][key]
            r[0] += cost
            r[1] += s.weight
            r[2] += 1
            r[3] += int(s.error)
            r[4] += unpriced
            r[5] += int(s.span_id in heads)
            unweighted = sum(c for _, _, c in items if c is not None)
            out["var"][key] += s.weight * (s.weight - 1) * unweighted**2
            for _key, svc, c in items:
                sr = out["service"][(*key, svc)]
                sr[0] += 0 if c is None else wcost(s.weight, c)
                sr[1] += int(c is None)
            for f in dict.fromkeys((*s.path, s.feature)):
                lr = out["loaded"][(grain, bucket, f)]
                lr[0] += cost
                lr[1] += 1
        q = out["request"][s.request_id]
        q[0] += cost
        q[1] += 1
        q[2] += unpriced
        for key, svc, c in items:
            if c is None:
                u = out["unpriced"][(key, svc, s.feature)]
                u[0] += 1
                u[1] += next(i.count for i in s.usage if i.key == key)
    return out


GRAINS = {60: "minute", 3600: "hour", DAY: "day"}


def assert_db_matches(conn: sqlite3.Connection, spans: list[Span], batches: list[list[Span]] | None = None) -> None:
    """The database holds exactly the independent computation's numbers, to the nano-dollar."""
    exp = expected(spans, batches)
    got_spans = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT span_id, cost_nano, unpriced FROM spans")}
    assert got_spans == exp["span"]
    for grain, name in GRAINS.items():
        rows = conn.execute(
            f"SELECT bucket, feature, user_id, endpoint, cost_nano, calls, spans, errors, unpriced, requests "
            f"FROM rollup_{name} WHERE service = ''"
        ).fetchall()
        got = {(grain, *r[:4]): [r[4], r[5], r[6], r[7], r[8], r[9]] for r in rows}
        want = {k: v for k, v in exp["rollup"].items() if k[0] == grain}
        assert got == want, name
        var = dict(
            ((grain, *r[:4]), r[4])
            for r in conn.execute(
                f"SELECT bucket, feature, user_id, endpoint, var_nano2 FROM rollup_{name} WHERE service = ''"
            )
        )
        assert var == pytest.approx({k: v for k, v in exp["var"].items() if k[0] == grain}, rel=1e-12), name
        assert any(v > 0 for v in var.values())  # sampled spans contribute a standard error
        rows = conn.execute(
            f"SELECT bucket, feature, user_id, endpoint, service, cost_nano, unpriced, calls, spans, errors "
            f"FROM rollup_{name} WHERE service != ''"
        ).fetchall()
        assert all(r[7:] == (0.0, 0, 0) for r in rows)
        got_svc = {(grain, *r[:5]): [r[5], r[6]] for r in rows}
        assert got_svc == {k: v for k, v in exp["service"].items() if k[0] == grain}, name
        loaded = {
            (grain, b, f): [c, n]
            for b, f, c, n in conn.execute(f"SELECT bucket, feature, cost_nano, spans FROM loaded_{name}")
        }
        assert loaded == {k: v for k, v in exp["loaded"].items() if k[0] == grain}
    reqs = {
        r[0]: [r[1], r[2], r[3]] for r in conn.execute("SELECT request_id, cost_nano, spans, unpriced FROM requests")
    }
    assert reqs == dict(exp["request"])
    unpriced = {
        (r[0], r[1], r[2]): [r[3], r[4]]
        for r in conn.execute("SELECT key, service, feature, items, count FROM unpriced_usage")
    }
    assert unpriced == dict(exp["unpriced"])


def write_in_batches(conn: sqlite3.Connection, spans: list[Span], size: int) -> None:
    """Prepare and write ``spans`` in batches of ``size``."""
    for i in range(0, len(spans), size):
        write_batch_sync(conn, prepare_batch(spans[i : i + size], BOOK))


def test_written_totals_equal_an_independent_computation(db_path: Path) -> None:
    """Spans, every rollup grain, service rows, fully-loaded, request and unpriced totals are exact."""
    spans = make_spans(120)
    random.Random(1).shuffle(spans)  # children before parents, requests split across batches
    conn = connect(db_path)
    write_in_batches(conn, spans, 37)
    # a request counts once, at its root or (root not in its first batch) at its earliest span there
    assert_db_matches(conn, spans, [spans[i : i + 37] for i in range(0, len(spans), 37)])
    # the October 2024 DynamoDB read cost twice the November one for the same units
    assert BOOK.price(UsageItem("dynamodb_read", count=2.0), ns(2024, 10, 31, 23, 59))[0] == 500
    assert BOOK.price(UsageItem("dynamodb_read", count=2.0), ns(2024, 11, 1, 0, 1))[0] == 250


def test_one_large_batch_upserts_many_rows_per_statement_exactly(db_path: Path) -> None:
    """A batch with more rollup / request rows than one multi-row upsert takes stores the same exact totals."""
    spans = make_spans(110, seed=5)
    batch = prepare_batch(spans, BOOK)
    sizes = [len(batch.requests), *(len(d) for d in batch.rollups.values())]
    assert all(n > _UPSERT_ROWS for n in sizes) and any(n % _UPSERT_ROWS for n in sizes)  # full and partial groups
    conn = connect(db_path)
    write_batch_sync(conn, batch)
    assert_db_matches(conn, spans)


def test_replayed_and_repeated_spans_are_counted_once(db_path: Path) -> None:
    """A whole batch replayed, a half-overlapping batch and in-batch repeats add nothing twice."""
    spans = make_spans(60, seed=3)
    conn = connect(db_path)
    first = write_batch_sync(conn, prepare_batch(spans[:100], BOOK))
    assert (first.new_spans, first.duplicate_spans) == (100, 0)
    again = write_batch_sync(conn, prepare_batch(spans[:100], BOOK))
    assert (again.new_spans, again.duplicate_spans, again.cost_nano) == (0, 100, 0)
    overlap = spans[50:] + spans[60:70]
    res = write_batch_sync(conn, prepare_batch(overlap, BOOK))
    assert (res.new_spans, res.duplicate_spans) == (len(spans) - 100, 50 + 10)
    assert res.cost_nano == sum(expected(spans[100:])["span"][s.span_id][0] for s in spans[100:])
    assert_db_matches(conn, spans)


async def test_async_writer_stores_exactly_what_the_sync_writer_stores(tmp_path: Path) -> None:
    """The same batches (with a replay) through aiosqlite and sqlite3 leave identical tables."""
    spans = make_spans(40, seed=5)
    sync_conn = connect(tmp_path / "sync.db")
    aconn = await connect_async(tmp_path / "async.db")
    try:
        for chunk in (spans[:70], spans[40:], spans[:10]):
            a = write_batch_sync(sync_conn, prepare_batch(chunk, BOOK), offsets=[("g", "t", 0, len(chunk))])
            b = await write_batch_async(aconn, prepare_batch(chunk, BOOK), offsets=[("g", "t", 0, len(chunk))])
            assert a == b
        assert await read_offsets_async(aconn, "g", "t") == {0: 10}
    finally:
        await aconn.close()
    async_conn = connect(tmp_path / "async.db")
    for table in ("spans", "rollup_minute", "rollup_hour", "rollup_day", "loaded_day", "requests", "unpriced_usage"):
        q = f"SELECT * FROM {table} ORDER BY 1, 2, 3"
        assert sync_conn.execute(q).fetchall() == async_conn.execute(q).fetchall(), table
    assert_db_matches(async_conn, spans)


def test_offsets_and_dead_letters_commit_with_the_batch(db_path: Path) -> None:
    """Offsets move forward per partition and dead letters are idempotent on (topic, partition, offset)."""
    conn = connect(db_path)
    spans = make_spans(2)
    dl = [
        ("spendtrace.spans", 1, 17, b"k", b"\xff\x00", "DecodeError: bad"),
        ("spendtrace.spans", 1, 18, None, b"", "x"),
    ]
    write_batch_sync(conn, prepare_batch(spans, BOOK), offsets=[("g", "spendtrace.spans", 0, 5)], dead_letters=dl)
    write_batch_sync(
        conn,
        prepare_batch([], BOOK),
        offsets=[("g", "spendtrace.spans", 0, 9), ("g", "spendtrace.spans", 1, 19)],
        dead_letters=dl,
    )
    assert read_offsets(conn, "g", "spendtrace.spans") == {0: 9, 1: 19}
    assert read_offsets(conn, "other", "spendtrace.spans") == {}
    rows = conn.execute('SELECT partition, "offset", key, value, reason FROM dead_letters ORDER BY "offset"').fetchall()
    assert rows == [(1, 17, b"k", b"\xff\x00", "DecodeError: bad"), (1, 18, None, b"", "x")]


def test_a_failing_batch_leaves_no_trace(db_path: Path) -> None:
    """If any statement of the transaction fails, no span, rollup or offset of the batch is stored."""
    conn = connect(db_path)
    bad_offsets: list[Any] = [(None, "t", 0, 1)]  # NOT NULL violation after the spans went in
    with pytest.raises(sqlite3.IntegrityError):
        write_batch_sync(conn, prepare_batch(make_spans(5), BOOK), offsets=bad_offsets)
    for table in (
        "spans",
        "rollup_minute",
        "rollup_day",
        "loaded_hour",
        "requests",
        "consumer_offsets",
        "unpriced_usage",
    ):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert not conn.in_transaction
    spans = make_spans(5)
    write_batch_sync(conn, prepare_batch(spans, BOOK))
    assert_db_matches(conn, spans)


def test_usage_json_records_units_costs_and_price_versions(db_path: Path) -> None:
    """Each stored usage item carries its units, weighted and unweighted cost, priced flag and entry version."""
    t = ns(2024, 10, 15)
    span = Span(
        "s1",
        None,
        "r1",
        "checkout",
        start_ns=t,
        duration_ns=1_000_001,  # 1.000001 ms: billed as 2 ms
        weight=2.5,
        lambda_memory_mb=1024,
        usage=(UsageItem("dynamodb_write", count=3.0), UsageItem("mystery_api", count=1.0)),
    )
    conn = connect(db_path)
    write_batch_sync(conn, prepare_batch([span], BOOK))
    usage_text, cost, unpriced, var, version = conn.execute(
        "SELECT usage, cost_nano, unpriced, var_nano2, price_version FROM spans"
    ).fetchone()
    usage = json.loads(usage_text)
    assert usage[0] == {
        "key": "dynamodb_write",
        "service": "dynamodb",
        "count": 3.0,
        "cost_nano": 9375,
        "unit_cost_nano": 3750,
        "priced": True,
        "price_version": "dynamodb_write@1970-01-01:static",
    }
    assert usage[1]["priced"] is False and usage[1]["unit_cost_nano"] is None and usage[1]["cost_nano"] == 0
    assert usage[2]["key"] == "lambda_gb_second" and usage[2]["billed_ms"] == 2 and usage[2]["service"] == "lambda"
    compute = lambda_nano(span)
    assert usage[2]["unit_cost_nano"] == compute == 33  # 1 GB x 0.002 s x $0.0000166667
    assert cost == wcost(2.5, 3750) + wcost(2.5, compute) and unpriced == 1
    assert var == pytest.approx(2.5 * 1.5 * (3750 + compute) ** 2)
    assert version == BOOK.version
    assert conn.execute("SELECT count(*) FROM price_versions WHERE version = ?", (BOOK.version,)).fetchone()[0] == 1


def test_request_rows_take_the_roots_endpoint_and_user(db_path: Path) -> None:
    """A request's root feature, endpoint and tenant come from its root span even when the root arrives last."""
    t = ns(2026, 1, 5)
    child = Span("c", "r", "req", "worker", endpoint="/internal", user_id="svc", start_ns=t + 10, duration_ns=5)
    root = Span("r", None, "req", "api", endpoint="/api/x", user_id="tenant-a", start_ns=t, duration_ns=100)
    conn = connect(db_path)
    write_batch_sync(conn, prepare_batch([child], BOOK))
    assert conn.execute("SELECT root_feature, endpoint, user_id FROM requests").fetchone() == (None, "/internal", "svc")
    write_batch_sync(conn, prepare_batch([root], BOOK))
    row = conn.execute("SELECT root_feature, endpoint, user_id, start_ns, end_ns, spans FROM requests").fetchone()
    assert row == ("api", "/api/x", "tenant-a", t, t + 100, 2)


def test_batch_summary_names_the_touched_scopes() -> None:
    """The write result tells alert evaluation which features, tenants and endpoints changed."""
    spans = make_spans(10, seed=11)
    batch = prepare_batch(spans, BOOK)
    assert batch.summary.features == {"api", "search", "product_details"}
    assert batch.summary.users == {s.user_id for s in spans if s.user_id}
    assert batch.summary.endpoints == {"/api/search"}
    assert batch.summary.min_start_ns == min(s.start_ns for s in spans)
    assert batch.summary.max_start_ns == max(s.start_ns for s in spans)


@pytest.mark.parametrize(
    "span",
    [
        Span("s", None, "r", "f", usage=(UsageItem("dynamodb_read", count=float("inf")),)),
        Span("s", None, "r", "f", usage=(UsageItem("mystery", count=float("inf")),)),
        Span("s", None, "r", "f", usage=(UsageItem("lambda_gb_second", gb_seconds=float("inf")),)),
        Span("s", None, "r", "f", weight=float("inf")),
    ],
)
def test_infinite_units_or_weights_are_refused(span: Span) -> None:
    """Infinity passes the wire schema's bounds, so preparation refuses it rather than store an infinite total."""
    with pytest.raises(ValueError, match=r"non-finite|weight"):
        prepare_batch([span], BOOK)


def test_an_entry_without_a_service_never_lands_in_the_span_level_row(db_path: Path) -> None:
    """A price with no service (e.g. a new key set through api_costs) gets one from its key, never ''."""
    book = BOOK.with_overrides([PriceEntry("_internal_api", "", per_request=Decimal("0.000001"))])
    span = Span("s", None, "r", "f", start_ns=ns(2026, 1, 1), usage=(UsageItem("_internal_api", count=3.0),))
    conn = connect(db_path)
    write_batch_sync(conn, prepare_batch([span], book))
    rows = dict(conn.execute("SELECT service, cost_nano FROM rollup_day").fetchall())
    assert rows == {"": 3000, "_internal_api": 3000}
    assert "" not in {e.service for e in book.entries()}


def test_concurrent_writers_of_overlapping_batches_count_each_span_once(db_path: Path) -> None:
    """Two connections writing the same spans at once (a rebalance overlap) still store exact totals."""
    import threading

    spans = make_spans(90, seed=17)
    chunks = [spans[i : i + 30] for i in range(0, len(spans), 30)]
    connect(db_path).close()
    errors: list[BaseException] = []

    def writer(order: list[list[Span]]) -> None:
        conn = connect(db_path)
        try:
            for chunk in order:
                write_batch_sync(conn, prepare_batch(chunk, BOOK))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=writer, args=(o,)) for o in (chunks, chunks[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_db_matches(connect(db_path), spans)
