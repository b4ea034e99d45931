"""The one exception hierarchy of spendtrace: catch ``SpendtraceError`` to catch them all."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "PricingError",
    "SchemaVersionError",
    "SpendtraceError",
    "StorageError",
    "StoreBusyError",
]


class SpendtraceError(Exception):
    """Base class of every error spendtrace raises on purpose."""


class ConfigError(SpendtraceError, ValueError):
    """A setting (argument, environment variable, file) is missing or malformed."""


class PricingError(SpendtraceError):
    """A price book could not be loaded or a rate is malformed."""


class StorageError(SpendtraceError):
    """The SQLite store could not be opened, migrated or written."""


class SchemaVersionError(StorageError):
    """The database was written by a newer spendtrace than this one."""


class StoreBusyError(StorageError):
    """Another writer holds the store's write lock past the wait; nothing was written, retry later."""
