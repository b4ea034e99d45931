"""``retention_facts`` (issue #15, item 5): the raw-span retention and the newest stored span start, on each backend.

The workers date retention and the ingest horizon with them, so both backends must answer alike:
nothing stored is ``None`` (ClickHouse's ``max`` of an empty table is 0), a shortened policy is seen.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_backends import BACKENDS

from consumers.testing import make_spans
from spendtrace.server.model.ingest import RetentionFacts
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.base import open_ingest_store, open_store

DAY_NS = 86_400 * 10**9


def _facts(name: str, url: str) -> RetentionFacts:
    if name == "sqlite":
        store = open_ingest_store(url)
        try:
            return store.retention_facts()
        finally:
            store.close()
    # the ClickHouse ingest store (issue #13, branch h13) answers with this function
    from spendtrace.server.store.clickhouse._client import connect
    from spendtrace.server.store.clickhouse._horizon import read_retention_facts

    conn = connect(url)
    try:
        return read_retention_facts(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_retention_facts_name_the_raw_retention_and_the_newest_span(name: str, tmp_path: Path) -> None:
    """Empty: the default 30 days and None; then the newest start stored, and a policy set since."""
    backend = BACKENDS[name](tmp_path)
    store = open_store(backend.url)
    try:
        assert _facts(name, backend.url) == RetentionFacts(30 * DAY_NS, None)
        spans = make_spans(50, seed=61, start_ns=1_700_000_000 * 10**9)
        backend.ingest(spans, PriceBook.default())
        store.set_retention(raw_data_days=7, hourly_rollups_days=365, daily_rollups_days=1825)
        assert _facts(name, backend.url) == RetentionFacts(7 * DAY_NS, max(s.start_ns for s in spans))
    finally:
        store.close()


def test_sqlite_records_the_raw_cutoff_a_retention_chunk_applied(tmp_path: Path) -> None:
    """The cutoff is stored with the deletes it dates and only moves forward (the local exporter's horizon)."""
    url = f"sqlite:///{tmp_path / 'facts.db'}"
    store = open_ingest_store(url)
    try:
        now = 1_800_000_000 * 10**9
        assert store.retention_chunk(now, 1_000).done
        assert store.retention_facts().applied_cutoff_ns == now - 30 * DAY_NS
        assert store.retention_chunk(now - DAY_NS, 1_000).done  # an earlier "now" never moves it back
        assert store.retention_facts().applied_cutoff_ns == now - 30 * DAY_NS
    finally:
        store.close()


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_both_backends_record_the_raw_cutoff_retention_applied(name: str, tmp_path: Path) -> None:
    """None before any round; a chunk records now - raw retention; an earlier "now" never moves it back.

    Before, ClickHouse recorded nothing (``applied_cutoff_ns`` always None), so its facts were not exact.
    """
    backend = BACKENDS[name](tmp_path)
    store = open_ingest_store(backend.url)
    try:
        assert store.retention_facts().applied_cutoff_ns is None
        now = 1_800_000_000 * 10**9
        while not store.retention_chunk(now, 1_000).done:
            pass
        assert store.retention_facts().applied_cutoff_ns == now - 30 * DAY_NS
        while not store.retention_chunk(now - DAY_NS, 1_000).done:
            pass
        assert store.retention_facts().applied_cutoff_ns == now - 30 * DAY_NS
        while not store.retention_chunk(now + DAY_NS, 1_000).done:
            pass
        assert store.retention_facts().applied_cutoff_ns == now - 29 * DAY_NS
    finally:
        store.close()
