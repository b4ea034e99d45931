"""Connecting: a store URL to a ``clickhouse_connect`` client on the right database, with the schema migrated.

``chdb:///abs/dir`` (optionally ``?database=name``, default ``spendtrace``) runs the ClickHouse engine
in this process (chDB: one data directory per process, shared by every client of it);
``clickhouse://user:pw@host:8123/db`` and ``clickhouses://...`` (TLS) reach a server over HTTP(S)
through the same client API, so every query and insert below is the same code on both.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from spendtrace.errors import ConfigError, StorageError
from spendtrace.server.store.clickhouse._ddl import MIGRATIONS

__all__ = ["Conn", "connect", "parse_url", "private_dir"]

_DEFAULT_DB = "spendtrace"
_migrated: set[tuple[str, str]] = set()
_migrate_lock = threading.Lock()


def parse_url(url: str) -> tuple[str, dict[str, Any], str]:
    """(scheme, ``get_client`` keyword arguments without the database, database) of a store URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if scheme == "chdb":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ConfigError(f"store URL {url!r} names no chDB directory (chdb:///path/dir)")
        database = query.pop("database", _DEFAULT_DB)
        return scheme, {"interface": "chdb", "path": path}, database
    if scheme in ("clickhouse", "clickhouses"):
        database = unquote(parts.path.lstrip("/")) or query.pop("database", _DEFAULT_DB)
        kwargs: dict[str, Any] = {
            "host": parts.hostname or "localhost",
            "username": unquote(parts.username or "default"),
            "password": unquote(parts.password or ""),
            "secure": scheme == "clickhouses",
        }
        if parts.port:
            kwargs["port"] = parts.port
        return scheme, kwargs, database
    raise ConfigError(f"not a ClickHouse store URL: {url!r}")


def _ident(name: str) -> str:
    if not name or not all(c.isalnum() or c == "_" for c in name):
        raise ConfigError(f"ClickHouse database name must be letters, digits and '_', got {name!r}")
    return name


class Conn:
    """One ``clickhouse_connect`` client on the store's database; calls are serialised (thread-safe)."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.database = database
        #: price book versions this connection has stored (``_ingest`` writes each once)
        self.books: set[str] = set()
        self._lock = threading.Lock()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of one query as dicts (``%s`` placeholders, bound client-side with escaping)."""
        try:
            with self._lock:
                result = self.client.query(sql, parameters=tuple(params) if params else None)
            return list(result.named_results())
        except Exception as exc:
            raise StorageError(f"ClickHouse query failed: {exc}") from exc

    def tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query as tuples."""
        try:
            with self._lock:
                result = self.client.query(sql, parameters=tuple(params) if params else None)
            return [tuple(r) for r in result.result_rows]
        except Exception as exc:
            raise StorageError(f"ClickHouse query failed: {exc}") from exc

    def column(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any]:
        """The first column of one query's result, as the client decoded it (no tuple per row)."""
        try:
            with self._lock:
                result = self.client.query(sql, parameters=tuple(params) if params else None)
            columns = result.result_columns
            return columns[0] if columns else ()
        except Exception as exc:
            raise StorageError(f"ClickHouse query failed: {exc}") from exc

    def command(self, sql: str, params: Sequence[Any] = (), settings: dict[str, Any] | None = None) -> None:
        """Run one statement that returns nothing (DDL, DELETE, INSERT ... SELECT)."""
        try:
            with self._lock:
                self.client.command(sql, parameters=tuple(params) if params else None, settings=settings)
        except Exception as exc:
            raise StorageError(f"ClickHouse statement failed: {exc}") from exc

    def insert(
        self,
        table: str,
        columns: Sequence[Sequence[Any]],
        names: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Insert column-oriented data (one list per column of ``names``) as one insert."""
        if not columns or not len(columns[0]):
            return
        try:
            with self._lock:
                self.client.insert(
                    table, list(columns), column_names=list(names), column_oriented=True, settings=settings
                )
        except Exception as exc:
            raise StorageError(f"ClickHouse insert into {table} failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self.client.close()


def _client(kwargs: dict[str, Any], database: str | None) -> Any:
    try:
        import clickhouse_connect
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ConfigError("ClickHouse stores need the clickhouse extra: pip install 'spendtrace[clickhouse]'") from exc
    extra: dict[str, Any] = {} if database is None else {"database": database}
    try:
        return clickhouse_connect.get_client(**kwargs, **extra)
    except Exception as exc:
        raise StorageError(f"cannot connect to ClickHouse ({kwargs.get('interface', 'http')}): {exc}") from exc


def private_dir(path: str) -> None:
    """Create a missing chDB data directory 0700 whatever the umask: it holds webhook URLs (alert rules),
    and the engine writes its files world-readable under the usual umask. An existing one keeps its mode."""
    if os.path.exists(path):
        return
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise StorageError(f"{path}: cannot create the chDB data directory: {exc}") from exc


def connect(url: str, *, readonly: bool = False) -> Conn:
    """A connection to the store at ``url``: the database is created and migrated unless ``readonly``."""
    scheme, kwargs, database = parse_url(url)
    database = _ident(database)
    if scheme == "chdb" and not readonly:
        private_dir(kwargs["path"])
    key = (repr(sorted(kwargs.items())), database)
    if not readonly and key not in _migrated:
        with _migrate_lock:
            boot = Conn(_client(kwargs, None), database)
            try:
                boot.command(f"CREATE DATABASE IF NOT EXISTS {database}")
            finally:
                boot.close()
            conn = Conn(_client(kwargs, database), database)
            migrate(conn)
            _migrated.add(key)
            return conn
    return Conn(_client(kwargs, database), database)


def migrate(conn: Conn) -> int:
    """Bring the database to the newest schema version (``schema_migrations``); returns that version.

    Every statement is idempotent (``IF NOT EXISTS``), so two processes migrating at once do no harm.
    """
    conn.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, applied_ns Int64) "
        "ENGINE = MergeTree ORDER BY version"
    )
    current = int(conn.tuples("SELECT max(version) FROM schema_migrations")[0][0] or 0)
    for version in sorted(v for v in MIGRATIONS if v > current):
        for statement in MIGRATIONS[version]:
            conn.command(statement)
        conn.insert("schema_migrations", [[version], [time.time_ns()]], ["version", "applied_ns"])
        current = version
    return current
