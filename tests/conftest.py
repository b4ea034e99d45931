"""Shared fixtures: the real Kafka-protocol broker, a temporary database, a fixed clock."""

from __future__ import annotations

import ast
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spendtrace.server.broker import EmbeddedBroker

_topic_ids = itertools.count()

# Tests never ask the AWS Pricing API for rates (PriceBook.load would, where credentials exist).
os.environ.setdefault("SPENDTRACE_AWS_PRICING", "0")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One Tansu broker on a free loopback port for the whole test session."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    b = EmbeddedBroker(log_path=log).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, for tests that stop or restart it."""
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses, so tests sharing the session broker stay independent."""
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"t{next(_topic_ids)}-{safe}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a fresh SQLite database file."""
    return tmp_path / "cost_data.db"


#: 2026-11-02 12:00:00 UTC, a Monday, used as "now" by tests that need a fixed clock.
FIXED_NOW_NS = 1_793_620_800_000_000_000


@pytest.fixture
def fixed_now_ns() -> int:
    """A fixed wall-clock instant (ns since epoch) for tests and snapshots."""
    return FIXED_NOW_NS


@pytest.fixture(scope="session", autouse=True)
def _default_store_outside_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Spans a test records without configuring go to a temporary store, never to the checkout's cost_data.db."""
    where = tmp_path_factory.mktemp("default-store")
    saved = {"SPENDTRACE_DB": os.environ.get("SPENDTRACE_DB")}
    os.environ.setdefault("SPENDTRACE_DB", str(where / "cost_data.db"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _chdb_databases() -> set[tuple[str, str]]:
    """The (client settings, database) of every store this process created in chDB (none: chDB not loaded)."""
    client = sys.modules.get("spendtrace.server.store.clickhouse._client")
    if client is None:
        return set()
    return {key for key in client._migrated if "'chdb'" in key[0]}


@pytest.fixture(autouse=True)
def _drop_chdb_databases_a_test_made() -> Iterator[None]:
    """Drop the chDB databases a test created once it is done (the session's engine keeps the rest).

    Every table attached to the in-process engine keeps background tasks (part cleanup, merges) that
    wake several times a second: after the suite's few hundred chDB stores they used about 10% of a
    core for the rest of the session, which Textual's pilot counts as the app being busy (its
    ``wait_for_idle`` compares the process's CPU time with the wall clock), so the TUI tests after
    them waited up to 1 s per key (the rule-form test 6 s alone, 66 s in the suite). Databases made by
    module- or session-scoped fixtures are set up before this runs and stay.
    """
    before = _chdb_databases()
    yield
    made = [(settings, db) for settings, db in _chdb_databases() - before if db != "keep"]
    if not made:
        return
    import clickhouse_connect

    from spendtrace.server.store.clickhouse import _client

    for settings, db in made:
        client = clickhouse_connect.get_client(**dict(ast.literal_eval(settings)))
        try:
            client.command(f"DROP DATABASE IF EXISTS {db} SYNC")
        finally:
            client.close()
        _client._migrated.discard((settings, db))
