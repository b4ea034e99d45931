"""Topic creation at worker start-up: missing topics appear with the configured partition count, once."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.topics import ensure_topics


async def test_ensure_topics_creates_missing_ones_once(broker: EmbeddedBroker, topic_name: str) -> None:
    """The first call creates both topics with 3 partitions; a second call (another worker) creates nothing."""
    names = [f"{topic_name}.spans", f"{topic_name}.dlq"]
    assert sorted(await ensure_topics(broker.bootstrap, names, partitions=3)) == sorted(names)
    assert await ensure_topics(broker.bootstrap, names, partitions=3) == []
    c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await c.start()
    try:
        await c.topics()
        assert c.partitions_for_topic(names[0]) == {0, 1, 2}
        assert c.partitions_for_topic(names[1]) == {0, 1, 2}
    finally:
        await c.stop()
