"""ClickHouse schema 7: the request list's endpoint and root feature columns are LowCardinality.

A store at version 6 (plain ``Nullable(String)`` columns) with requests in it is migrated in place: the
types change, every request read answers as before, and the view keeps filling the new columns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
from store_backends import chdb_url
from test_clickhouse import BOOK, NANO, T0, spans
from test_clickhouse_request_index import as_tuples, downgrade_to_7, write_as_schema_7

from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.store.base import open_dashboard
from spendtrace.server.store.clickhouse import _client
from spendtrace.server.store.clickhouse._client import Conn, connect
from spendtrace.server.store.clickhouse._ddl import SCHEMA_VERSION
from spendtrace.server.store.clickhouse._ingest import write_batch
from spendtrace.server.store.clickhouse._reads import request_rows
from spendtrace.server.store.sqlite._sql import Filters

DICTIONARY = "SimpleAggregateFunction(any, LowCardinality(Nullable(String)))"
PLAIN = "SimpleAggregateFunction(any, Nullable(String))"
COLUMNS = ("root_endpoint", "endpoint", "root_feature")


def column_types(conn: Conn) -> dict[str, str]:
    rows = conn.tuples(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'requests'"
        " AND name IN %s",
        ((*COLUMNS, "user_id", "root_user_id"),),
    )
    return {str(name): str(kind) for name, kind in rows}


def request_reads(url: str, now: int) -> list[Any]:
    """Pages of the request list as the dashboard asks for them: both orders, a later page, two searches."""

    async def read() -> list[Any]:
        reads = await open_dashboard(url, clock=lambda: now, monotonic=lambda: 1.0).open()
        try:
            return [
                await reads.requests("recent", 200),
                await reads.requests("cost", 200),
                await reads.requests("recent", 5, offset=5),
                await reads.requests("recent", 200, search="/E1"),  # a search folds case, as on SQLite
                await reads.requests("cost", 200, search="U3"),
            ]
        finally:
            await reads.close()

    return [as_tuples(rows) for rows in asyncio.run(read())]


def table_reads(conn: Conn) -> list[Any]:
    """The same pages from ``requests`` read whole (what schema 7 and older read; no ``request_index``)."""
    f = Filters(**dict.fromkeys(Filters.__dataclass_fields__))  # type: ignore[arg-type]
    pages = [(200, "recent", 0, ""), (200, "cost", 0, ""), (5, "recent", 5, ""), (200, "recent", 0, "/e1"),
             (200, "cost", 0, "u3")]  # fmt: skip
    return [[row[:10] for row in conn.tuples(*request_rows(f, limit, order, offset, search=search))]
            for limit, order, offset, search in pages]  # fmt: skip


def test_a_fresh_store_has_the_dictionary_columns(tmp_path: Path) -> None:
    conn = connect(chdb_url(tmp_path))
    try:
        types = column_types(conn)
    finally:
        conn.close()
    assert {c: types[c] for c in COLUMNS} == dict.fromkeys(COLUMNS, DICTIONARY)
    assert types["user_id"] == types["root_user_id"] == PLAIN  # 100,000 tenants: no dictionary


def test_a_store_at_version_6_is_migrated_with_its_requests_read_the_same(tmp_path: Path) -> None:
    url = chdb_url(tmp_path)
    now = T0 + 3600 * NANO
    conn = connect(url)
    try:
        settings = {"mutations_sync": 2}
        downgrade_to_7(conn)
        conn.command(
            "ALTER TABLE requests" + ",".join(f" MODIFY COLUMN {c} {PLAIN}" for c in COLUMNS), settings=settings
        )
        conn.command("ALTER TABLE schema_migrations DELETE WHERE version = 7", settings=settings)
        write_as_schema_7(conn, spans("a-"))
        write_as_schema_7(conn, spans("b-", 30))
        assert {c: column_types(conn)[c] for c in COLUMNS} == dict.fromkeys(COLUMNS, PLAIN)
        before = table_reads(conn)
        assert all(before) and len(before[0]) == 35  # 20 + 15 requests, all listed

        assert _client.migrate(conn) == SCHEMA_VERSION
        assert {c: column_types(conn)[c] for c in COLUMNS} == dict.fromkeys(COLUMNS, DICTIONARY)
        assert table_reads(conn) == before
        assert request_reads(url, now) == before  # and the dashboard (the newest from request_index) agrees

        # the view fills the new columns: a later request shows its endpoint and root feature
        late = [msgspec.structs.replace(s, start_ns=s.start_ns + 3000 * NANO) for s in spans("c-", 2)]
        write_batch(conn, prepare_batch(late, BOOK))
        newest = request_reads(url, now)[0][0]
        assert (newest[0], newest[1], newest[3]) == ("c--r0", "/e0", "api")
    finally:
        conn.close()
