"""What a worker needs to date retention and the ingest horizon, on ClickHouse (``IngestStore.retention_facts``).

Kept apart from the ingest store so that store's ``retention_facts`` is one line calling this.
"""

from __future__ import annotations

from spendtrace.server.model.ingest import RetentionFacts
from spendtrace.server.store.clickhouse._admin import get_retention
from spendtrace.server.store.clickhouse._client import Conn
from spendtrace.server.store.clickhouse._cutoff import APPLIED_KEY, record_applied_cutoff

__all__ = ["APPLIED_KEY", "read_retention_facts", "record_applied_cutoff"]

_DAY_NS = 86_400 * 1_000_000_000

def read_retention_facts(conn: Conn) -> RetentionFacts:
    """The stored raw-span retention (ns), the newest stored span start (None when ``spans`` is empty),
    and the latest raw cutoff a retention round applied (None: never).

    ``max`` of an empty table is 0 in ClickHouse, hence the count beside it; ``start_ns`` leads the
    primary key, so this reads one mark per part.
    """
    policy = get_retention(conn)
    count, newest = conn.tuples("SELECT count(), max(start_ns) FROM spans")[0]
    applied = conn.tuples("SELECT count(), max(updated_ns) FROM meta WHERE key = %s", (APPLIED_KEY,))[0]
    return RetentionFacts(
        policy.raw_data_days * _DAY_NS,
        int(newest) if int(count) else None,
        int(applied[1]) if int(applied[0]) else None,
    )
