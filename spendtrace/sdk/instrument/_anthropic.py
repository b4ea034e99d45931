"""Anthropic: messages (``create``, ``parse``, ``stream()`` and ``stream=True``), sync and async.

Cache tokens: Anthropic's ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` come *on
top of* ``input_tokens``, so they are copied as they are: ``input_tokens`` stays the uncached
input. Cache writes are split by lifetime when the response says (``usage.cache_creation``):
5-minute writes (1.25× the input rate) go to ``cache_write_tokens``, 1-hour writes (2×) to
``cache_write_1h_tokens``. Without the split, all writes count as 5-minute ones.

A stream's usage comes in two events: ``message_start`` (input and cache tokens, output so far)
and ``message_delta`` (cumulative output tokens, and in newer API versions the final input counts,
repeated cumulatively, sometimes without the cache-write split: the split from ``message_start`` is kept).
The model id is kept as the API returned it, and ``usage.service_tier`` (``standard``, ``priority``,
``batch``) when the response has it: the consumers price by them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from spendtrace.schema import MAX_KEY_LEN, UsageItem
from spendtrace.sdk.instrument import _hooks, _stainless
from spendtrace.sdk.instrument._common import note_error
from spendtrace.sdk.instrument._models import model_key
from spendtrace.sdk.scope import record_usage

__all__ = ["install", "uninstall", "usage_item"]

WHERE = "anthropic"


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _n(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


class _Counts:
    __slots__ = ("cache_read", "input", "output", "tier", "write_1h", "write_5m")

    def __init__(self) -> None:
        self.input = self.output = self.cache_read = self.write_5m = self.write_1h = 0
        self.tier: str | None = None

    def take(self, usage: Any, *, delta: bool = False) -> None:
        """Take a ``usage`` object; a ``message_delta``'s fields are cumulative and may be absent or null.

        A delta that repeats the cumulative cache-write total without its 5-minute / 1-hour split
        (what the API sends today) keeps the split ``message_start`` gave.
        """
        self.output = _n(_get(usage, "output_tokens")) or self.output
        tier = _get(usage, "service_tier")
        if tier:
            self.tier = str(tier)[:64]
        if delta and _get(usage, "input_tokens") is None:
            return
        self.input = _n(_get(usage, "input_tokens")) or (self.input if delta else 0)
        self.cache_read = _n(_get(usage, "cache_read_input_tokens")) or (self.cache_read if delta else 0)
        written = _n(_get(usage, "cache_creation_input_tokens"))
        split = _get(usage, "cache_creation")
        if split is not None:
            one_hour = _n(_get(split, "ephemeral_1h_input_tokens"))
            five_min = _n(_get(split, "ephemeral_5m_input_tokens"))
            written = max(written, one_hour + five_min)
        elif delta:
            one_hour = self.write_1h  # no split in the delta: the one seen so far still holds
        else:
            one_hour = 0
        if written or not delta:
            self.write_1h = min(one_hour, written)
            self.write_5m = written - self.write_1h

    def item(self, model: str) -> UsageItem:
        return UsageItem(
            key=model_key("anthropic", model),
            service="anthropic",
            count=1.0,
            input_tokens=self.input,
            output_tokens=self.output,
            cache_read_tokens=self.cache_read,
            cache_write_tokens=self.write_5m,
            cache_write_1h_tokens=self.write_1h,
            provider="anthropic",
            model=model[:MAX_KEY_LEN] or None,
            service_tier=self.tier,
        )


def usage_item(model: str, usage: Any) -> UsageItem:
    """One ``UsageItem`` from an Anthropic ``usage`` object or dict."""
    counts = _Counts()
    counts.take(usage)
    return counts.item(model)


class _Tally:
    __slots__ = ("counts", "model", "seen")

    def __init__(self, model: str) -> None:
        self.model = model
        self.counts = _Counts()
        self.seen = False

    def observe(self, event: Any) -> bool:
        kind = _get(event, "type")
        if kind == "message_start":
            message = _get(event, "message")
            self.model = _get(message, "model") or self.model
            usage = _get(message, "usage")
            if usage is not None:
                self.counts.take(usage)
                self.seen = True
        elif kind == "message_delta":
            usage = _get(event, "usage")
            if usage is not None:
                self.counts.take(usage, delta=True)
                self.seen = True
        return False

    def build(self) -> UsageItem | None:
        if not self.seen:
            note_error(WHERE + " stream without usage", exc_info=False)
            return None
        return self.counts.item(self.model)


def _model(result: Any, options: Any) -> str:
    return str(_get(result, "model") or _get(_get(options, "json_data"), "model") or "")


def _handle(options: Any, result: Any) -> None:
    url = str(_get(options, "url") or "")
    if not url.endswith("/messages"):  # not /messages/count_tokens or /messages/batches
        return
    if hasattr(type(result), "_iterator") or hasattr(result, "_iterator"):  # Stream / AsyncStream
        tally = _Tally(_model(None, options))
        st = _stainless.StreamTally(tally.observe, tally.build, WHERE)
        _stainless.observe_stream(result, st, is_async=type(result).__name__.startswith("Async"))
        return
    usage = _get(result, "usage")
    if usage is None and (doc := _stainless.raw_body(result)) is not None:
        usage, result = doc.get("usage"), doc
    if usage is not None:
        record_usage(usage_item(_model(result, options), usage))


def _patch(module: object = None) -> bool:
    from anthropic import _base_client

    if not _stainless.patch(_base_client.SyncAPIClient, _base_client.AsyncAPIClient, _handle, WHERE):
        note_error(WHERE + " (unknown SDK shape)", exc_info=False)
        return False
    return True


def install() -> bool:
    """Hook the Anthropic SDK now, or when the app first imports it; ``False`` if it is not installed or unknown."""
    return _hooks.install_when_imported("anthropic", _patch)


def uninstall() -> None:
    """Undo ``install``."""
    if "anthropic" not in sys.modules:
        return
    from anthropic import _base_client

    _stainless.unpatch(_base_client.SyncAPIClient, _base_client.AsyncAPIClient)
