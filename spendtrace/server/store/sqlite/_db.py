"""Open a spendtrace SQLite file: WAL, sane pragmas, and the schema created or migrated.

``PRAGMA user_version`` is the schema version. A file at an older version is upgraded in one
``BEGIN IMMEDIATE`` transaction (so two workers starting together migrate once); a file written
by a newer spendtrace is refused with ``SchemaVersionError``. ``docs/MIGRATIONS.md`` lists versions.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from spendtrace.errors import SchemaVersionError, StorageError
from spendtrace.server.store.sqlite._ddl import DDL_V1, DDL_V2, DDL_V3, DDL_V4, SCHEMA_VERSION

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["BUSY_TIMEOUT_MS", "MIGRATIONS", "Guard", "connect", "connect_async", "migrate", "schema_version"]

#: How long a connection waits for another writer's lock before giving up.
BUSY_TIMEOUT_MS = 30_000

#: version -> statements that bring a file from version-1 to version. Append-only.
MIGRATIONS: dict[int, Sequence[str]] = {1: DDL_V1, 2: DDL_V2, 3: DDL_V3, 4: DDL_V4}

_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = OFF",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -65536",
)


def schema_version(conn: sqlite3.Connection) -> int:
    """The file's ``PRAGMA user_version``."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _too_new(path: object, found: int) -> SchemaVersionError:
    return SchemaVersionError(
        f"{path}: written by a newer spendtrace (schema {found}); this one reads up to {SCHEMA_VERSION}; "
        "upgrade spendtrace"
    )


def migrate(conn: sqlite3.Connection, path: object = "database") -> int:
    """Bring the schema up to ``SCHEMA_VERSION`` (no-op if current); returns the version found before."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise _too_new(path, found)
    if found == SCHEMA_VERSION:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = schema_version(conn)  # re-read under the write lock: another process may have migrated
        if before > SCHEMA_VERSION:
            raise _too_new(path, before)
        for version in range(before + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[version]:
                conn.execute(stmt)
        if before < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('migrated_ns', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(time.time_ns()),),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL, retrying while another connection holds it.

    Changing the journal mode needs the file to itself and SQLite does not call the busy handler
    for it, so several processes opening a new file at once would otherwise fail at random.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _create_private(p: Path) -> None:
    """Create a missing database file 0600 whatever the umask (it holds webhook URLs and keys).

    SQLite gives the ``-wal`` and ``-shm`` files the database file's mode, so they are 0600 too.
    An existing file keeps its mode (the operator chose it).
    """
    if str(p) == ":memory:" or p.exists():
        return
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageError(f"{p}: cannot create database: {exc}") from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def connect(
    path: str | os.PathLike[str], *, readonly: bool = False, check_same_thread: bool = True
) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode (callers issue ``BEGIN`` themselves), WAL, schema current.

    ``readonly=True`` opens an existing file without writing to it; it must already be at
    ``SCHEMA_VERSION`` (a newer file raises ``SchemaVersionError``, an older or foreign one
    ``StorageError``). Raises ``StorageError`` when the file cannot be opened.
    """
    p = Path(os.fspath(path))
    try:
        if readonly:
            if not p.exists():
                raise StorageError(f"{p}: no such database")
            conn = sqlite3.connect(
                f"{p.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=check_same_thread
            )
        else:
            _create_private(p)
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise StorageError(f"{p}: cannot open database: {exc}") from exc
    try:
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        if readonly:
            found = schema_version(conn)
            if found > SCHEMA_VERSION:
                raise _too_new(p, found)
            if found < SCHEMA_VERSION:
                raise StorageError(
                    f"{p}: schema {found} is older than {SCHEMA_VERSION}; open it once read-write to upgrade it"
                )
        else:
            _ensure_wal(conn)
            migrate(conn, p)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageError(f"{p}: not a usable spendtrace database: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_async(path: str | os.PathLike[str], *, readonly: bool = False) -> aiosqlite.Connection:
    """``connect`` for asyncio code (workers, TUI): an ``aiosqlite`` connection, autocommit, WAL, migrated.

    The schema check / migration runs once with ``sqlite3`` in a thread; needs the ``consumer`` or
    ``tui`` extra (aiosqlite).
    """
    try:
        import aiosqlite
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageError("connect_async needs aiosqlite: pip install 'spendtrace[consumer]'") from exc

    def _check() -> None:
        connect(path, readonly=readonly).close()

    await asyncio.to_thread(_check)
    p = Path(os.fspath(path))
    target = f"{p.resolve().as_uri()}?mode=ro" if readonly else str(p)
    aconn = await aiosqlite.connect(target, uri=readonly, isolation_level=None)
    try:
        for pragma in _PRAGMAS:
            await aconn.execute(pragma)
    except BaseException:
        await aconn.close()
        raise
    return aconn


class Guard:
    """Serialises calls on the store's connection and turns driver errors into ``StorageError``."""

    __slots__ = ("_lock", "_path")

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._path = path

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise StorageError(f"{self._path}: {exc}") from exc
