"""End-to-end support: the instrumented app, an independent pricing of what it recorded, worker processes.

The app uses the real SDK (``track_request`` for three tenants, nested ``cost_track`` features,
``add_api_call`` for Bedrock tokens, DynamoDB and S3) and exports with the real Kafka exporter;
a tee keeps an in-memory copy of every span the exporter delivered. ``Expected`` recomputes every
query's answer from those spans and the providers' rates written here (``PUBLISHED_USD``), without
the ingest or pricing code, so the pipeline's results can be compared to the nano-dollar.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from independent_pricing import PUBLISHED_SINCE_NS, PUBLISHED_USD, price_nano  # noqa: F401 - re-exported for the e2e tests

from spendtrace.schema import Span, UsageItem, encode_span
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.pricing import PriceBook

N_SPANS = 20_000
TENANTS = ("tenant-acme", "tenant-globex", "tenant-initech")
DAY_NS = 86_400 * 10**9


# --------------------------------------------------------------------------- the instrumented app
def run_app(n_spans: int, count_spans: Any) -> None:
    """Serve requests until the SDK has recorded ``n_spans`` spans (each request makes 2 to 7)."""
    from spendtrace import add_api_call, cost_track, track_request

    @cost_track(feature="product_details", operation="get_item")
    def product_details(i: int) -> None:
        add_api_call("dynamodb_read", count=1 + i % 3)
        if i % 4 == 0:
            add_api_call("s3_get", bytes=4096 + i)

    @cost_track(feature="search")
    def search(i: int) -> None:
        add_api_call("dynamodb_read", count=2)
        for k in range(1 + i % 3):
            product_details(i + k)

    @cost_track(feature="ai_recommendations", operation="invoke_model")
    def recommend(i: int) -> None:
        add_api_call("bedrock_claude_3_haiku", input_tokens=200 + i % 997, output_tokens=40 + i % 211)
        if i % 5 == 0:
            add_api_call("bedrock_claude_3_haiku", input_tokens=50, output_tokens=7, cache_read_tokens=1000 + i % 13)
        product_details(i)

    @cost_track(feature="checkout")
    def checkout(i: int) -> None:
        add_api_call("dynamodb_write", count=1 + i % 2)
        add_api_call("s3_put", count=1, bytes=1 << 20)
        if i % 50 == 0:
            add_api_call("mystery_api", count=1)  # no price: stored as unpriced, never $0

    handlers = {"/api/search": search, "/api/recommend": recommend, "/api/checkout": checkout}
    endpoints = sorted(handlers)

    @cost_track(feature="api")
    def api(endpoint: str, i: int) -> None:
        handlers[endpoint](i)
        if i % 10 == 0:
            search(i + 1)  # a second feature under the same request root

    i = 0
    while count_spans() < n_spans:
        endpoint = endpoints[i % 3]
        with track_request(endpoint=endpoint, user_id=TENANTS[(i // 3) % 3]):
            api(endpoint, i)
        i += 1


class _Tee:
    """A SpanExporter that delivers to Kafka and, once Kafka acknowledged, keeps a copy in memory."""

    def __init__(self, kafka: Any) -> None:
        self.kafka = kafka
        self.spans: list[Span] = []
        self.recorded = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Span]) -> None:
        self.kafka.export(spans)
        with self._lock:
            self.spans.extend(spans)

    def force_flush(self, timeout: float = 5.0) -> bool:
        return bool(self.kafka.force_flush(timeout))

    def shutdown(self) -> None:
        self.kafka.shutdown()


@dataclass
class Recorded:
    """The session's recording: the topic the SDK exported to, the spans, and their independent pricing."""

    topic: str
    spans: list[Span]
    #: What the workers price with (the shipped static table); ``expected`` never reads it.
    book: PriceBook
    expected: Expected

    @property
    def messages(self) -> list[tuple[bytes, bytes]]:
        """The spans as the SDK publishes them: (request id, msgpack value)."""
        return [(s.request_id.encode(), encode_span(s)) for s in self.spans]


@dataclass
class Expected:
    """Every query's answer, recomputed from the recorded spans (weight 1: the app does not sample)."""

    span_cost: dict[str, int]
    span_unpriced: dict[str, int]
    spans: dict[str, Span]
    total_nano: int = 0
    unpriced_items: int = 0
    by_feature: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_user: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_endpoint: dict[str, dict[str, Any]] = field(default_factory=dict)
    loaded: dict[str, int] = field(default_factory=dict)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_day: dict[int, int] = field(default_factory=dict)
    children: dict[str | None, list[str]] = field(default_factory=dict)

    @classmethod
    def compute(cls, spans: Sequence[Span]) -> Expected:
        """The answers for ``spans`` priced at ``PUBLISHED_USD``."""
        cost: dict[str, int] = {}
        unpriced: dict[str, int] = {}
        svc_cost: dict[str, dict[str, int]] = {}
        for s in spans:
            c = n = 0
            per_svc: dict[str, int] = defaultdict(int)
            for item in s.usage:
                nano, service = price_nano(item, s.start_ns)
                if nano is None:
                    n += 1
                else:
                    c += nano
                    per_svc[service] += nano
            cost[s.span_id], unpriced[s.span_id], svc_cost[s.span_id] = c, n, dict(per_svc)
        e = cls(span_cost=cost, span_unpriced=unpriced, spans={s.span_id: s for s in spans})
        e.total_nano = sum(cost.values())
        e.unpriced_items = sum(unpriced.values())

        def dim(key_of: Any) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for s in spans:
                row = out.setdefault(
                    key_of(s), {"cost_nano": 0, "spans": 0, "requests": set(), "services": Counter(), "unpriced": 0}
                )
                row["cost_nano"] += cost[s.span_id]
                row["spans"] += 1
                row["unpriced"] += unpriced[s.span_id]
                row["services"].update(svc_cost[s.span_id])
                if s.parent_id is None:
                    row["requests"].add(s.request_id)
            return out

        e.by_feature = dim(lambda s: s.feature)
        e.by_user = dim(lambda s: s.user_id or "")
        e.by_endpoint = dim(lambda s: s.endpoint or "")
        loaded: dict[str, int] = defaultdict(int)
        for s in spans:
            for f in set(s.path) | {s.feature}:
                loaded[f] += cost[s.span_id]
        e.loaded = dict(loaded)
        for s in spans:
            r = e.requests.setdefault(s.request_id, {"cost_nano": 0, "spans": 0, "user_id": None, "endpoint": None})
            r["cost_nano"] += cost[s.span_id]
            r["spans"] += 1
            if s.parent_id is None:
                r["user_id"], r["endpoint"], r["root_feature"] = s.user_id, s.endpoint, s.feature
            e.by_day[s.start_ns // DAY_NS] = e.by_day.get(s.start_ns // DAY_NS, 0) + cost[s.span_id]
            e.children.setdefault(s.parent_id, []).append(s.span_id)
        return e

    def subtree_cost(self, span_id: str) -> int:
        """Cost of a span and everything below it."""
        return self.span_cost[span_id] + sum(self.subtree_cost(c) for c in self.children.get(span_id, ()))

    def depths(self, request_id: str) -> dict[str, int]:
        """span_id -> depth below the request's root."""
        out: dict[str, int] = {}
        roots = [sid for sid in self.children.get(None, ()) if self.spans[sid].request_id == request_id]
        stack = [(r, 0) for r in roots]
        while stack:
            sid, d = stack.pop()
            out[sid] = d
            stack.extend((c, d + 1) for c in self.children.get(sid, ()))
        return out


# --------------------------------------------------------------------------- workers as processes
def worker_cmd(broker: EmbeddedBroker, db: Path, group: str, topic: str, *extra: str) -> list[str]:
    """The command line of one ``python -m consumers`` worker process for a test."""
    return [
        sys.executable, "-m", "consumers", "--bootstrap", broker.bootstrap, "--db", str(db), "--group", group,
        "--topic", topic, "--partitions", "6", "--session-timeout-ms", "2000", "--log-level", "WARNING", *extra,
    ]  # fmt: skip


def start_worker(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a worker process with its output in ``log``."""
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    finally:
        out.close()


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM (a graceful stop) and wait; SIGKILL if it does not finish in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def db_count(db: Path, sql: str = "SELECT count(*) FROM spans") -> int:
    """A single integer from the database, 0 while the file or schema does not exist yet."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return int(conn.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError:
        return 0


def assert_exact(db: Path, e: Expected) -> None:
    """The stored spans, rollups, fully-loaded rollups and requests equal the independent computation exactly."""
    with sqlite3.connect(db, timeout=30) as conn:
        stored = dict(conn.execute("SELECT span_id, cost_nano FROM spans").fetchall())
        assert stored == e.span_cost
        for grain in ("minute", "hour", "day"):
            cost, spans = conn.execute(
                f"SELECT sum(cost_nano), sum(spans) FROM rollup_{grain} WHERE service = ''"
            ).fetchone()
            assert (cost, spans) == (e.total_nano, len(e.spans)), grain
            loaded = dict(
                conn.execute(f"SELECT feature, sum(cost_nano) FROM loaded_{grain} GROUP BY feature").fetchall()
            )
            assert loaded == e.loaded, grain
        requests = {
            r: (c, n) for r, c, n in conn.execute("SELECT request_id, cost_nano, spans FROM requests").fetchall()
        }
        assert requests == {r: (v["cost_nano"], v["spans"]) for r, v in e.requests.items()}


async def kafka_committed(broker: EmbeddedBroker, group: str, topic: str, partitions: int = 6) -> dict[int, int]:
    """The group's offsets committed to Kafka, by partition (partitions with none left out)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    probe = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        out = {}
        for p in range(partitions):
            off = await probe.committed(TopicPartition(topic, p))
            if off is not None:
                out[p] = off
        return out
    finally:
        await probe.stop()


def scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus metrics as {series name without labels: value} (single-worker process)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series.split("{")[0]] = out.get(series.split("{")[0], 0.0) + float(value)
    return out


# --------------------------------------------------------------------------- bad input
def garbage_messages(recorded: Recorded, n: int) -> list[tuple[str, bytes | None]]:
    """``n`` bad messages of every kind: random bytes, other msgpack, negative / NaN units, a 1 MB name."""
    rng = random.Random(1234)
    template = next(s for s in recorded.spans if s.usage)
    out: list[tuple[str, bytes | None]] = [
        ("huge-name", encode_span(msgspec.structs.replace(template, span_id=f"huge-{i}", feature="x" * 1_000_000)))
        for i in range(2)
    ]
    while len(out) < n:
        i = len(out)
        kind = i % 6
        if kind == 0:
            out.append(("random", rng.randbytes(rng.randint(1, 400))))
        elif kind == 1:
            other = [{"span": i, "feature": "search"}, [i, "x", None], "a string", i, {"usage": [1, 2]}][i % 5]
            out.append(("wrong-schema", msgspec.msgpack.encode(other)))
        elif kind == 2:
            bad = (UsageItem("dynamodb_read", count=-1.0 - i),)
            out.append(("negative", encode_span(msgspec.structs.replace(template, span_id=f"neg-{i}", usage=bad))))
        elif kind == 3:
            bad = (UsageItem("s3_put", count=math.nan),)
            out.append(("nan", encode_span(msgspec.structs.replace(template, span_id=f"nan-{i}", usage=bad))))
        elif kind == 4:
            bad = (UsageItem("bedrock_claude_3_haiku", input_tokens=-5),)
            out.append(
                ("negative-tokens", encode_span(msgspec.structs.replace(template, span_id=f"nt-{i}", usage=bad)))
            )
        else:
            out.append(("truncated", encode_span(template)[: 5 + i % 20]))
    return out


def interleave(
    good: Sequence[tuple[bytes | None, bytes | None]], garbage: list[tuple[str, bytes | None]]
) -> list[tuple[bytes | None, bytes | None]]:
    """``good`` with the ``garbage`` spread evenly among it, each bad message keyed ``<kind>-<index>``."""
    step = len(good) // len(garbage)
    messages: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value) in enumerate(good):
        messages.append((key, value))
        if i % step == 0 and i // step < len(garbage):
            kind, bad = garbage[i // step]
            messages.append((f"{kind}-{i // step}".encode(), bad))
    assert len(messages) == len(good) + len(garbage)
    return messages


async def read_dead_letter_topic(broker: EmbeddedBroker, topic: str, n: int) -> dict[str, str]:
    """The dead-letter topic's messages as {key: reason header}, read until ``n`` are seen (or 60 s pass)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    dlq = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20
    )
    await dlq.start()
    seen: dict[str, str] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while len(seen) < n and asyncio.get_running_loop().time() < deadline:
            for records in (await dlq.getmany(timeout_ms=200)).values():
                for r in records:
                    seen[r.key.decode()] = dict(r.headers)["reason"].decode()
    finally:
        await dlq.stop()
    return seen
