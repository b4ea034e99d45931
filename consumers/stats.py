"""A worker's counters (``--metrics-port`` serves them), shared by the worker and its checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WorkerStats"]


@dataclass
class WorkerStats:
    """Counters since the worker started (exposed by ``--metrics-port``)."""

    batches: int = 0
    messages: int = 0
    #: spans decoded and priced (replays included)
    spans: int = 0
    #: spans that were new to the store, and those it already had (replays, duplicates)
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    kafka_commit_failures: int = 0
    #: batch writes retried because another writer held the store (``StoreBusyError``)
    db_retries: int = 0
    retention_runs: int = 0
    rebalances: int = 0
    #: partitions re-read from their beginning because Kafka's log no longer matched the store's offsets
    #: (broker restarted empty, topic deleted and recreated): each one is also an ERROR log line
    offset_resets: int = 0
    #: gaps where Kafka's log starts past the stored offset (retention deleted messages before a worker
    #: stored them) and the messages in them, never stored: each gap is also an ERROR log line
    offset_gaps: int = 0
    offsets_lost: int = 0
    last_commit_ns: int = 0
