"""Reconciliation types the ``ReconcileStore`` takes and returns: modelled spend, restatements, cached bills.

Below the storage interface so the store, the report and the apps share one definition of each.
Money is integer nano-dollars; days are UTC, bucket starts in epoch seconds (``*_s``), dates as
``YYYY-MM-DD`` strings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CachedPages", "ModelledSpend", "Restatement"]


@dataclass(frozen=True, slots=True)
class ModelledSpend:
    """What the model says one feature spent on one service in one UTC day (a per-service day rollup)."""

    day_s: int
    feature: str
    service: str
    cost_nano: int


@dataclass(frozen=True, slots=True)
class Restatement:
    """One recorded restatement of ``[start_date, end_date)``.

    ``kind`` is ``restate`` (a ``factor`` or per-service ``factors`` applied) or ``reprice`` (stored
    usage priced again from a price book; ``features`` it was limited to, none: all; ``detail`` its
    per-service totals before and after, nano-dollars).
    """

    id: int
    created_ns: int
    who: str
    why: str
    start_date: str
    end_date: str
    factor: float | None
    factors: dict[str, float] = field(default_factory=dict)
    undone_ns: int | None = None
    kind: str = "restate"
    features: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as a saved report lists it."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CachedPages:
    """A cached copy of a GetCostAndUsage response: its pages and when they were fetched (epoch ns)."""

    fetched_ns: int
    pages: list[dict[str, Any]]
