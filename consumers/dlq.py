"""Dead letters: messages a worker could not decode or validate, kept with the reason.

Each dead letter goes to the ``dead_letters`` table in the batch's own transaction (exactly
once, keyed by topic/partition/offset) and to the dead-letter topic (at least once: it is
produced before the transaction commits, so a crash in between repeats it, never loses it).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from spendtrace.server.model.ingest import DeadLetter

__all__ = ["DeadLetter", "publish_dead_letters"]


async def publish_dead_letters(producer: AIOKafkaProducer, dlq_topic: str, letters: list[DeadLetter]) -> None:
    """Send each dead letter's raw bytes to ``dlq_topic`` with where it came from and why in the headers."""
    if not letters:
        return
    pending = []
    for d in letters:
        headers = [
            ("reason", d.reason.encode("utf-8", "replace")),
            ("source_topic", d.topic.encode()),
            ("source_partition", str(d.partition).encode()),
            ("source_offset", str(d.offset).encode()),
        ]
        pending.append(await producer.send(dlq_topic, value=d.value, key=d.key, headers=headers))
    await asyncio.gather(*pending)
