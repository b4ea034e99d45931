"""Spans and usage items as older producers encoded them: for the wire-compatibility tests."""

from __future__ import annotations

import msgspec

from spendtrace.schema import UsageItem


class OldUsageItem(msgspec.Struct, array_like=True, frozen=True):
    """A usage item as producers sent it before provider, model, tier, region and architecture."""

    key: str
    service: str = ""
    count: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    bytes: int = 0
    gb_seconds: float = 0.0


class OldSpan(msgspec.Struct, array_like=True, frozen=True):
    """What an older producer knew: the same leading fields, without the last three."""

    span_id: str
    parent_id: str | None
    request_id: str
    feature: str
    operation: str | None = None
    endpoint: str | None = None
    user_id: str | None = None
    start_ns: int = 0
    duration_ns: int = 0
    cpu_ns: int = 0
    error: bool = False
    error_type: str | None = None
    usage: tuple[UsageItem, ...] = ()


class OldSpanOfOldItems(OldSpan, frozen=True):
    """An older producer's span whose usage items lack the trailing billing fields (same position)."""

    usage: tuple[OldUsageItem, ...] = ()  # type: ignore[assignment]
