"""Create the spans, alerts and dead-letter topics when they are missing."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = ["ensure_topics"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


async def ensure_topics(
    bootstrap: str, names: Iterable[str], *, partitions: int, replication_factor: int = 1
) -> list[str]:
    """Create each topic in ``names`` that the cluster lacks; return the names created.

    Several workers may race to create the same topic: "already exists" counts as success.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="spendtrace-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in missing]
        )
        created = []
        for entry in response.topic_errors:  # (topic, error_code[, error_message]) depending on version
            topic, code = entry[0], entry[1]
            message = entry[2] if len(entry) > 2 else ""
            if code == 0:
                created.append(topic)
            elif code != _TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {topic!r}: error {code} {message}")
        if created:
            log.info("created topics %s with %d partitions", created, partitions)
        return created
    finally:
        await admin.close()
