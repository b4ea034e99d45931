"""The store contract's backends: how to open a fresh store of each kind by URL and fill it.

This is the only backend-specific code of the contract; a new backend passes the suite by adding
a ``Backend`` to ``BACKENDS``.
"""

from __future__ import annotations

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


BACKENDS: dict[str, Callable[[Path], Backend]] = {"sqlite": _sqlite}
