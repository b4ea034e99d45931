"""The whole pipeline: SDK → Kafka exporter → real broker → two workers → the store → every query, exact.

Run once per backend: SQLite, and ClickHouse's engine in this process (chDB; the workers are tasks of
the test process, so the one-process-per-data-directory rule holds). Queries go through ``open_store``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from pipeline_support import DAY_NS, Recorded, price_nano

from consumers.config import WorkerConfig
from consumers.worker import Worker
from spendtrace import get_feature_cost_breakdown, get_request_cost
from spendtrace.errors import SpendtraceError
from spendtrace.schema import UsageItem
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.store.base import open_store


def _stored_spans(url: str) -> int:
    """Spans the store reports (0 while it does not exist yet)."""
    try:
        store = open_store(url, readonly=True)
    except SpendtraceError:
        return 0
    try:
        return int(store.total()["transaction_count"])
    except SpendtraceError:
        return 0
    finally:
        store.close()


@pytest.fixture(scope="module", params=["sqlite", "chdb"])
def ingested(
    request: pytest.FixtureRequest, broker: EmbeddedBroker, recorded: Recorded, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The recorded topic drained by two worker tasks sharing a group into a fresh store; its URL."""
    if request.param == "sqlite":
        url = str(tmp_path_factory.mktemp("e2e") / "cost_data.db")
    else:  # the session's one chDB directory (tests/store uses it too), a database of its own
        url = f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}?database=e2e_pipeline_{uuid.uuid4().hex[:8]}"

    async def drain() -> None:
        cfg = WorkerConfig(
            bootstrap=broker.bootstrap,
            db_path=url,
            group_id=f"e2e-workers-{request.param}",
            topic=recorded.topic,
            dlq_topic="e2e-sdk-spans.dlq",
            alerts_topic="e2e-sdk-spans.alerts",
            partitions=6,
            batch_size=2_000,
            session_timeout_ms=2_000,
            heartbeat_interval_ms=400,
        )
        workers = [Worker(cfg, book=recorded.book) for _ in range(2)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            deadline = asyncio.get_running_loop().time() + 180
            while _stored_spans(url) < len(recorded.spans):
                assert asyncio.get_running_loop().time() < deadline, "workers did not drain the topic in time"
                for t in tasks:
                    if t.done():
                        t.result()  # a worker that died raises here
                await asyncio.sleep(0.2)
        finally:
            for w in workers:
                w.request_stop()
            await asyncio.gather(*tasks)
        assert sum(w.stats.spans for w in workers) >= len(recorded.spans)

    asyncio.run(drain())
    return url


def _by(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows}


def test_every_span_is_stored_once(ingested: str, recorded: Recorded) -> None:
    """The store holds exactly the spans the app recorded, each priced as the price book says."""
    with open_store(ingested, readonly=True) as st:
        rows = st.transactions(limit=len(recorded.spans) + 1_000)
    stored = {r["span_id"]: r["cost_nano"] for r in rows}
    assert len(rows) == len(stored)
    assert stored == recorded.expected.span_cost
    assert len(stored) >= 20_000


def test_total_matches(ingested: str, recorded: Recorded) -> None:
    """total(): cost, span and request counts and unpriced items equal the independent computation."""
    e = recorded.expected
    with open_store(ingested, readonly=True) as st:
        total = st.total()
    assert total["cost_nano"] == e.total_nano > 0
    assert total["transaction_count"] == len(e.spans)
    assert total["request_count"] == len(e.requests)
    assert total["unpriced_count"] == e.unpriced_items > 0


def _check_dimension(rows: list[dict[str, Any]], key: str, expected: dict[str, dict[str, Any]], count: str) -> None:
    got = _by(rows, key)
    assert set(got) == set(expected)
    for name, exp in expected.items():
        row = got[name]
        assert row["cost_nano"] == exp["cost_nano"], name
        assert row["span_count"] == exp["spans"], name
        assert row["unpriced_count"] == exp["unpriced"], name
        assert row["service_costs_nano"] == {k: v for k, v in exp["services"].items() if v}, name
        assert row["transaction_count"] == (exp["spans"] if count == "spans" else len(exp["requests"])), name


def test_aggregate_by_feature_user_endpoint_match(ingested: str, recorded: Recorded) -> None:
    """aggregate_by_feature / _user / _endpoint: cost, counts and per-service costs per key, exactly."""
    e = recorded.expected
    with open_store(ingested, readonly=True) as st:
        _check_dimension(st.aggregate_by_feature(), "feature", e.by_feature, "spans")
        _check_dimension(st.aggregate_by_user(), "user_id", e.by_user, "requests")
        _check_dimension(st.aggregate_by_endpoint(), "endpoint", e.by_endpoint, "requests")
        by_service = _by(st.aggregate_by_service(), "service")
    services = {name: r["cost_nano"] for name, r in by_service.items() if r["cost_nano"]}
    assert set(e.by_user) == {"tenant-acme", "tenant-globex", "tenant-initech"}
    expected_services: dict[str, int] = {}
    for row in e.by_feature.values():
        for svc, nano in row["services"].items():
            expected_services[svc] = expected_services.get(svc, 0) + nano
    assert services == {k: v for k, v in expected_services.items() if v}
    assert {"bedrock", "dynamodb", "s3"} <= set(services)
    mystery = sum(1 for sp in e.spans.values() for i in sp.usage if i.key == "mystery_api")
    assert by_service["mystery"]["unpriced_count"] == mystery > 0  # visible as unpriced, not as $0 spend


def test_feature_cost_breakdown_matches(ingested: str, recorded: Recorded) -> None:
    """Direct and fully-loaded cost per feature (method and module function) equal the path-based computation."""
    e = recorded.expected
    with open_store(ingested, readonly=True) as st:
        rows = _by(st.get_feature_cost_breakdown(), "feature")
    if "://" not in ingested:  # the README's module functions open a SQLite file
        assert _by(get_feature_cost_breakdown(db_path=ingested), "feature").keys() == rows.keys()
    assert set(rows) == set(e.loaded)
    for feature, row in rows.items():
        assert row["direct_cost_nano"] == e.by_feature[feature]["cost_nano"], feature
        assert row["fully_loaded_cost_nano"] == e.loaded[feature], feature
    assert rows["api"]["fully_loaded_cost_nano"] == e.total_nano  # every span runs under the api root


def test_request_costs_match(ingested: str, recorded: Recorded) -> None:
    """get_request_cost: every request's cost, span count, tenant and endpoint, most expensive first."""
    e = recorded.expected
    with open_store(ingested, readonly=True) as st:
        rows = st.get_request_cost(limit=len(e.requests) + 10, order="cost")
    assert len(rows) == len(e.requests)
    assert [r["cost_nano"] for r in rows] == sorted((r["cost_nano"] for r in rows), reverse=True)
    for row in rows:
        exp = e.requests[row["request_id"]]
        assert (row["cost_nano"], row["tx_count"], row["user_id"], row["endpoint"]) == (
            exp["cost_nano"],
            exp["spans"],
            exp["user_id"],
            exp["endpoint"],
        )
    if "://" not in ingested:  # the README's module functions open a SQLite file
        top = get_request_cost(db_path=ingested, limit=5, order="cost")
        assert [r["request_id"] for r in top] == [r["request_id"] for r in rows[:5]]


def test_request_subtrees_match(ingested: str, recorded: Recorded) -> None:
    """get_request_subtree: for a sample of requests, the tree's spans, depths, direct and subtree costs."""
    e = recorded.expected
    sample = sorted(e.requests)[:: max(1, len(e.requests) // 40)]
    sample.append(max(e.requests, key=lambda r: e.requests[r]["cost_nano"]))
    for request_id in sample:
        with open_store(ingested, readonly=True) as st:
            nodes = st.get_request_subtree(request_id)
        depths = e.depths(request_id)
        assert {n["span_id"] for n in nodes} == set(depths)
        for n in nodes:
            assert n["depth"] == depths[n["span_id"]]
            assert n["direct_cost_nano"] == e.span_cost[n["span_id"]]
            assert n["subtree_cost_nano"] == e.subtree_cost(n["span_id"])
        assert nodes[0]["subtree_cost_nano"] == e.requests[request_id]["cost_nano"]


def test_cost_trend_matches(ingested: str, recorded: Recorded) -> None:
    """get_cost_trend: one zero-filled row per UTC day, each day's cost equal to the spans started that day."""
    e = recorded.expected
    with open_store(ingested, readonly=True) as st:
        trend = st.get_cost_trend(days=3)
        by_feature = st.get_cost_trend(feature="ai_recommendations", days=3)
    got = {r["date"]: r["cost_nano"] for r in trend}
    expected = {dt.datetime.fromtimestamp(d * DAY_NS / 1e9, dt.UTC).date().isoformat(): c for d, c in e.by_day.items()}
    assert len(trend) == 3
    assert {d: c for d, c in got.items() if c} == expected
    ai = sum(e.span_cost[s.span_id] for s in e.spans.values() if s.feature == "ai_recommendations")
    assert sum(r["cost_nano"] for r in by_feature) == ai > 0


#: One item of every kind the app records, and its cost in nano-dollars worked out from the provider
#: pages quoted at ``pipeline_support.PUBLISHED_USD`` (None: unpriced).
HAND_PRICED: tuple[tuple[UsageItem, int | None], ...] = (
    (UsageItem("dynamodb_read", count=3.0), 375),  # 3 x $0.125/1M
    (UsageItem("dynamodb_write", count=2.0), 1_250),  # 2 x $0.625/1M
    (UsageItem("s3_get", count=1.0, bytes=4_100), 400),  # $0.0004/1000; bytes not billed
    (UsageItem("s3_put", count=1.0, bytes=1 << 20), 5_000),  # $0.005/1000; bytes not billed
    # 200 x $0.25/1M + 40 x $1.25/1M = $0.00005 + $0.00005; the call itself is not billed
    (UsageItem("bedrock_claude_3_haiku", count=1.0, input_tokens=200, output_tokens=40), 100_000),
    # 50 x $0.25/1M + 7 x $1.25/1M + 1,003 x $0.03/1M = 12,500 + 8,750 + 30,090
    (UsageItem("bedrock_claude_3_haiku", count=1.0, input_tokens=50, output_tokens=7, cache_read_tokens=1003), 51_340),
    (UsageItem("mystery_api", count=1.0), None),  # no published price: unpriced, never $0
)


def _kind(item: UsageItem) -> tuple[str, frozenset[str]]:
    """A usage key with the names of its non-zero units."""
    units = ("count", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "bytes")
    return item.key, frozenset(u for u in units if getattr(item, u))


def test_expected_prices_every_recorded_kind_at_numbers_written_here(recorded: Recorded) -> None:
    """The reference the pipeline is checked against charges hand-worked figures for every kind of item recorded.

    ``Expected`` reads no price book; this pins its rates (and the shipped table the workers use, through
    the exact comparisons above) to the provider pages, so a wrong rate in either fails the suite.
    """
    at = recorded.spans[0].start_ns
    assert [price_nano(item, at)[0] for item, _ in HAND_PRICED] == [nano for _, nano in HAND_PRICED]
    recorded_kinds = {_kind(i) for s in recorded.spans for i in s.usage}
    assert recorded_kinds == {_kind(item) for item, _ in HAND_PRICED}
    assert recorded.expected.by_feature["checkout"]["unpriced"] > 0  # mystery_api stays unpriced, not $0
