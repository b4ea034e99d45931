"""What a worker needs to date retention and the ingest horizon, on ClickHouse (``IngestStore.retention_facts``).

Kept apart from the ingest store so that store's ``retention_facts`` is one line calling this.
"""

from __future__ import annotations

from spendtrace.server.model.ingest import RetentionFacts
from spendtrace.server.store.clickhouse._admin import get_retention
from spendtrace.server.store.clickhouse._client import Conn

__all__ = ["read_retention_facts"]

_DAY_NS = 86_400 * 1_000_000_000


def read_retention_facts(conn: Conn) -> RetentionFacts:
    """The stored raw-span retention (ns) and the newest stored span start (None when ``spans`` is empty).

    The cutoff retention applied is not recorded on ClickHouse yet (``applied_cutoff_ns`` None): the
    workers' horizon does not need it; the local exporter, which does, writes SQLite only.

    ``max`` of an empty table is 0 in ClickHouse, hence the count beside it; ``start_ns`` leads the
    primary key, so this reads one mark per part.
    """
    policy = get_retention(conn)
    count, newest = conn.tuples("SELECT count(), max(start_ns) FROM spans")[0]
    return RetentionFacts(policy.raw_data_days * _DAY_NS, int(newest) if int(count) else None)
