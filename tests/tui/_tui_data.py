"""Fixed test data for the TUI: request trees as real Spans, stored through the real ingest path.

Everything is placed at fixed offsets before the fixed clock (``FIXED_NOW_NS``), so snapshots
are reproducible: several tenants and endpoints, nested features, errors, a usage key no price
covers, a dead letter, an alert rule and a fired alert, and a feature named ``[red]x``.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

NANO = 1_000_000_000
MINUTE_NS = 60 * NANO
DAY_NS = 86_400 * NANO
MARKUP = "[red]x"
TENANTS = ("tenant-acme", "tenant-globex", "tenant-initech")
ENDPOINTS = ("/api/search", "/api/recommend", "/api/batch")
#: The most expensive request of the data set (a Bedrock Sonnet call under recommend).
BIG_REQUEST = "req-big"


def _span(rid: str, sid: str, parent: str | None, feature: str, path: tuple[str, ...], t: int, **kw: object) -> Span:
    return Span(
        span_id=sid,
        parent_id=parent,
        request_id=rid,
        feature=feature,
        operation=kw.pop("operation", None),  # type: ignore[arg-type]
        endpoint=kw.pop("endpoint", "/api/search"),  # type: ignore[arg-type]
        user_id=kw.pop("user_id", "tenant-acme"),  # type: ignore[arg-type]
        start_ns=t,
        duration_ns=kw.pop("duration_ns", 12_000_000),  # type: ignore[arg-type]
        cpu_ns=1_000_000,
        path=path,
        **kw,  # type: ignore[arg-type]
    )


def request(
    rid: str, t: int, tenant: str, endpoint: str, mid: str, rng: random.Random, error: bool = False
) -> list[Span]:
    """api -> mid (search | recommend | [red]x) -> product_details x2, and api -> cache."""
    common = {"endpoint": endpoint, "user_id": tenant}
    root = f"{rid}-root"
    out = [
        _span(
            rid, root, None, "api", ("api",), t, operation="handle", usage=(UsageItem("s3_get", count=1.0),), **common
        )
    ]
    mid_usage: tuple[UsageItem, ...]
    if mid == "recommend":
        mid_usage = (
            UsageItem("bedrock_claude_3_haiku", input_tokens=rng.randint(400, 900), output_tokens=rng.randint(50, 200)),
            UsageItem("openai_gpt4o_mini", input_tokens=300, output_tokens=80),
        )
    elif mid == MARKUP:
        mid_usage = (UsageItem("dynamodb_write", count=2.0), UsageItem("mystery_api_call", count=1.0))
    else:
        mid_usage = (UsageItem("dynamodb_read", count=float(rng.randint(1, 4))),)
    m = f"{rid}-mid"
    out.append(
        _span(
            rid,
            m,
            root,
            mid,
            ("api", mid),
            t + 1000,
            operation="run",
            usage=mid_usage,
            error=error,
            error_type="ThrottlingException" if error else None,
            **common,
        )
    )
    for k in range(2):
        out.append(
            _span(
                rid,
                f"{rid}-pd{k}",
                m,
                "product_details",
                ("api", mid, "product_details"),
                t + 2000 + k,
                usage=(UsageItem("dynamodb_read", count=1.0),),
                **common,
            )
        )
    out.append(
        _span(
            rid,
            f"{rid}-cache",
            root,
            "cache",
            ("api", "cache"),
            t + 5000,
            usage=(UsageItem("s3_put", count=1.0),),
            **common,
        )
    )
    return out


def make_spans(now_ns: int) -> list[Span]:
    """About 40 requests over the last hour plus one a day for 13 days before, and one big request."""
    rng = random.Random(5)
    spans: list[Span] = []
    mids = ("search", "recommend", "search", MARKUP)
    for i in range(40):
        t = now_ns - (59 - (i * 3) % 60) * MINUTE_NS - 30 * NANO
        spans += request(f"req-{i:03d}", t, TENANTS[i % 3], ENDPOINTS[i % 3], mids[i % 4], rng, error=i % 13 == 5)
    for d in range(1, 14):
        for j in range(1 + d % 4):
            t = now_ns - d * DAY_NS - (j + 1) * 3600 * NANO
            spans += request(f"old-{d:02d}-{j}", t, TENANTS[(d + j) % 3], ENDPOINTS[j % 3], mids[(d + j) % 4], rng)
    t = now_ns - 7 * MINUTE_NS
    big = request(BIG_REQUEST, t, "tenant-globex", "/api/recommend", "recommend", rng)
    big.append(
        _span(
            BIG_REQUEST,
            f"{BIG_REQUEST}-llm",
            f"{BIG_REQUEST}-mid",
            "summarise",
            ("api", "recommend", "summarise"),
            t + 3000,
            operation="bedrock",
            usage=(UsageItem("bedrock_claude_3_5_sonnet", input_tokens=40_000, output_tokens=6_000),),
            endpoint="/api/recommend",
            user_id="tenant-globex",
        )
    )
    return spans + big


def build(db_path: Path, now_ns: int) -> list[Span]:
    """Write the fixed data set to ``db_path`` through the real write path; returns the spans."""
    spans = make_spans(now_ns)
    conn = connect(db_path)
    try:
        book = PriceBook.default()
        for i in range(0, len(spans), 50):
            write_batch_sync(conn, prepare_batch(spans[i : i + 50], book))
        write_batch_sync(
            conn,
            prepare_batch([], book),
            dead_letters=[("spendtrace.spans", 0, 7, b"k", b"\x00garbage", "undecodable msgpack")],
        )
    finally:
        conn.close()
    add_alert_fixture(db_path, now_ns)
    return spans


def add_alert_fixture(db_path: Path, now_ns: int) -> None:
    """One rule through the alerts API and one fired event (as the evaluator records it)."""
    from spendtrace.server.alerts.rules import set_alert

    set_alert(feature="recommend", threshold=0.05, window_hours=1, name="recs-hourly", db_path=str(db_path))
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            rule_id = conn.execute("SELECT id FROM alert_rules WHERE name = 'recs-hourly'").fetchone()[0]
            conn.execute(
                "INSERT INTO alert_events (rule_id, rule_name, fired_ns, scope, scope_value, value_nano,"
                " threshold_nano, message, delivery) VALUES (?, 'recs-hourly', ?, 'feature', 'recommend', ?, ?, ?,"
                " 'none')",
                (rule_id, now_ns - 5 * MINUTE_NS, 61_234_567, 50_000_000, "recommend spent $0.0612 in 1h (> $0.05)"),
            )
    finally:
        conn.close()
