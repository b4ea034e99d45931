"""Opening and migrating the SQLite file: WAL, user_version, upgrade of older files, refusal of newer ones."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from spendtrace import SchemaVersionError, StorageError
from spendtrace.server.store.sqlite._db import connect, connect_async, schema_version
from spendtrace.server.store.sqlite._ddl import SCHEMA_VERSION

TABLES = {
    "meta",
    "spans",
    "requests",
    "rollup_minute",
    "rollup_hour",
    "rollup_day",
    "loaded_minute",
    "loaded_hour",
    "loaded_day",
    "unpriced_usage",
    "price_versions",
    "consumer_offsets",
    "dead_letters",
    "restatements",
    "restatement_undo",
    "alert_rules",
    "alert_state",
    "alert_events",
    "dash_block",
}


def tables(conn: sqlite3.Connection) -> set[str]:
    """Names of the user tables in the file."""
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_new_file_gets_the_current_schema_in_wal_mode(db_path: Path) -> None:
    """A fresh database is created at SCHEMA_VERSION, in WAL mode, with every table."""
    conn = connect(db_path)
    assert schema_version(conn) == SCHEMA_VERSION == 4
    assert tables(conn) >= TABLES
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)


def test_an_older_file_is_upgraded_and_keeps_its_data(db_path: Path) -> None:
    """A version-0 file (pre-schema, with data of its own) is migrated in place, its data intact."""
    old = sqlite3.connect(db_path)
    old.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    old.execute("INSERT INTO notes (text) VALUES ('keep me')")
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.execute("INSERT INTO meta VALUES ('owner', 'ops')")
    old.commit()
    old.close()
    conn = connect(db_path)
    assert schema_version(conn) == SCHEMA_VERSION
    assert tables(conn) >= TABLES
    assert conn.execute("SELECT text FROM notes").fetchall() == [("keep me",)]
    assert conn.execute("SELECT value FROM meta WHERE key = 'owner'").fetchone() == ("ops",)
    conn.close()
    assert schema_version(connect(db_path)) == SCHEMA_VERSION  # opening again is a no-op


def test_a_newer_file_is_refused_with_a_clear_message(db_path: Path) -> None:
    """A file written by a newer spendtrace raises SchemaVersionError and is left untouched."""
    connect(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    for readonly in (False, True):
        with pytest.raises(SchemaVersionError) as info:
            connect(db_path, readonly=readonly)
        msg = str(info.value)
        assert f"newer spendtrace (schema {SCHEMA_VERSION + 1})" in msg
        assert f"reads up to {SCHEMA_VERSION}" in msg and "upgrade spendtrace" in msg
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


async def test_async_connect_refuses_newer_and_migrates_older(tmp_path: Path) -> None:
    """``connect_async`` applies the same checks and migration as ``connect``."""
    newer = tmp_path / "newer.db"
    raw = sqlite3.connect(newer)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(SchemaVersionError, match="schema 99"):
        await connect_async(newer)
    aconn = await connect_async(tmp_path / "fresh.db")
    try:
        async with aconn.execute("PRAGMA user_version") as cur:
            assert (await cur.fetchone()) == (SCHEMA_VERSION,)
        async with aconn.execute("PRAGMA busy_timeout") as cur:
            row = await cur.fetchone()
            assert row is not None and row[0] > 0
    finally:
        await aconn.close()


def test_readonly_needs_a_current_file(tmp_path: Path) -> None:
    """Read-only opening never creates or migrates: missing and old files are StorageErrors, writes fail."""
    with pytest.raises(StorageError, match="no such database"):
        connect(tmp_path / "missing.db", readonly=True)
    old = tmp_path / "old.db"
    sqlite3.connect(old).execute("CREATE TABLE x (a)").connection.close()
    with pytest.raises(StorageError, match="open it once read-write"):
        connect(old, readonly=True)
    current = tmp_path / "cur.db"
    connect(current).close()
    ro = connect(current, readonly=True)
    assert ro.execute("SELECT count(*) FROM spans").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError):
        ro.execute("DELETE FROM spans")


def test_a_file_that_is_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    """Garbage bytes give a StorageError naming the file, not a raw sqlite3 exception."""
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=r"junk\.db"):
        connect(path)


def test_concurrent_first_opens_migrate_once(db_path: Path) -> None:
    """Several connections opening a fresh file at once all succeed and agree on the schema."""
    errors: list[BaseException] = []
    versions: list[int] = []

    def open_it() -> None:
        try:
            conn = connect(db_path)
            versions.append(schema_version(conn))
            conn.close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert versions == [SCHEMA_VERSION] * 6


def test_a_new_database_and_its_wal_and_shm_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    """The file holds webhook secrets: a process with umask 000 creates it, -wal and -shm readable by its owner only."""
    db = tmp_path / "secrets.db"
    code = textwrap.dedent(
        f"""
        import os, stat
        os.umask(0)
        from spendtrace.server.alerts.rules import set_alert
        from spendtrace.server.store.sqlite._db import connect
        set_alert(feature="f", threshold=1, webhook="https://hooks.example.com/T/s", db_path={str(db)!r})
        conn = connect({str(db)!r})
        conn.execute("BEGIN IMMEDIATE"); conn.execute("DELETE FROM alert_rules WHERE 0"); conn.execute("COMMIT")
        for suffix in ("", "-wal", "-shm"):
            print(suffix or "db", oct(stat.S_IMODE(os.stat({str(db)!r} + suffix).st_mode)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["db", "0o600", "-wal", "0o600", "-shm", "0o600"]


def test_an_existing_database_keeps_the_mode_its_operator_chose(tmp_path: Path) -> None:
    """Opening an existing file does not change its mode (a group-readable file stays so)."""
    db = tmp_path / "shared.db"
    connect(db).close()
    db.chmod(0o640)
    connect(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o640


def test_a_version_1_file_keeps_its_restatements_as_kind_restate(db_path: Path) -> None:
    """Version 2 adds kind / features / detail to restatements; a version-1 file's rows read as calibrations."""
    from spendtrace.server.store.sqlite._ddl import DDL_V1

    old = sqlite3.connect(db_path)
    for stmt in DDL_V1:
        old.execute(stmt)
    old.execute(
        "INSERT INTO restatements (created_ns, who, why, start_date, end_date, factor) "
        "VALUES (1, 'ops', 'calibrate', '2026-02-01', '2026-03-01', 1.05)"
    )
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    conn = connect(db_path)
    assert schema_version(conn) == SCHEMA_VERSION == 4
    row = conn.execute("SELECT who, factor, kind, features, detail FROM restatements").fetchone()
    assert row == ("ops", 1.05, "restate", "[]", "{}")
