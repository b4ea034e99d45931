"""Process-wide settings read by several parts of the SDK (set by ``spendtrace.configure``)."""

from __future__ import annotations

import os

__all__ = ["default_db_path", "set_db_path"]

_db_path: str | None = None


def default_db_path() -> str:
    """The SQLite store used when no path is given: ``configure(db=...)``, ``SPENDTRACE_DB``, or ``cost_data.db``."""
    return _db_path or os.environ.get("SPENDTRACE_DB") or "cost_data.db"


def set_db_path(path: str | os.PathLike[str] | None) -> None:
    """Override the default database path for this process (``None`` restores the default)."""
    global _db_path
    _db_path = os.fspath(path) if path is not None else None
