"""The store contract's backends: how to open a fresh store of each kind by URL and fill it.

This is the only backend-specific code of the contract; a new backend passes the suite by adding
a ``Backend`` to ``BACKENDS``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spendtrace.schema import Span
from spendtrace.server.pricing import PriceBook


@dataclass
class Backend:
    """How the contract opens and fills one kind of store."""

    name: str
    url: str
    #: Store these spans priced with this book (one batch; its offsets are not the point here).
    ingest: Callable[[Sequence[Span], PriceBook], None]


def _sqlite(tmp_path: Path) -> Backend:
    db = tmp_path / "contract.db"

    def ingest(spans: Sequence[Span], book: PriceBook) -> None:
        # the SQLite backend's own ingest path; replaced by the IngestStore once every backend has one
        from spendtrace.server.store.sqlite._db import connect
        from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

        conn = connect(str(db))
        try:
            write_batch_sync(conn, prepare_batch(list(spans), book))
        finally:
            conn.close()

    return Backend("sqlite", f"sqlite:///{db}", ingest)


#: one client kept open on the session's chDB directory: the engine starts once, not at every open
_engine: list[object] = []


def chdb_url(tmp_path: Path) -> str:
    """A fresh database in this test session's one chDB directory (chDB allows one per process)."""
    root = tmp_path.parent / "chdb"
    if not _engine:
        from spendtrace.server.store.clickhouse._client import connect

        _engine.append(connect(f"chdb://{root}?database=keep"))
    return f"chdb://{root}?database=t_{uuid.uuid4().hex[:16]}"


def _chdb(tmp_path: Path) -> Backend:
    url = chdb_url(tmp_path)

    def ingest(spans: Sequence[Span], book: PriceBook) -> None:
        from spendtrace.server.ingest.prepare import prepare_batch
        from spendtrace.server.store.clickhouse._client import connect
        from spendtrace.server.store.clickhouse._ingest import write_batch

        conn = connect(url)
        try:
            write_batch(conn, prepare_batch(list(spans), book))
        finally:
            conn.close()

    return Backend("chdb", url, ingest)


BACKENDS: dict[str, Callable[[Path], Backend]] = {"sqlite": _sqlite, "chdb": _chdb}
