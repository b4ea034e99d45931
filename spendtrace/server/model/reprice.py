"""What ``reprice`` returns: the range it re-priced and each service's spend before and after.

Below the storage interface so both backends, the facade and the CLI share one definition. Money
is integer nano-dollars; dates are UTC days, ``end`` exclusive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RepriceResult", "ServiceChange"]


@dataclass(frozen=True, slots=True)
class ServiceChange:
    """One service's stored spend over the re-priced spans, before and after (unpriced items too)."""

    service: str
    before_nano: int
    after_nano: int
    unpriced_before: int
    unpriced_after: int

    @property
    def delta_nano(self) -> int:
        """``after_nano - before_nano``."""
        return self.after_nano - self.before_nano


@dataclass(frozen=True, slots=True)
class RepriceResult:
    """A reprice of ``[start_date, end_date)``: recorded as restatement ``id`` (None for a dry run)."""

    id: int | None
    start_date: str
    end_date: str
    features: tuple[str, ...]
    price_version: str
    spans_seen: int
    spans_changed: int
    services: tuple[ServiceChange, ...] = field(default_factory=tuple)
    dry_run: bool = False

    @property
    def before_nano(self) -> int:
        """Spend of the re-priced spans before."""
        return sum(s.before_nano for s in self.services)

    @property
    def after_nano(self) -> int:
        """Spend of the re-priced spans after."""
        return sum(s.after_nano for s in self.services)

    @property
    def delta_nano(self) -> int:
        """How much the reprice changed the stored spend."""
        return self.after_nano - self.before_nano

    @property
    def unpriced_before(self) -> int:
        """Usage items with no price before."""
        return sum(s.unpriced_before for s in self.services)

    @property
    def unpriced_after(self) -> int:
        """Usage items with no price after."""
        return sum(s.unpriced_after for s in self.services)

    def detail(self) -> dict[str, Any]:
        """The per-service before / after totals as stored with the restatement record (JSON-ready)."""
        return {
            "price_version": self.price_version,
            "spans_seen": self.spans_seen,
            "services": {
                s.service: {
                    "before_nano": s.before_nano,
                    "after_nano": s.after_nano,
                    "unpriced_before": s.unpriced_before,
                    "unpriced_after": s.unpriced_after,
                }
                for s in self.services
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json``)."""
        out = asdict(self)
        out["features"] = list(self.features)
        out["services"] = [{**asdict(s), "delta_nano": s.delta_nano} for s in self.services]
        out.update(
            before_nano=self.before_nano,
            after_nano=self.after_nano,
            delta_nano=self.delta_nano,
            unpriced_before=self.unpriced_before,
            unpriced_after=self.unpriced_after,
        )
        return out
