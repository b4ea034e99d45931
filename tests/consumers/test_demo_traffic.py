"""The demo traffic generator records real SDK spans and publishes them to the spans topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer

from consumers import demo_traffic
from spendtrace.schema import Span, decode_span
from spendtrace.server.broker import EmbeddedBroker


@pytest.fixture
def sdk_reset() -> Iterator[None]:
    """Leave no SDK export configuration behind."""
    from spendtrace.sdk import config as _config

    _config.reset()
    try:
        yield
    finally:
        _config.reset()


async def test_demo_publishes_nested_spans_for_three_tenants(
    broker: EmbeddedBroker, topic_name: str, sdk_reset: None
) -> None:
    """40 requests become decodable spans keyed by request, with nested features, tenants and priced usage keys."""
    argv = ["--bootstrap", broker.bootstrap, "--topic", topic_name, "--requests", "40", "--rate", "0", "--seed", "3"]
    assert demo_traffic.main(argv) == 0  # blocks this loop briefly; the SDK exports from its own thread
    consumer = AIOKafkaConsumer(topic_name, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    spans: list[Span] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        roots = 0
        while roots < 40 and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    span = decode_span(r.value)
                    assert r.key == span.request_id.encode()
                    spans.append(span)
            roots = sum(1 for s in spans if s.parent_id is None)
    finally:
        await consumer.stop()
    assert roots == 40
    assert {s.user_id for s in spans} == set(demo_traffic.TENANTS)
    assert max(len(s.path) for s in spans) >= 3  # api -> search -> product_details
    keys = {u.key for s in spans for u in s.usage}
    assert {"dynamodb_read", "bedrock_claude_3_haiku"} <= keys
