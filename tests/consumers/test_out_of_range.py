"""Values past what the stores' 64-bit columns hold (issue #15, item 2): dead letters per span, the batch goes on.

Before the bounds, ``input_tokens=2**63``, ``count=1e20`` or ``start_ns=2**63`` (all accepted by the old
wire schema) failed the whole batch's SQLite write and the worker exited.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from _worker_config import worker_config
from independent_pricing import cost_nano

from consumers.config import WorkerConfig
from consumers.testing import make_spans, produce, stored_offsets, wait_for
from consumers.worker import Worker
from spendtrace.schema import UsageItem, encode_span
from spendtrace.server.broker import EmbeddedBroker


def _config(broker: EmbeddedBroker, topic: str, db: Path) -> WorkerConfig:
    return worker_config(broker, topic, db)


def _out_of_range() -> dict[str, bytes]:
    """One encoded span per overflow the issue found, plus a weighted cost past the per-span bound."""
    good = make_spans(5, seed=31)[-1]  # a child span with usage

    def bad(span_id: str, **changes: Any) -> bytes:
        return encode_span(msgspec.structs.replace(good, span_id=span_id, **changes))

    return {
        "tokens": bad("tokens", usage=(UsageItem("bedrock_claude_3_haiku", "bedrock", input_tokens=2**63),)),
        "count": bad("count", usage=(UsageItem("dynamodb_read", "dynamodb", count=1e20),)),
        "start": bad("start", start_ns=2**63),
        "duration": bad("duration", duration_ns=2**63 - 1),
        "bytes": bad("bytes", usage=(UsageItem("s3_get", "s3", count=1.0, bytes=2**63),)),
        "weighted": bad("weighted", weight=1e12, usage=(UsageItem("dynamodb_read", "dynamodb", count=1e6),)),
    }


async def test_out_of_range_spans_become_dead_letters_and_the_rest_of_their_batch_is_stored(
    broker: EmbeddedBroker, topic_name: str, db_path: Path
) -> None:
    """Each span no store can hold is a dead letter naming the field; every other span is stored, to the nano-dollar."""
    spans = make_spans(400, seed=30)
    bad = _out_of_range()
    messages: list[tuple[bytes | None, bytes | None]] = []
    names = list(bad)
    for i, s in enumerate(spans):
        messages.append((s.request_id.encode(), encode_span(s)))
        if i % 60 == 30 and names:
            name = names.pop()
            messages.append((b"bad-" + name.encode(), bad[name]))
    assert not names
    ends = await produce(broker.bootstrap, topic_name, messages, partitions=3)
    cfg = _config(broker, topic_name, db_path)
    worker = Worker(cfg)
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(
            lambda: task.done() or stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == ends,
            90,
            "the worker to store every offset",
        )
        assert not task.done(), "the worker stopped on an out-of-range span"
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
    with sqlite3.connect(db_path) as conn:
        stored, cost = conn.execute("SELECT count(*), sum(cost_nano) FROM spans").fetchone()
        reasons = {bytes(k).decode()[4:]: r for k, r in conn.execute("SELECT key, reason FROM dead_letters")}
    assert stored == len(spans)
    assert cost == cost_nano(spans)
    assert set(reasons) == set(bad)
    assert "<= 17592186044415" in reasons["tokens"] and "<= 17592186044415" in reasons["count"]
    assert "<= 4102444800000000000" in reasons["start"] and "<= 3155760000000000000" in reasons["duration"]
    assert "cannot be stored" in reasons["weighted"] and "'weighted' costs" in reasons["weighted"]
    assert worker.stats.dead_letters == len(bad)


async def test_spans_dated_before_2000_or_ahead_of_the_worker_clock_are_dead_letters_with_the_reason(
    broker: EmbeddedBroker, topic_name: str, db_path: Path
) -> None:
    """A producer clock in 1970 or 2100 (the worker's clock is the authority, 1 h of slack): dead letters, not spend.

    Before, a 1970 span vanished from every total at the next retention run, and a 2100 one never aged out.
    """
    import time

    spans = make_spans(200, seed=32)
    good = spans[-1]
    now = time.time_ns()
    clocks = {
        "1970": 5 * 10**9,
        "1999": 946_684_799 * 10**9,
        "2100": 4_102_444_000 * 10**9,
        "two hours ahead": now + 2 * 3_600 * 10**9,
    }
    messages: list[tuple[bytes | None, bytes | None]] = [(s.request_id.encode(), encode_span(s)) for s in spans]
    for name, start in clocks.items():
        late = msgspec.structs.replace(good, span_id=f"clock-{name}", start_ns=start)
        messages.insert(50, (f"clock-{name}".encode(), encode_span(late)))
    soon = msgspec.structs.replace(good, span_id="ten-minutes-ahead", start_ns=now + 600 * 10**9)
    messages.append((b"soon", encode_span(soon)))
    ends = await produce(broker.bootstrap, topic_name, messages, partitions=3)
    cfg = _config(broker, topic_name, db_path)
    worker = Worker(cfg)
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: task.done() or stored_offsets(cfg.db_path, cfg.group_id, cfg.topic) == ends, 90,
                       "the worker to store every offset")  # fmt: skip
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
    with sqlite3.connect(db_path) as conn:
        stored = {r[0] for r in conn.execute("SELECT span_id FROM spans")}
        reasons = {bytes(k).decode(): r for k, r in conn.execute("SELECT key, reason FROM dead_letters")}
    assert stored == {s.span_id for s in spans} | {"ten-minutes-ahead"}
    assert set(reasons) == {f"clock-{n}" for n in clocks}
    assert "before 2000-01-01" in reasons["clock-1970"] and "before 2000-01-01" in reasons["clock-1999"]
    assert "ahead of this worker's clock" in reasons["clock-2100"]
    assert "2.0 h ahead" in reasons["clock-two hours ahead"] or "1.9 h ahead" in reasons["clock-two hours ahead"]
