"""The ClickHouse backend's own guarantees, on the real engine (chDB in the session's directory).

What the contract suite cannot see through the interface: the materialized views compute the same
rollups as ``prepare_batch`` does in Python, a batch inserted twice (same token) is stored once in
``spans`` *and every view's target*, a span already stored by another batch is not counted again,
and Kafka offsets come back as written. Plus one test against a real server, run only when
``SPENDTRACE_TEST_CLICKHOUSE_URL`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from store_backends import chdb_url

from spendtrace.errors import StorageError
from spendtrace.schema import Span, UsageItem
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.base import open_store
from spendtrace.server.store.clickhouse._client import Conn, connect, parse_url
from spendtrace.server.store.clickhouse._ingest import (
    SPAN_NAMES,
    kafka_token,
    read_offsets,
    spans_token,
    write_batch,
)

NANO = 10**9
T0 = 1_779_966_000 * NANO  # 2026-05-28T11:00:00Z
BOOK = PriceBook(
    [
        PriceEntry(key="t_read", service="dynamodb", per_request=Decimal("0.00000025")),
        PriceEntry(key="t_llm", service="bedrock", per_1m_input_tokens=Decimal(3), per_1m_output_tokens=Decimal(15)),
    ],
    name="ch",
)
#: every table an ingest writes (spans and each materialized view's target)
TARGETS = (
    "spans",
    "rollup_minute",
    "rollup_hour",
    "rollup_day",
    "loaded_minute",
    "loaded_hour",
    "loaded_day",
    "requests",
    "request_index",
    "unpriced_usage",
    "dim_all",
    "dim_days",
)


def spans(prefix: str = "s", n: int = 40) -> list[Span]:
    """Requests of two spans over several minutes: sampled ones, several services, unpriced and Lambda usage."""
    out = []
    for i in range(n):
        t = T0 + i * 37 * NANO
        rid, root = f"{prefix}-r{i // 2}", f"{prefix}{i - i % 2}"
        usage = (UsageItem("t_read", count=float(i % 5)), UsageItem("t_llm", input_tokens=i, output_tokens=2 * i))
        if i % 7 == 0:
            usage += (UsageItem("t_unknown", count=1.0, input_tokens=3),)
        out.append(
            Span(
                f"{prefix}{i}",
                None if i % 2 == 0 else root,
                rid,
                "api" if i % 2 == 0 else "search",
                endpoint=f"/e{i // 2 % 3}",  # a request's scope: the same on its spans
                user_id=None if i // 2 % 5 == 0 else f"u{i // 2 % 4}",
                start_ns=t,
                duration_ns=NANO,
                error=i % 6 == 0,
                usage=usage,
                weight=1.0 if i % 3 else 4.0,
                path=("api",) if i % 2 == 0 else ("api", "search"),
                lambda_memory_mb=512 if i % 8 == 0 else 0,
            )
        )
    return out


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Conn]:
    """A connection to a fresh, migrated database."""
    c = connect(chdb_url(tmp_path))
    try:
        yield c
    finally:
        c.close()


def snapshot(conn: Conn) -> dict[str, Any]:
    """Every target table aggregated (parts merge lazily): what a reader would see."""
    return {
        "spans": conn.tuples("SELECT count(), sum(cost_nano), uniqExact(span_id) FROM spans"),
        **{
            f"rollup_{g}": conn.tuples(
                f"SELECT bucket, feature, user_id, endpoint, service, sum(cost_nano), sum(calls), sum(spans), "
                f"sum(errors), sum(unpriced), sum(var_nano2), sum(requests) FROM rollup_{g} "
                "GROUP BY ALL ORDER BY ALL"
            )
            for g in ("minute", "hour", "day")
        },
        **{
            f"loaded_{g}": conn.tuples(
                f"SELECT bucket, feature, sum(cost_nano), sum(calls), sum(spans), sum(var_nano2) FROM loaded_{g} "
                "GROUP BY ALL ORDER BY ALL"
            )
            for g in ("minute", "hour", "day")
        },
        "requests": conn.tuples(
            "SELECT request_id, sum(cost_nano), sum(spans), min(start_ns), max(end_ns) FROM requests "
            "GROUP BY ALL ORDER BY ALL"
        ),
        "request_index": conn.tuples(
            "SELECT request_day, request_id, sum(cost_nano), sum(spans), min(start_ns), max(end_ns) FROM request_index "
            "GROUP BY ALL ORDER BY ALL"
        ),
        "unpriced_usage": conn.tuples(
            "SELECT key, sum(items), sum(count) FROM unpriced_usage GROUP BY ALL ORDER BY ALL"
        ),
        "dim_all": conn.tuples(
            "SELECT dim, service, value, sum(cost_nano), sum(calls), sum(spans), sum(errors), sum(unpriced), "
            "sum(requests) FROM dim_all GROUP BY ALL ORDER BY ALL"
        ),
    }


def test_views_compute_the_rollups_prepare_batch_computes(conn: Conn) -> None:
    """Minute / hour / day and fully-loaded rollups, requests and unpriced usage equal the Python deltas."""
    batch = prepare_batch(spans(), BOOK)
    write_batch(conn, batch)
    for g in ("minute", "hour", "day"):
        rows = conn.tuples(
            "SELECT bucket, toString(feature), user_id, toString(endpoint), toString(service), sum(cost_nano), "
            "sum(calls), sum(spans), sum(errors), sum(unpriced), sum(var_nano2) "
            f"FROM rollup_{g} GROUP BY ALL"
        )
        got = {r[:5]: [*r[5:10], pytest.approx(r[10])] for r in rows}
        assert got == {k: v[:6] for k, v in batch.rollups[g].items()}
        loaded = conn.tuples(
            f"SELECT bucket, toString(feature), sum(cost_nano), sum(calls), sum(spans), sum(var_nano2) "
            f"FROM loaded_{g} GROUP BY ALL"
        )
        assert {r[:2]: [r[2], r[3], r[4], pytest.approx(r[5])] for r in loaded} == batch.loaded[g]
    requests = conn.tuples(
        "SELECT request_id, any(root_feature), min(start_ns), max(end_ns), sum(cost_nano), sum(spans), "
        "sum(errors), sum(unpriced) FROM requests GROUP BY request_id"
    )
    assert {r[0]: list(r[1:]) for r in requests} == {k: [v[2], *v[3:9]] for k, v in batch.requests.items()}
    unpriced = conn.tuples(
        "SELECT key, toString(service), toString(feature), sum(items), sum(count), sum(input_tokens), "
        "sum(output_tokens), sum(bytes), min(first_ns), max(last_ns) FROM unpriced_usage GROUP BY ALL"
    )
    assert {r[:3]: list(r[3:]) for r in unpriced} == batch.unpriced
    # every request counted once, at its head span's '' row
    assert conn.tuples("SELECT sum(requests) FROM rollup_day WHERE service = ''") == [(20,)]


def test_the_same_batch_twice_is_stored_once_in_every_table(conn: Conn) -> None:
    """Same token: ``spans`` and every view's target drop the second insert (dedup window on each)."""
    batch = prepare_batch(spans(), BOOK)
    first = write_batch(conn, batch)
    once = snapshot(conn)
    again = write_batch(conn, batch)
    assert snapshot(conn) == once
    assert (first.new_spans, first.cost_nano > 0) == (40, True)
    assert (again.new_spans, again.replayed_spans, again.cost_nano) == (0, 40, 0)
    # and that is ClickHouse's deduplication, not the span-id check: a block under a used token, inserted bare
    settings = {"insert_deduplication_token": first.token, "deduplicate_blocks_in_dependent_materialized_views": 1}
    conn.insert("spans", [[v] for v in batch.span_rows[0]] + [[first.token]], (*SPAN_NAMES, "batch"), settings)
    assert snapshot(conn) == once


@pytest.mark.parametrize(
    ("table", "column"), [("unpriced_usage", "items"), ("loaded_day", "bucket"), ("dim_all", "spans")]
)
def test_a_batch_that_failed_half_way_is_completed_by_its_replay(
    conn: Conn, tmp_path: Path, table: str, column: str
) -> None:
    """An insert stored ``spans`` (and some views' targets) and then failed: the replay fills the rest, doubles none."""
    batch = prepare_batch(spans(), BOOK)
    conn.command(f"ALTER TABLE {table} ADD CONSTRAINT refuse CHECK {column} < -1")  # this target rejects the block
    with pytest.raises(StorageError):
        write_batch(conn, batch)
    # half-applied (no transaction spans the tables): which other targets got the block depends on
    # the order the views run in; this one did not
    assert conn.tuples(f"SELECT count() FROM {table}") == [(0,)]
    conn.command(f"ALTER TABLE {table} DROP CONSTRAINT refuse")
    replay = write_batch(conn, batch)  # the worker re-forms the same batch: the same token
    assert replay.replayed_spans + replay.new_spans == 40
    clean = connect(chdb_url(tmp_path))
    try:
        write_batch(clean, batch)
        assert snapshot(conn) == snapshot(clean)
    finally:
        clean.close()


def test_without_the_window_on_a_target_a_replay_doubles_it(conn: Conn) -> None:
    """The control: views run again for a replayed batch, so a target without the window counts it twice."""
    batch = prepare_batch(spans(), BOOK)
    conn.command("ALTER TABLE rollup_minute MODIFY SETTING non_replicated_deduplication_window = 0")
    write_batch(conn, batch)
    write_batch(conn, batch)  # the same token: spans and every other target drop it
    sql = "SELECT sum(cost_nano) FROM rollup_{} WHERE service = ''"
    minute, day = (conn.tuples(sql.format(g))[0][0] for g in ("minute", "day"))
    assert (minute, day) == (2 * batch.cost_nano, batch.cost_nano)
    assert conn.tuples("SELECT count() FROM spans") == [(40,)]


def test_every_target_has_the_deduplication_window(conn: Conn) -> None:
    """Without the window on a view's target, a retried insert would double its rollups."""
    rows = conn.tuples(
        "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() AND name IN %s",
        (TARGETS,),
    )
    assert {name for name, q in rows if "non_replicated_deduplication_window = 1000" in q} == set(TARGETS)


def test_a_span_stored_by_another_batch_is_not_counted_again(conn: Conn, tmp_path: Path) -> None:
    """Spans are idempotent on span_id across batches: the overlap is left out, reported, and not counted."""
    first = spans()
    write_batch(conn, prepare_batch(first[:30], BOOK))
    result = write_batch(conn, prepare_batch(first[20:], BOOK))  # 10 stored already, 10 new
    assert (result.new_spans, result.duplicate_spans) == (10, 10)
    # a batch whose time range holds many stored spans is checked by span id (the bloom index) instead
    result = write_batch(conn, prepare_batch([first[0], first[39], *spans("x", 2)], BOOK))
    assert (result.new_spans, result.duplicate_spans) == (2, 2)
    reference = connect(chdb_url(tmp_path))  # the same spans in one batch
    try:
        write_batch(reference, prepare_batch(first + spans("x", 2), BOOK))
        assert snapshot(conn) == snapshot(reference)
    finally:
        reference.close()


def test_a_request_split_over_batches_is_counted_once(conn: Conn, tmp_path: Path) -> None:
    """Each request counts once, in the batch that first stores one of its spans, whatever the boundaries."""
    all_spans = spans()
    for i in range(0, len(all_spans), 7):  # batches of 7 split requests (2 spans each) at every boundary
        write_batch(conn, prepare_batch(all_spans[i : i + 7], BOOK))
    one = connect(chdb_url(tmp_path))
    try:
        write_batch(one, prepare_batch(all_spans, BOOK))
        per_user = "SELECT user_id, sum(requests) FROM rollup_day WHERE service = '' GROUP BY user_id ORDER BY 1"
        assert conn.tuples(per_user) == one.tuples(per_user)
        assert conn.tuples("SELECT sum(requests) FROM rollup_minute") == [(20,)]
    finally:
        one.close()


def test_kafka_batches_are_recognised_by_their_offsets_and_offsets_come_back(conn: Conn) -> None:
    """A batch re-formed from the same offsets has the same token: replayed, not counted; offsets stored."""
    token = kafka_token("g", [("spans", 0, 100, 139)])
    assert token == kafka_token("g", [("spans", 0, 100, 139)]) != kafka_token("g", [("spans", 0, 100, 140)])
    assert token != kafka_token("other-group", [("spans", 0, 100, 139)]) != spans_token(["s0"])
    batch = prepare_batch(spans(), BOOK)
    write_batch(conn, batch, token=token, offsets=[("g", "spans", 0, 140)])
    once = snapshot(conn)
    write_batch(conn, prepare_batch(spans(), BOOK), token=token, offsets=[("g", "spans", 0, 140)])
    assert snapshot(conn) == once
    write_batch(conn, prepare_batch([], BOOK), offsets=[("g", "spans", 0, 141), ("g", "spans", 1, 7)])
    assert read_offsets(conn, "g", "spans") == {0: 141, 1: 7}
    assert read_offsets(conn, "g", "other") == {}


def test_store_urls() -> None:
    """chdb:// names a directory (and optionally a database); clickhouse(s):// a server."""
    assert parse_url("chdb:///data/st?database=prod") == ("chdb", {"interface": "chdb", "path": "/data/st"}, "prod")
    scheme, kw, db = parse_url("clickhouses://bob:p%40ss@ch.example:8443/costs")
    assert (scheme, db, kw["host"], kw["port"], kw["username"], kw["password"], kw["secure"]) == (
        "clickhouses", "costs", "ch.example", 8443, "bob", "p@ss", True,
    )  # fmt: skip


@pytest.mark.skipif(not os.environ.get("SPENDTRACE_TEST_CLICKHOUSE_URL"), reason="no ClickHouse server given")
def test_a_real_server_over_http() -> None:
    """The same store over HTTP(S): ingest twice, read the totals (needs SPENDTRACE_TEST_CLICKHOUSE_URL)."""
    base = os.environ["SPENDTRACE_TEST_CLICKHOUSE_URL"].split("?")[0].rstrip("/")
    base = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    url = f"{base}/spendtrace_test_{uuid.uuid4().hex[:12]}"
    conn = connect(url)
    try:
        batch = prepare_batch(spans(), BOOK)
        write_batch(conn, batch)
        write_batch(conn, batch)
        store = open_store(url)
        assert store.total()["cost_nano"] == batch.cost_nano
        store.close()
    finally:
        conn.command(f"DROP DATABASE IF EXISTS {conn.database}")
        conn.close()


def _same(a: Any, b: Any) -> bool:
    """Equal, with floats compared to 1e-9 relative (sums of floats in another order)."""
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_every_read_answers_as_the_sqlite_backend_does(tmp_path: Path) -> None:
    """The same spans in both backends: every ReadStore query gives the same rows."""
    from store_backends import BACKENDS

    stores = []
    for name in ("sqlite", "chdb"):
        backend = BACKENDS[name](tmp_path / name if name == "sqlite" else tmp_path)
        if name == "sqlite":
            (tmp_path / name).mkdir()
        backend.ingest(spans(), BOOK)
        stores.append(open_store(backend.url))
    now = T0 + 3600 * NANO
    day = "2026-05-28"
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("total", (), {}),
        ("total", (), {"start": T0 + 300 * NANO, "end": T0 + 900 * NANO, "user_id": "u1"}),
        ("total", (), {"service": "bedrock"}),
        ("aggregate_by_feature", (), {}),
        ("aggregate_by_user", (), {}),
        ("aggregate_by_feature", (), {"limit": 1}),
        ("aggregate_by_user", (), {"limit": 3}),
        ("aggregate_by_endpoint", (), {"limit": 2}),
        ("aggregate_by_endpoint", (day,), {"user_id": "u1"}),
        ("aggregate_by_endpoint", (), {"feature": "search"}),
        ("aggregate_by_user", (), {"service": "dynamodb"}),
        ("aggregate_by_service", (), {}),
        ("aggregate_by_service", (), {"user_id": "u2"}),
        ("get_feature_cost_breakdown", (), {}),
        ("get_feature_cost_breakdown", (), {"user_id": "u3"}),
        ("get_cost_trend", (), {"days": 3, "now": now}),
        ("get_cost_trend", ("api",), {"days": 2, "now": now, "service": "bedrock"}),
        ("cost_trend_by_feature", (), {"days": 2, "now": now}),
        ("feature_timeseries", (30, T0 + 1200 * NANO), {}),
        ("spend_rate", (30, T0 + 1200 * NANO), {"endpoint": "/e1"}),
        ("ingest_stats", (T0 + 60 * NANO,), {}),
        ("unpriced_usage", (), {}),
        ("get_request_cost", (5,), {"order": "cost"}),
        ("get_request_cost", (5,), {"offset": 2, "user_id": "u1"}),
        ("get_request_subtree", ("s-r3",), {}),
        ("get_transaction_subtree", ("s5",), {}),
        ("transactions", (), {"limit": 7, "offset": 3, "service": "t"}),
        ("transactions", (), {"request_id": "s-r4"}),
    ]
    for method, args, kwargs in calls:
        lite, ch = (getattr(s, method)(*args, **kwargs) for s in stores)
        assert _same(ch, lite), (method, args, kwargs)
    for s in stores:
        s.close()


def test_undo_after_retention_takes_back_nothing_from_deleted_buckets(tmp_path: Path) -> None:
    """A restatement's delta rows are not negated into buckets retention has deleted since."""
    url = chdb_url(tmp_path)
    conn = connect(url)
    store = open_store(url)
    try:
        write_batch(conn, prepare_batch(spans(), BOOK))
        total = store.total()["cost_nano"]
        rid = store.restate_historical_costs(factor=3.0, start_date="2026-05-28", end_date="2026-05-29")
        assert store.total()["cost_nano"] == 3 * total
        store.set_retention(raw_data_days=1, minute_rollups_days=1, hourly_rollups_days=1, daily_rollups_days=1)
        store.apply_retention(now_ns=T0 + 3 * 86_400 * NANO)
        assert store.total()["cost_nano"] == 0
        store.undo_restatement(rid)
        assert store.total()["cost_nano"] == 0
    finally:
        store.close()
        conn.close()


def test_the_dashboard_reads_answer_as_on_sqlite(tmp_path: Path) -> None:
    """``open_dashboard``: every TUI read gives the same snapshot on chDB as on SQLite for the same data."""
    import asyncio

    from store_backends import BACKENDS

    from spendtrace.server.model.dashboard import DIMENSIONS, WINDOWS
    from spendtrace.server.store.base import open_alert_store, open_dashboard

    now = T0 + 1200 * NANO
    urls = []
    for name in ("sqlite", "chdb"):
        (tmp_path / name).mkdir()
        backend = BACKENDS[name](tmp_path / name if name == "sqlite" else tmp_path)
        backend.ingest(spans(), BOOK)
        alerts = open_alert_store(backend.url)
        try:
            rule = alerts.save_rule(
                name="big", kind="threshold", scope="feature", scope_value="search", threshold_nano=1,
                window_minutes=60, cooldown_minutes=60, params={}, webhook="https://hooks.example/secret",
                webhook_format="slack", now_ns=now,
            )  # fmt: skip
            alerts.claim_firing(rule, state_key="", cooldown_ns=None, fired_ns=now, value_nano=5, message="over")
        finally:
            alerts.close()
        urls.append(backend.url)

    async def read(url: str) -> list[Any]:
        reads = await open_dashboard(url, clock=lambda: now, monotonic=lambda: 1.0).open()
        try:
            out: list[Any] = [await reads.overview()]
            out += [await reads.dimension(d, w) for d in DIMENSIONS for w in WINDOWS]
            out += [await reads.requests("recent", 7), await reads.requests("cost", 7)]
            out += [await reads.request_tree("s-r3"), await reads.trends(3), await reads.alert_rules()]
            out += [await reads.alert_events(), await reads.dead_letters(), await reads.unpriced()]
            return out
        finally:
            await reads.close()

    lite, ch = (asyncio.run(read(url)) for url in urls)
    assert len(ch) == len(lite)
    for a, b in zip(ch[:-1], lite[:-1], strict=True):
        assert a == b
    assert sorted(ch[-1]) == sorted(lite[-1])  # SQLite leaves the order of equal item counts open


def test_dashboard_reads_issued_at_once_answer_as_one_at_a_time(tmp_path: Path) -> None:
    """A ClickHouse dashboard runs reads on a few clients at once: more reads than clients, issued together
    (as the TUI's header and screen are), each get the rows they get alone, and a closed one reads nothing."""
    import asyncio

    from store_backends import BACKENDS

    from spendtrace.server.model.dashboard import DIMENSIONS, WINDOWS
    from spendtrace.server.store.base import open_dashboard

    now = T0 + 1200 * NANO
    backend = BACKENDS["chdb"](tmp_path)
    backend.ingest(spans(n=60), BOOK)

    def calls(reads: Any) -> list[Any]:
        out = [reads.overview(), reads.trends(3, limit=2), reads.requests("cost", 5, search="s-r")]
        out += [reads.dimension(d, w, limit=2, offset=o) for d in DIMENSIONS for w in WINDOWS for o in (0, 1)]
        return out

    async def both() -> tuple[list[Any], list[Any]]:
        reads = await open_dashboard(backend.url, clock=lambda: now, monotonic=lambda: 1.0).open()
        try:
            alone = [await c for c in calls(reads)]
            together = list(await asyncio.gather(*calls(reads)))
        finally:
            await reads.close()
        with pytest.raises(AssertionError, match="open"):
            await reads.dimension("feature", "all", limit=2)
        return alone, together

    alone, together = asyncio.run(both())
    assert len(together) > 3 * 3  # more reads than the dashboard has clients
    assert any(d.rows for d in alone[3:])  # the pages hold rows
    # the header's ingest rate is a difference between calls: compare its totals
    assert (together[0].total_nano, together[0].spans) == (alone[0].total_nano, alone[0].spans)
    assert together[1:] == alone[1:]


def test_restatement_and_undo_change_what_sqlite_changes(tmp_path: Path) -> None:
    """Per-service factors: spans, request costs and every total as on SQLite; undo gives all back; twice."""
    from store_backends import BACKENDS

    stores = []
    for name in ("sqlite", "chdb"):
        (tmp_path / name).mkdir()
        backend = BACKENDS[name](tmp_path / name if name == "sqlite" else tmp_path)
        backend.ingest(spans(), BOOK)
        stores.append(open_store(backend.url))

    def views(store: Any) -> list[Any]:
        return [
            store.total(),
            store.aggregate_by_service(),
            store.aggregate_by_user(),
            store.get_feature_cost_breakdown(),
            store.get_request_cost(50, "cost"),
            store.transactions(limit=100),
            store.get_request_subtree("s-r4"),
        ]

    before = [views(s) for s in stores]
    assert _same(before[1], before[0])
    for round_ in range(2):  # the second round inserts the very same delta blocks: none may be dropped
        rids = [
            s.restate_historical_costs(
                factor=1.5, factors={"bedrock": 0.8}, start_date="2026-05-28", end_date="2026-05-29", why="t"
            )
            for s in stores
        ]
        lite, ch = (views(s) for s in stores)
        for i, (a, b) in enumerate(zip(ch, lite, strict=True)):
            assert _same(a, b), (round_, i, a, b)
        assert ch[0]["cost_nano"] != before[1][0]["cost_nano"]
        for s, rid in zip(stores, rids, strict=True):
            s.undo_restatement(rid)
        assert _same(views(stores[1]), before[1])
        assert _same(views(stores[0]), before[0])
    for s in stores:
        s.close()


def test_the_cli_reads_a_chdb_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``spendtrace --store chdb:///...``: the read commands answer from ClickHouse."""
    from spendtrace.cli.main import main

    url = chdb_url(tmp_path)
    conn = connect(url)
    try:
        write_batch(conn, prepare_batch(spans(), BOOK))
    finally:
        conn.close()
    assert main(["--store", url, "total"]) == 0
    out = capsys.readouterr().out
    assert "$0.05281" in out and " 40" in out  # four significant digits: $0.052808
    assert main(["--store", url, "tree", "s-r3"]) == 0
    assert "search" in capsys.readouterr().out


def test_retention_drops_whole_partitions_and_deletes_the_straddling_rows(tmp_path: Path) -> None:
    """Raw spans over three months, kept 40 days: March's partition dropped, April cut at the day; totals kept."""
    day = 86_400 * NANO
    now = T0  # 2026-05-28 11:00 UTC
    old = [
        Span(f"o{i}", None, f"o{i}", "api", start_ns=now - (30 + 7 * i) * day, usage=(UsageItem("t_read", count=4.0),))
        for i in range(10)  # 30 .. 93 days back: April 28 .. late February
    ]
    url = chdb_url(tmp_path)
    conn = connect(url)
    store = open_store(url)
    try:
        write_batch(conn, prepare_batch(old, BOOK))
        total = store.total()["cost_nano"]
        store.set_retention(raw_data_days=40)
        store.apply_retention(now_ns=now)
        parts = "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = 'spans'"
        partitions = {p for (p,) in conn.tuples(parts + " AND active")}
        assert partitions == {"202604"}  # March and February dropped whole; April cut, not dropped
        kept = conn.tuples("SELECT span_id FROM spans ORDER BY span_id")
        assert kept == [("o0",), ("o1",)]  # 30 and 37 days back; o2 (44 days, April 14) deleted
        assert store.total()["cost_nano"] == total  # day rollups are kept five years
        minute = conn.tuples("SELECT count() FROM rollup_minute")[0][0]
        assert minute == 0  # minute rollups are kept two days
    finally:
        store.close()
        conn.close()


def test_a_half_applied_batch_is_reported_unconfirmed_until_its_replay_completes_it(tmp_path: Path) -> None:
    """Contract 4.: the ranges are recorded before the rows; a failure after them leaves the range unconfirmed,
    and the batch re-formed from exactly that range completes every table without doubling any."""
    from spendtrace.server.model.ingest import PartitionOffsets
    from spendtrace.server.store.base import open_ingest_store

    url = chdb_url(tmp_path)
    store = open_ingest_store(url)
    conn = connect(url)
    try:
        assert store.atomic_batches is False
        rng = [PartitionOffsets("g", "spans", 0, 100, 140)]
        batch = prepare_batch(spans(), BOOK)
        conn.command("ALTER TABLE loaded_day ADD CONSTRAINT refuse CHECK bucket < -1")
        with pytest.raises(StorageError):
            store.apply_batch(batch, rng)
        assert store.unconfirmed_ranges("g", "spans") == {0: rng[0]}
        assert store.stored_offsets("g", "spans") == {}
        conn.command("ALTER TABLE loaded_day DROP CONSTRAINT refuse")
        replay = store.apply_batch(prepare_batch(spans(), BOOK), rng)
        assert replay.new_spans + replay.duplicate_spans == 40
        assert store.unconfirmed_ranges("g", "spans") == {}
        assert store.stored_offsets("g", "spans") == {0: 140}
        clean = connect(chdb_url(tmp_path))
        try:
            write_batch(clean, prepare_batch(spans(), BOOK))
            assert snapshot(conn) == snapshot(clean)
        finally:
            clean.close()
    finally:
        conn.close()
        store.close()


def test_request_ids_of_any_length_and_characters_are_recognised_as_stored(tmp_path: Path) -> None:
    """The requests read (ids sent as hex-encoded JSON arrays, cut under ClickHouse's query size) finds ids with
    quotes, backslashes, control characters, non-ASCII letters and the schema's 512 characters, thousands at once."""
    from spendtrace.server.store.clickhouse._client import connect
    from spendtrace.server.store.clickhouse._ingest import _request_days

    conn = connect(chdb_url(tmp_path))
    try:
        odd = ["q'\"\\x", "é\u00fc\u4e2d", "r" * 512, "ü" * 512, "\x00\n\t\x1f" * 128, "')--", "\u4e2d" * 512]
        odd += [f"req-{i}" for i in range(20_000)] + [f"{i:04d}" + "\x01" * 508 for i in range(300)]  # 3 KiB as JSON
        stored = odd[::2]
        days = [86_400 * (i % 7) for i in range(len(stored))]
        conn.insert("requests", [stored, [0] * len(stored), days], ("request_id", "start_ns", "first_day"))
        assert _request_days(conn, set(odd)) == dict(zip(stored, days, strict=True))
    finally:
        conn.close()


def test_the_head_of_each_request_is_its_earliest_root_else_its_earliest_span_first_in_batch_order() -> None:
    """``_heads`` (sorts and dicts) picks the spans the one-pass rules pick, over ties, missing and repeated roots."""
    import random

    from spendtrace.server.store.clickhouse._ingest import _heads

    def one_pass(rids: list[str], parents: list[str | None], starts: list[int], fresh: list[int]
                 ) -> tuple[dict[str, int], dict[str, int]]:  # fmt: skip
        first: dict[str, int] = {}
        for i in fresh:  # the earliest span, the first in batch order on a tie
            if rids[i] not in first or starts[i] < starts[first[rids[i]]]:
                first[rids[i]] = i
        head: dict[str, int] = {}
        for i in fresh:
            h = head.get(rids[i])
            if h is None:
                head[rids[i]] = i
            elif (parents[i] is None) != (parents[h] is None):
                if parents[i] is None:
                    head[rids[i]] = i
            elif starts[i] < starts[h]:
                head[rids[i]] = i
        return first, head

    rng = random.Random(13)
    for _ in range(300):
        n = rng.randint(1, 40)
        rids = [f"r{rng.randint(0, 6)}" for _ in range(n)]
        parents = [None if rng.random() < 0.3 else "p" for _ in range(n)]
        starts = [rng.randint(0, 5) for _ in range(n)]  # few values: many ties
        fresh = sorted(rng.sample(range(n), rng.randint(1, n)))
        assert _heads(rids, parents, starts, fresh) == one_pass(rids, parents, starts, fresh)
