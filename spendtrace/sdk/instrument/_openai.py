"""OpenAI: chat completions, responses and embeddings, sync and async, streamed or not.

Cached tokens: OpenAI's ``prompt_tokens_details.cached_tokens`` (chat) and
``input_tokens_details.cached_tokens`` (responses) are a *subset* of the prompt tokens. We record
``input_tokens = prompt - cached`` and ``cache_read_tokens = cached``, so no token is counted twice
and cached tokens are billed at the cached rate, not at $0 and not at the full rate. Newer API
versions also report ``cache_write_tokens`` in the same details, likewise part of the prompt: they
move from ``input_tokens`` to ``cache_write_tokens`` (their 30-minute / 12-hour split is not kept).

Streamed chat completions only report usage when asked (``stream_options={"include_usage": True}``).
When the caller did not ask and the client talks to ``api.openai.com``, we ask, and withhold the
extra usage-only chunk (empty ``choices``) from the caller, so the stream they read is the one they
would have read without us. Other endpoints (Azure, compatible servers) may reject the option, so
there we leave the request alone; such a stream records no tokens and the miss is counted
(``error_count("openai")``) and logged once.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from typing import Any

from spendtrace.schema import MAX_KEY_LEN, UsageItem
from spendtrace.sdk.instrument import _hooks, _stainless
from spendtrace.sdk.instrument._common import note_error
from spendtrace.sdk.instrument._models import model_key
from spendtrace.sdk.scope import record_usage

__all__ = ["install", "uninstall", "usage_item"]

WHERE = "openai"
_PATHS = ("/chat/completions", "/responses", "/embeddings")
_RAW_HEADER = "x-stainless-raw-response"


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _n(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def usage_item(model: str, usage: Any, service_tier: Any = None) -> UsageItem:
    """One ``UsageItem`` from an OpenAI ``usage`` object or dict (chat, responses or embeddings shape).

    ``model`` is kept as the API returned it and ``service_tier`` as the response reports it
    (``default``, ``flex``, ``priority`` ...): the consumers price by them.
    """
    if _get(usage, "input_tokens") is not None:  # responses API
        prompt = _n(_get(usage, "input_tokens"))
        output = _n(_get(usage, "output_tokens"))
        details = _get(usage, "input_tokens_details")
    else:  # chat completions, embeddings
        prompt = _n(_get(usage, "prompt_tokens"))
        output = _n(_get(usage, "completion_tokens"))
        details = _get(usage, "prompt_tokens_details")
    cached = min(_n(_get(details, "cached_tokens")), prompt)
    written = min(_n(_get(details, "cache_write_tokens")), prompt - cached)
    return UsageItem(
        key=model_key("openai", model),
        service="openai",
        count=1.0,
        input_tokens=prompt - cached - written,
        output_tokens=output,
        cache_read_tokens=cached,
        cache_write_tokens=written,
        provider="openai",
        model=model[:MAX_KEY_LEN] or None,
        service_tier=_tier(service_tier),
    )


def _tier(value: Any) -> str | None:
    """The reported service tier as a short string (the SDK may hand an enum or a str)."""
    if not value:
        return None
    return str(getattr(value, "value", value))[:64]


def _model(result: Any, options: Any) -> str:
    model = _get(result, "model")
    if not model:
        model = _get(_get(options, "json_data"), "model")
    return str(model or "")


class _Tally:
    """Usage seen in one stream: chat chunks (``usage`` on the last one) or responses events."""

    __slots__ = ("hide_usage_chunk", "model", "tier", "usage")

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Any = None
        self.tier: Any = None
        self.hide_usage_chunk = False

    def observe(self, item: Any) -> bool:
        usage = _get(item, "usage")
        if usage is not None:  # chat chunk
            self.usage = usage
            self.model = _get(item, "model") or self.model
            self.tier = _get(item, "service_tier") or self.tier
            return self.hide_usage_chunk and not _get(item, "choices")
        response = _get(item, "response")  # responses events: response.completed / incomplete / failed
        if response is not None and _get(response, "usage") is not None:
            self.usage = _get(response, "usage")
            self.model = _get(response, "model") or self.model
            self.tier = _get(response, "service_tier") or self.tier
        return False

    def build(self) -> UsageItem | None:
        if self.usage is None:
            note_error(WHERE + " stream without usage", exc_info=False)
            return None
        return usage_item(self.model, self.usage, self.tier)


def _handle(options: Any, result: Any) -> None:
    url = str(_get(options, "url") or "")
    if not url.endswith(_PATHS):
        return
    if hasattr(result, "_iterator"):  # Stream / AsyncStream
        tally = _Tally(_model(None, options))
        st = _stainless.StreamTally(tally.observe, tally.build, WHERE)
        _stainless.observe_stream(result, st, is_async=type(result).__name__.startswith("Async"))
        result._spendtrace_tally = tally
        return
    usage = _get(result, "usage")
    if usage is None and (doc := _stainless.raw_body(result)) is not None:
        usage, result = doc.get("usage"), doc
    if usage is not None:
        record_usage(usage_item(_model(result, options), usage, _get(result, "service_tier")))


def _wants_injection(resource: Any, kwargs: Mapping[str, Any]) -> bool:
    if kwargs.get("stream") is not True:
        return False
    chosen = kwargs.get("stream_options")
    if chosen is not None and type(chosen).__name__ not in ("Omit", "NotGiven"):  # the SDK's "not given" markers
        return False
    headers = kwargs.get("extra_headers") or {}
    if any(str(k).lower() == _RAW_HEADER for k in headers):
        return False  # raw responses are parsed by the caller later: we could not withhold the chunk
    client = getattr(resource, "_client", None)
    return getattr(getattr(client, "base_url", None), "host", "") == "api.openai.com"


def _mark_injected(result: Any) -> None:
    tally = getattr(result, "_spendtrace_tally", None)
    if tally is not None:  # nothing was read yet: the stream was only just returned
        tally.hide_usage_chunk = True


def _wrap_create(original: Any, is_async: bool) -> Any:
    """``Completions.create`` that asks for usage on streams (see the module doc)."""
    if is_async:

        @functools.wraps(original)
        async def acreate(self: Any, *args: Any, **kwargs: Any) -> Any:
            inject = _wants_injection(self, kwargs)
            if inject:
                kwargs["stream_options"] = {"include_usage": True}
            result = await original(self, *args, **kwargs)
            if inject:
                _mark_injected(result)
            return result

        wrapper: Any = acreate
    else:

        @functools.wraps(original)
        def create(self: Any, *args: Any, **kwargs: Any) -> Any:
            inject = _wants_injection(self, kwargs)
            if inject:
                kwargs["stream_options"] = {"include_usage": True}
            result = original(self, *args, **kwargs)
            if inject:
                _mark_injected(result)
            return result

        wrapper = create
    wrapper.__spendtrace_original__ = original
    return wrapper


def _patch(module: object = None) -> bool:
    from openai import _base_client
    from openai.resources.chat.completions import completions

    if not _stainless.patch(_base_client.SyncAPIClient, _base_client.AsyncAPIClient, _handle, WHERE):
        note_error(WHERE + " (unknown SDK shape)", exc_info=False)
        return False
    for cls, is_async in ((completions.Completions, False), (completions.AsyncCompletions, True)):
        create = cls.__dict__.get("create")
        if create is not None and not hasattr(create, "__spendtrace_original__"):
            setattr(cls, "create", _wrap_create(create, is_async))  # noqa: B010
    return True


def install() -> bool:
    """Hook the OpenAI SDK now, or when the app first imports it; ``False`` if it is not installed or unknown."""
    return _hooks.install_when_imported("openai", _patch)


def uninstall() -> None:
    """Undo ``install``."""
    if "openai" not in sys.modules:
        return
    from openai import _base_client
    from openai.resources.chat.completions import completions

    _stainless.unpatch(_base_client.SyncAPIClient, _base_client.AsyncAPIClient)
    for cls in (completions.Completions, completions.AsyncCompletions):
        original = getattr(cls.__dict__.get("create"), "__spendtrace_original__", None)
        if original is not None:
            setattr(cls, "create", original)  # noqa: B010
