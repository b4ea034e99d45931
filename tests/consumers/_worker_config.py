"""The worker configuration the consumer tests share: one group per test and timeouts the embedded broker needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consumers.config import WorkerConfig
from spendtrace.server.broker import EmbeddedBroker


def worker_config(
    broker: EmbeddedBroker, topic: str, db: Path | str, *, group: str = "g", batch_size: int = 100, **kw: Any
) -> WorkerConfig:
    """A worker on ``topic`` storing into ``db`` (a SQLite path or a store URL), in a group of its own for this test.

    A group per test, since the broker keeps a departed member's group busy for a while; a short session
    timeout, since the embedded broker holds a first join for half of it. ``kw`` overrides the rest.
    """
    settings: dict[str, Any] = {
        "bootstrap": broker.bootstrap,
        "db_path": str(db),
        "group_id": f"{topic}-{group}",
        "session_timeout_ms": 2_000,
        "heartbeat_interval_ms": 400,
        "topic": topic,
        "dlq_topic": f"{topic}.dlq",
        "alerts_topic": f"{topic}.alerts",
        "partitions": 3,
        "batch_size": batch_size,
    }
    return WorkerConfig(**(settings | kw))
