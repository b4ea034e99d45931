"""Types the stores take and return, below the storage interface so every backend and app shares them.

Rows are plain dicts (column -> value) as the original README's query API returns them; money
is exact integer nano-dollars in ``*_nano`` keys beside USD floats.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

__all__ = ["Row", "TimeLike"]

#: One result row: column name -> value.
Row = dict[str, Any]
#: A point in time as the queries accept it: 'YYYY-MM-DD', an ISO datetime, a ``datetime`` (naive =
#: UTC), a ``date``, epoch nanoseconds, or ``None`` (unbounded).
TimeLike = str | date | datetime | int | float | None
