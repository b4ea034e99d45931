"""Settings of one consumer worker, shared by the CLI, the supervisor and the tests."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_ALERTS_TOPIC",
    "DEFAULT_DLQ_TOPIC",
    "DEFAULT_GROUP",
    "DEFAULT_SPANS_TOPIC",
    "WorkerConfig",
]

DEFAULT_SPANS_TOPIC = "spendtrace.spans"
DEFAULT_ALERTS_TOPIC = "spendtrace.alerts"
DEFAULT_DLQ_TOPIC = "spendtrace.dlq"
DEFAULT_GROUP = "spendtrace-consumers"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Where a worker reads from and writes to, and how big its batches are.

    ``batch_size`` bounds the records in one batch (one SQLite transaction each). With the writer
    process pricing and writing overlap, 20,000 measured fastest here (one worker, 600,000 spans:
    ~48k spans/s at 10,000, ~64k at 20,000, ~54k at 50,000): smaller batches pay more per
    transaction, larger ones leave the two processes idle longer while the pipeline fills and drains.
    On a store without atomic batches (ClickHouse) each partition's records are a batch and an insert
    of their own, so there it bounds each partition's share of a fetch (at most
    ``checkpoint.MAX_FETCH_PARTITIONS`` shares): an insert costs mostly per insert (a part in every table);
    ``max_fetch_bytes`` must exceed the largest message the topic may carry (a 1 MB garbage
    message must reach the dead letters, not wedge the partition). ``retention_chunk_rows`` bounds
    the rows one retention transaction deletes, so batches are stored between chunks.
    ``fetch_max_wait_ms`` is how long the broker may hold a fetch that has nothing yet: Kafka answers
    as soon as records arrive, so there it only sets the idle poll rate, but Tansu holds the fetch
    for the whole wait, which makes it the floor of a span's way to the store (aiokafka's 500 gave
    a 260 ms median from OTLP post to stored row).
    """

    bootstrap: str
    #: the store's URL (``sqlite:///``, ``chdb:///``, ``clickhouse://``) or a bare SQLite path
    db_path: str
    group_id: str = DEFAULT_GROUP
    topic: str = DEFAULT_SPANS_TOPIC
    dlq_topic: str = DEFAULT_DLQ_TOPIC
    alerts_topic: str = DEFAULT_ALERTS_TOPIC
    partitions: int = 6
    replication_factor: int = 1
    batch_size: int = 20_000
    poll_timeout_ms: int = 200
    max_fetch_bytes: int = 16 * 1024 * 1024
    max_message_bytes: int = 4 * 1024 * 1024
    prices_file: str | None = None
    retention_interval_s: float = 300.0
    retention_chunk_rows: int = 20_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 1_000
    fetch_max_wait_ms: int = 100
    client_id: str = "spendtrace-consumer"
