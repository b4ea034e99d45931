"""``spendtrace.reprice``: price stored usage again from the current price book, for a range of days.

The Python side of ``spendtrace reprice``: it opens the store (a URL, a SQLite path, or an open
store) and calls its ``AdminStore.reprice``. The book is the one given, else the default book with a
prices file's overrides (``prices=``, as ``spendtrace-consumer --prices``), else ``current_book()``
(the default book with in-process overrides such as ``AWSCostModel``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date
from typing import Any

from spendtrace.errors import ConfigError
from spendtrace.server.model.reprice import RepriceResult, ServiceChange
from spendtrace.server.pricing import PriceBook, current_book

__all__ = ["RepriceResult", "ServiceChange", "reprice", "undo_reprice"]


def _book(book: PriceBook | None, prices: str | os.PathLike[str] | None) -> PriceBook:
    if book is not None and prices is not None:
        raise ConfigError("give book= or prices=, not both")
    if book is not None:
        return book
    if prices is not None:
        return PriceBook.load(prices)
    return current_book()


def _open(db: str | os.PathLike[str] | None, store: Any) -> tuple[Any, bool]:
    """(the store, whether we opened it) from ``db`` / ``store`` (a URL, a path or an open store)."""
    if db is not None and store is not None:
        raise ConfigError("give db= or store=, not both")
    if store is not None and not isinstance(store, str | os.PathLike):
        if not callable(getattr(store, "reprice", None)):
            raise ConfigError(f"store {store!r} cannot reprice (not an AdminStore)")
        return store, False
    from spendtrace.server.store.base import open_store, resolve_store_url

    url = resolve_store_url(os.fspath(store) if store is not None else None, db)
    return open_store(url), True


def reprice(
    start: str | date,
    end: str | date,
    features: Sequence[str] | None = None,
    *,
    db: str | os.PathLike[str] | None = None,
    store: Any = None,
    prices: str | os.PathLike[str] | None = None,
    book: PriceBook | None = None,
    dry_run: bool = False,
    who: str | None = None,
    why: str = "",
) -> RepriceResult:
    """Price the stored usage of the UTC days ``[start, end)`` again; returns what changed.

    After a price is added for a model that was unpriced (``prices=`` file, ``AWSCostModel``, or
    ``book=``), its usage in the range becomes priced spend, and every total (rollups, fully-loaded,
    requests, dashboards) changes by exactly the spans' change. ``features`` limits it to spans of
    those features. Atomic on SQLite; recorded as a restatement of kind ``reprice`` (undo with
    ``undo_reprice`` / ``undo_restatement``) and listed by ``reconcile()`` reports. Only spans still
    stored raw (30 days by default) can be re-priced. ``dry_run=True`` reports and changes nothing.
    """
    priced_with = _book(book, prices)
    target, opened = _open(db, store)
    try:
        result: RepriceResult = target.reprice(
            start_date=start, end_date=end, features=features, book=priced_with, dry_run=dry_run, who=who, why=why
        )
        return result
    finally:
        if opened:
            target.close()


def undo_reprice(reprice_id: int, *, db: str | os.PathLike[str] | None = None, store: Any = None) -> int:
    """Take back reprice ``reprice_id`` (as ``undo_restatement``); returns the rows restored."""
    target, opened = _open(db, store)
    try:
        return int(target.undo_restatement(int(reprice_id)))
    finally:
        if opened:
            target.close()
