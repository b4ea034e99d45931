"""Process-wide settings shared by the SDK and the server library (set by ``spendtrace.configure``).

Part of the kernel: it imports nothing of ours, so both layers can read it. ``before_read`` is
how a store reading a local database file lets this process's own exporter deliver first,
without the server library importing the SDK.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["before_read", "default_db_path", "set_before_read", "set_db_path"]

_db_path: str | None = None
_before_read: Callable[[str], None] | None = None


def default_db_path() -> str:
    """The SQLite store used when no path is given: ``configure(db=...)``, ``SPENDTRACE_DB``, or ``cost_data.db``."""
    return _db_path or os.environ.get("SPENDTRACE_DB") or "cost_data.db"


def set_db_path(path: str | os.PathLike[str] | None) -> None:
    """Override the default database path for this process (``None`` restores the default)."""
    global _db_path
    _db_path = os.fspath(path) if path is not None else None


def set_before_read(hook: Callable[[str], None] | None) -> None:
    """Install what ``before_read(path)`` calls (the SDK's ``flush_local``); ``None`` removes it."""
    global _before_read
    _before_read = hook


def before_read(path: str) -> None:
    """Before reading the database at ``path`` in this process: deliver spans this process is writing there."""
    hook = _before_read
    if hook is not None:
        hook(path)
