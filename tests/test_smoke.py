"""Smoke tests of the foundation: the package imports and the session broker answers Kafka clients."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import spendtrace
from spendtrace.server.broker import EmbeddedBroker


def test_public_api_is_sorted() -> None:
    """``__all__`` is sorted and names only things importable from the package."""
    assert spendtrace.__all__ == sorted(spendtrace.__all__)
    missing = [name for name in spendtrace.__all__ if getattr(spendtrace, name, None) is None]
    assert missing == []


async def test_broker_round_trip(broker: EmbeddedBroker, topic_name: str) -> None:
    """A message produced with acks=all and gzip comes back to a consumer group member."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type="gzip")
    await producer.start()
    try:
        await producer.send_and_wait(topic_name, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic_name, bootstrap_servers=broker.bootstrap, group_id="smoke", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        msg = await consumer.getone()
    finally:
        await consumer.stop()
    assert (msg.key, msg.value) == (b"k", b"hello")
