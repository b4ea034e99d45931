"""ClickHouse schema 8: the newest requests are read from ``request_index`` (ordered by each request's first day).

The newest page reads back from the newest day only as far as it must. It is checked against the table keyed
by request id (``requests``, read whole, the reading it replaced) and against the spans themselves: over pages,
offsets and searches, with a request whose late span started days before the day it was first stored, after a
restatement and its undo, a replayed batch, retention, and a migration from version 7.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from store_backends import chdb_url
from test_clickhouse import BOOK, NANO, T0, spans

from spendtrace.schema import Span, UsageItem
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.model.dashboard import RequestRow
from spendtrace.server.store.base import open_dashboard, open_store
from spendtrace.server.store.clickhouse import _client
from spendtrace.server.store.clickhouse._admin import apply_retention, restate_historical_costs, undo_restatement
from spendtrace.server.store.clickhouse._client import Conn, connect
from spendtrace.server.store.clickhouse._ddl import _REQUESTS_MV, SCHEMA_VERSION
from spendtrace.server.store.clickhouse._ingest import SPAN_NAMES, write_batch
from spendtrace.server.store.clickhouse._reads import request_rows
from spendtrace.server.store.sqlite._sql import Filters

DAY = 86_400 * NANO
#: (limit, offset, search) of the pages compared: the first day's worth, pages reaching back weeks, searches
#: and 41 / 3 at 39: the last two days' 40 requests and one more, where a late request read with them must not
#: take the place of an older one
PAGES = [(5, 0, ""), (40, 0, ""), (41, 0, ""), (3, 39, ""), (10, 30, ""), (200, 0, ""), (25, 90, ""), (500, 0, ""),
         (15, 0, "/e2"), (200, 0, "u3"), (7, 3, "late")]  # fmt: skip


def history(days: int = 60) -> list[list[Span]]:
    """A batch per day for ``days`` days before T0 (three requests each, more on the last days), oldest first."""
    out = []
    for d in range(days, -1, -1):
        n = 6 if d > 2 else 40
        out.append([msgspec.structs.replace(s, start_ns=s.start_ns - d * DAY) for s in spans(f"d{d}-", n)])
    return out


def page(url: str, limit: int, offset: int, search: str) -> list[RequestRow]:
    async def read() -> list[RequestRow]:
        reads = await open_dashboard(url, clock=lambda: T0 + DAY, monotonic=lambda: 1.0).open()
        try:
            return await reads.requests("recent", limit, offset=offset, search=search)
        finally:
            await reads.close()

    return asyncio.run(read())


def by_id(conn: Conn, limit: int, offset: int, search: str) -> list[tuple[Any, ...]]:
    """The same page from ``requests`` read whole (the reading ``request_index`` replaced)."""
    f = Filters(**dict.fromkeys(Filters.__dataclass_fields__))  # type: ignore[arg-type]
    sql, params = request_rows(f, limit, "recent", offset, search=search)
    return conn.tuples(sql, params)


def as_tuples(rows: list[RequestRow]) -> list[tuple[Any, ...]]:
    return [(r.request_id, r.endpoint or None, r.user_id or None, r.root_feature or None, r.start_ns, r.end_ns,
             r.cost_nano, r.spans, r.errors, r.unpriced) for r in rows]  # fmt: skip


def assert_pages_agree(url: str, conn: Conn) -> None:
    """The dashboard's pages and the API's (``get_request_cost``, unsearched) equal ``requests`` read whole."""
    with open_store(url) as store:
        for limit, offset, search in PAGES:
            expected = [row[:10] for row in by_id(conn, limit, offset, search)]
            assert as_tuples(page(url, limit, offset, search)) == expected, (limit, offset, search)
            if not search:
                api = store.get_request_cost(limit, "recent", offset=offset)
                assert [r["request_id"] for r in api] == [row[0] for row in expected]
                assert [(r["start_ns"], r["cost_nano"]) for r in api] == [(row[4], row[6]) for row in expected]


def index_equals_requests(conn: Conn) -> None:
    """``request_index`` merged per request equals ``requests`` merged per request, every column."""
    cols = ("min(start_ns), max(end_ns), sum(cost_nano), sum(spans), sum(errors), sum(unpriced), "
            "round(sum(var_nano2)), any(root_endpoint), any(root_user_id), any(root_feature)")  # fmt: skip
    index = conn.tuples(f"SELECT request_id, {cols} FROM request_index GROUP BY request_id ORDER BY request_id")
    table = conn.tuples(f"SELECT request_id, {cols} FROM requests GROUP BY request_id ORDER BY request_id")
    assert index == table
    # one key per request: every row of a request shares its day
    assert conn.tuples("SELECT count() FROM (SELECT request_id FROM request_index GROUP BY request_id "
                       "HAVING uniqExact(request_day) > 1)")[0][0] == 0  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, Conn]]:
    url = chdb_url(tmp_path)
    conn = connect(url)
    try:
        for batch in history():
            write_batch(conn, prepare_batch(batch, BOOK))
        yield url, conn
    finally:
        conn.close()


def late_span(start_ns: int) -> Span:
    """A span of request ``late`` (first stored with the newest batch) that started ``start_ns``."""
    return Span("late-2", "late-1", "late", "search", endpoint="/late", user_id="u-late", start_ns=start_ns,
                duration_ns=NANO, usage=(UsageItem("t_read", count=3.0),))  # fmt: skip


def test_pages_equal_the_table_keyed_by_id_and_the_spans(store: tuple[str, Conn]) -> None:
    url, conn = store
    index_equals_requests(conn)
    assert_pages_agree(url, conn)
    # and the order is the spans' own: newest first start, ties by id
    starts: dict[str, int] = {}
    for batch in history():
        for s in batch:
            starts[s.request_id] = min(starts.get(s.request_id, s.start_ns), s.start_ns)
    newest = sorted(starts, key=lambda r: (starts[r], r), reverse=True)
    assert [r.request_id for r in page(url, 120, 0, "")] == newest[:120]


def test_a_late_span_older_than_its_request_day_moves_it_back_exactly(store: tuple[str, Conn]) -> None:
    """A request first stored today gets a span that started 20 days ago in a later batch: it keeps its day as key
    (one row per request), and every page ranks it by its true first start, never among today's requests."""
    url, conn = store
    root = Span("late-1", None, "late", "api", endpoint="/late", user_id="u-late", start_ns=T0 + 600 * NANO,
                duration_ns=NANO, usage=(UsageItem("t_read", count=1.0),))  # fmt: skip
    write_batch(conn, prepare_batch([root], BOOK))
    write_batch(conn, prepare_batch([late_span(T0 - 20 * DAY - 3600 * NANO)], BOOK))
    assert conn.tuples("SELECT DISTINCT request_day FROM request_index WHERE request_id = 'late'") == [
        ((T0 // DAY) * 86_400,)
    ]
    index_equals_requests(conn)
    assert_pages_agree(url, conn)
    shown = [r.request_id for r in page(url, 500, 0, "")]
    assert shown.index("late") > 100  # behind every request of the last 20 days
    assert [r.request_id for r in page(url, 5, 0, "late")] == ["late"]


def test_restatement_undo_replay_and_retention_keep_the_index_equal(store: tuple[str, Conn]) -> None:
    url, conn = store
    rid = restate_historical_costs(conn, factors={"dynamodb": 3.0, "bedrock": 0.5}, start_date="2026-05-27",
                                   end_date="2026-05-29")  # fmt: skip
    index_equals_requests(conn)
    assert_pages_agree(url, conn)
    undo_restatement(conn, rid)
    index_equals_requests(conn)
    assert_pages_agree(url, conn)

    again = history()[-1]  # the newest batch once more, under its own token: deduplicated in both tables
    batch = prepare_batch(again, BOOK)
    write_batch(conn, batch, token="replay-me")
    before = conn.tuples("SELECT sum(cost_nano), sum(spans) FROM request_index")
    write_batch(conn, batch, token="replay-me")
    assert conn.tuples("SELECT sum(cost_nano), sum(spans) FROM request_index") == before
    index_equals_requests(conn)

    apply_retention(conn, now_ns=T0 + 10 * DAY)  # raw data kept 30 days: the first month of requests goes
    left = conn.tuples("SELECT min(start_ns) FROM requests")[0][0]
    assert left >= T0 - 20 * DAY
    index_equals_requests(conn)
    assert_pages_agree(url, conn)


def downgrade_to_7(conn: Conn) -> None:
    """Make a fresh store look like one written by schema 7: no index, no day columns, the old view."""
    sync = {"mutations_sync": 2}
    statements = ("DROP VIEW request_index_mv", "DROP TABLE request_index", "DROP VIEW requests_mv", _REQUESTS_MV,
                  "ALTER TABLE spans DROP COLUMN request_day",
                  "ALTER TABLE requests DROP COLUMN first_day")  # fmt: skip
    for statement in statements:
        conn.command(statement, settings=sync)
    conn.command("ALTER TABLE schema_migrations DELETE WHERE version = 8", settings=sync)


def write_as_schema_7(conn: Conn, batch: list[Span]) -> None:
    """Insert ``batch`` as a worker of schema 7 did: no ``request_day`` column (its request marks left out)."""
    rows = prepare_batch(batch, BOOK)
    width = len(SPAN_NAMES)
    columns = [rows.span_values[i::width] for i in range(width)]
    conn.insert("spans", [*columns, [f"t{batch[0].span_id}"] * len(columns[0])], (*SPAN_NAMES, "batch"))


def test_a_store_at_version_7_is_migrated_and_reads_the_same(tmp_path: Path) -> None:
    url = chdb_url(tmp_path)
    conn = connect(url)
    try:
        downgrade_to_7(conn)
        for batch in history(10):
            write_as_schema_7(conn, batch)
        before = by_id(conn, 500, 0, "")
        assert len(before) == 8 * 3 + 3 * 20  # 3 requests on each older day, 20 on each of the last three

        assert _client.migrate(conn) == SCHEMA_VERSION == 8
        assert _client.migrate(conn) == 8  # nothing more, and the fill is not repeated
        index_equals_requests(conn)
        assert by_id(conn, 500, 0, "") == before
        assert_pages_agree(url, conn)

        # a request stored before the migration keeps the day its rows were filled under
        day = conn.tuples("SELECT min(first_day) FROM requests WHERE request_id = 'd10--r0'")[0][0]
        more = [msgspec.structs.replace(s, span_id="more", start_ns=T0 + DAY) for s in spans("d10-", 1)]
        write_batch(conn, prepare_batch(more, BOOK))
        assert conn.tuples("SELECT DISTINCT request_day FROM request_index WHERE request_id = 'd10--r0'") == [(day,)]
        index_equals_requests(conn)
    finally:
        conn.close()
