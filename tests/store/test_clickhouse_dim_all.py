"""``dim_all`` (ClickHouse schema 4): the all-time figures per dimension value stay equal to the day tables summed.

Fed by views on ``rollup_day`` / ``loaded_day``, so it must follow everything those get: an ingest, a
replay of the same batch (deduplicated), a reprice, a restatement and their undos; and retention, which
deletes day rows (no view sees a delete) after negating them in ``dim_all``, once even when redone.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from store_backends import chdb_url
from test_clickhouse import BOOK, NANO, T0, spans

from spendtrace.errors import StorageError
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import open_store
from spendtrace.server.store.clickhouse._admin import _retire_range, _set_retire, retire_all
from spendtrace.server.store.clickhouse._client import Conn, connect
from spendtrace.server.store.clickhouse._ddl import DIM_ALL_SELECT, DIM_LOADED_SELECT, SCHEMA_VERSION
from spendtrace.server.store.clickhouse._ingest import write_batch

DAY = 86_400
BOOK2 = PriceBook(
    [
        PriceEntry(key="t_read", service="dynamodb", per_request=Decimal("0.0000007")),
        PriceEntry(key="t_llm", service="bedrock", per_1m_input_tokens=Decimal(5), per_1m_output_tokens=Decimal(11)),
        PriceEntry(key="t_unknown", service="other", per_request=Decimal("0.001")),
    ],
    name="ch2",
)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Conn]:
    """A connection to a fresh, migrated database."""
    c = connect(chdb_url(tmp_path))
    try:
        yield c
    finally:
        c.close()


def _norm(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """(dim, service, value) -> sums, floats rounded; keys whose every figure is zero left out (retired values)."""
    out = {}
    for r in rows:
        vals = (r[3], round(r[4], 6), r[5], r[6], r[7], round(r[8], 3), r[9])
        if any(vals):
            out[(str(r[0]), str(r[1]), str(r[2]))] = vals
    return out


def dim_all(conn: Conn) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """What ``dim_all`` holds, aggregated (parts merge lazily)."""
    return _norm(
        conn.tuples(
            "SELECT dim, service, value, sum(cost_nano), sum(calls), sum(spans), sum(errors), sum(unpriced), "
            "sum(var_nano2), sum(requests) FROM dim_all GROUP BY dim, service, value"
        )
    )


def from_days(conn: Conn) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """The same figures summed from the day tables: what ``dim_all`` must equal."""
    return _norm(conn.tuples(DIM_ALL_SELECT.format(where="")) + conn.tuples(DIM_LOADED_SELECT.format(where="")))


def write_three_days(conn: Conn) -> None:
    """Three batches, one a day apart, each the test spans under its own ids."""
    for day in range(3):
        batch = [msgspec.structs.replace(s, start_ns=s.start_ns + day * DAY * NANO) for s in spans(f"d{day}-")]
        write_batch(conn, prepare_batch(batch, BOOK))


def test_after_ingest_it_equals_the_day_rollups(conn: Conn) -> None:
    """Batches of spans over several days: every (dimension, value, service) equals the day rows summed."""
    write_three_days(conn)
    got = dim_all(conn)
    assert got == from_days(conn)
    assert {k[0] for k in got} == {"feature", "user_id", "endpoint", "loaded"}
    total = conn.tuples("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''")[0][0]
    for dim in ("feature", "user_id", "endpoint"):
        assert sum(v[0] for k, v in got.items() if k[0] == dim and k[1] == "") == total


def test_a_replayed_batch_is_not_counted_twice(conn: Conn) -> None:
    """The same batch written again (same token): ``dim_all`` drops it, as every other target does."""
    batch = prepare_batch(spans(), BOOK)
    write_batch(conn, batch)
    once = dim_all(conn)
    write_batch(conn, batch)
    assert dim_all(conn) == once == from_days(conn)


def test_a_replay_after_the_day_rollups_refused_the_block_fills_it_once(conn: Conn) -> None:
    """``rollup_day`` rejected the first attempt: the replay reaches it and, through it, ``dim_all``, once."""
    batch = prepare_batch(spans(), BOOK)
    conn.command("ALTER TABLE rollup_day ADD CONSTRAINT refuse CHECK bucket < -1")
    with pytest.raises(StorageError):
        write_batch(conn, batch)
    conn.command("ALTER TABLE rollup_day DROP CONSTRAINT refuse")
    write_batch(conn, batch)
    write_batch(conn, batch)
    assert dim_all(conn) == from_days(conn)
    assert sum(v[0] for k, v in dim_all(conn).items() if k[:2] == ("feature", "")) == batch.cost_nano


def test_reprice_restatement_and_their_undos_keep_it_equal(tmp_path: Path) -> None:
    """Delta rows of a reprice and of a restatement, and the negations their undos insert, all reach ``dim_all``."""
    url = chdb_url(tmp_path)
    conn = connect(url)
    store = open_store(url)
    try:
        write_batch(conn, prepare_batch(spans(), BOOK))
        before = dim_all(conn)
        rp = store.reprice(start_date="2026-05-28", end_date="2026-05-29", book=BOOK2, who="t", why="rates")
        assert rp.id is not None
        repriced = dim_all(conn)
        assert repriced == from_days(conn) != before
        rid = store.restate_historical_costs(factor=2.0, start_date="2026-05-28", end_date="2026-05-29")
        assert dim_all(conn) == from_days(conn) != repriced
        store.undo_restatement(rid)
        assert dim_all(conn) == from_days(conn) == repriced
        store.undo_restatement(rp.id)
        assert dim_all(conn) == from_days(conn) == before
    finally:
        store.close()
        conn.close()


def test_retention_takes_the_deleted_days_out_once(tmp_path: Path) -> None:
    """Day rows retention deletes leave ``dim_all`` (negated there first); what stays equals the day rows left."""
    url = chdb_url(tmp_path)
    conn = connect(url)
    write_three_days(conn)
    store = open_store(url)
    try:
        store.set_retention(raw_data_days=1, minute_rollups_days=1, hourly_rollups_days=1, daily_rollups_days=2)
        store.apply_retention(now_ns=T0 + 2 * DAY * NANO)  # day 0 goes, days 1 and 2 stay
    finally:
        store.close()
    kept = dim_all(conn)
    assert kept == from_days(conn) and kept
    assert conn.tuples("SELECT count() FROM rollup_day WHERE bucket < %s", (T0 // NANO // DAY * DAY + DAY,)) == [(0,)]
    day_total = conn.tuples("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''")[0][0]
    assert sum(v[0] for k, v in kept.items() if k[:2] == ("feature", "")) == day_total > 0
    conn.close()


def test_a_retirement_cut_short_is_redone_once(tmp_path: Path) -> None:
    """A crash after the negation went in but before ``done`` and the deletes: the next round drops the redo."""
    url = chdb_url(tmp_path)
    conn = connect(url)
    store = open_store(url)
    try:
        write_three_days(conn)
        store.set_retention(raw_data_days=1, minute_rollups_days=1, hourly_rollups_days=1, daily_rollups_days=2)
        now = T0 + 2 * DAY * NANO
        _set_retire(conn, 0, now // NANO - 2 * DAY, "begun")
        assert _retire_range(conn, 0, now // NANO - 2 * DAY) > 0  # ... and the process died here
        retire_all(conn, now // NANO - 2 * DAY)  # the redo of the same range, under the same token: dropped
        store.apply_retention(now_ns=now)
        assert dim_all(conn) == from_days(conn)
        day_total = conn.tuples("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''")[0][0]
        assert sum(v[0] for k, v in dim_all(conn).items() if k[:2] == ("feature", "")) == day_total > 0
    finally:
        store.close()
        conn.close()


def test_the_top_of_all_time_reads_it_and_equals_the_full_aggregate(tmp_path: Path) -> None:
    """``aggregate_by_*(limit=N)`` without filters (the API's top N, from ``dim_all``) is the full ranking cut at N."""
    url = chdb_url(tmp_path)
    conn = connect(url)
    store = open_store(url)
    try:
        write_three_days(conn)
        store.restate_historical_costs(factor=1.5, start_date="2026-05-29", end_date="2026-05-30")
        for read in (store.aggregate_by_feature, store.aggregate_by_user, store.aggregate_by_endpoint):
            full = read()
            assert len(full) > 1
            for n in (0, 1, len(full) - 1, len(full) + 5):
                assert read(limit=n) == full[:n]
    finally:
        store.close()
        conn.close()


def test_a_store_at_version_3_gets_it_filled_from_its_day_rollups(tmp_path: Path) -> None:
    """Opening a store made before ``dim_all`` (schema 3) creates it and fills it from the day tables found."""
    from spendtrace.server.store.clickhouse import _client

    url = chdb_url(tmp_path)
    conn = connect(url)
    try:
        write_three_days(conn)
        for stmt in ("DROP VIEW dim_all_mv", "DROP VIEW dim_loaded_mv", "DROP TABLE dim_all", "DROP VIEW dim_days_mv",
                     "DROP TABLE dim_days"):  # fmt: skip
            conn.command(stmt)
        conn.command("ALTER TABLE schema_migrations DELETE WHERE version >= 4", settings={"mutations_sync": 2})
        assert _client.migrate(conn) == SCHEMA_VERSION
        assert dim_all(conn) == from_days(conn) != {}
        write_batch(conn, prepare_batch(spans("after-"), BOOK))  # and the views feed it from then on
        assert dim_all(conn) == from_days(conn)
    finally:
        conn.close()


def days_of(conn: Conn) -> set[tuple[str, str, int]]:
    """(dim, value, day) of every span row the day rollups hold: what ``dim_days`` must hold."""
    return set(conn.tuples(
        "SELECT DISTINCT d.1, d.2, bucket FROM rollup_day ARRAY JOIN [('feature', toString(feature)),"
        " ('user_id', user_id), ('endpoint', toString(endpoint))] AS d WHERE service = ''"
    ))  # fmt: skip


def dim_days(conn: Conn) -> set[tuple[str, str, int]]:
    """What ``dim_days`` holds (rows repeat until parts merge: as a set)."""
    return set(conn.tuples("SELECT dim, value, bucket FROM dim_days"))


def test_dim_days_follow_ingest_restatement_and_retention(tmp_path: Path) -> None:
    """``dim_days`` (v6) holds each value's days of the day rollups: after ingest, a restatement's delta rows and
    retention; the top of all time's first and last day (read from it) equal the full aggregate's (the day rows)."""
    url = chdb_url(tmp_path)
    conn = connect(url)
    store = open_store(url)
    try:
        write_three_days(conn)
        got = dim_days(conn)
        assert got == days_of(conn) and len({b for _, _, b in got}) == 3
        store.restate_historical_costs(factor=1.5, start_date="2026-05-29", end_date="2026-05-30")
        assert dim_days(conn) == got
        store.set_retention(raw_data_days=1, minute_rollups_days=1, hourly_rollups_days=1, daily_rollups_days=2)
        store.apply_retention(now_ns=T0 + 2 * DAY * NANO)  # day 0 goes
        kept = dim_days(conn)
        assert kept == days_of(conn) and kept < got
        full = store.aggregate_by_user()
        assert store.aggregate_by_user(limit=len(full)) == full
        assert {r["first_seen"] for r in full} != {None}
    finally:
        store.close()
        conn.close()


def test_first_and_last_day_skip_days_retention_is_still_deleting(tmp_path: Path) -> None:
    """Between retention's delete of the day rows and of ``dim_days``' rows, the first day read is the kept one."""
    url = chdb_url(tmp_path)
    conn = connect(url)
    store = open_store(url)
    try:
        write_three_days(conn)
        first_day = T0 // NANO // DAY * DAY
        sync = {"mutations_sync": 2}
        conn.command("ALTER TABLE rollup_day DELETE WHERE bucket < %s", (first_day + DAY,), settings=sync)
        assert any(b < first_day + DAY for _, _, b in dim_days(conn))  # dim_days not yet

        def seen(rows: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
            return {r["endpoint"]: (r["first_seen"], r["last_seen"]) for r in rows}

        full = seen(store.aggregate_by_endpoint())  # from the day rows left (dim_all keeps day 0's sums: not retired)
        assert seen(store.aggregate_by_endpoint(limit=100)) == full
        assert min(f for f, _ in full.values()) == "2026-05-29T00:00:00Z"
    finally:
        store.close()
        conn.close()


def test_a_store_at_version_4_gets_dim_days_filled(tmp_path: Path) -> None:
    """Opening a store made before ``dim_days`` (schema 4) creates it and its view, filled from the day rollups."""
    from spendtrace.server.store.clickhouse import _client

    url = chdb_url(tmp_path)
    conn = connect(url)
    try:
        write_three_days(conn)
        conn.command("DROP VIEW dim_days_mv")
        conn.command("DROP TABLE dim_days")
        conn.command("ALTER TABLE schema_migrations DELETE WHERE version >= 6", settings={"mutations_sync": 2})
        assert _client.migrate(conn) == SCHEMA_VERSION
        assert dim_days(conn) == days_of(conn) != set()
        write_batch(conn, prepare_batch([msgspec.structs.replace(s, start_ns=s.start_ns + 9 * DAY * NANO)
                                         for s in spans("late-")], BOOK))  # fmt: skip
        assert dim_days(conn) == days_of(conn)
    finally:
        conn.close()
