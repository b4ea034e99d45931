"""The hook shared by the ``openai`` and ``anthropic`` SDKs, which are generated from the same template.

Both SDKs turn every HTTP response into what the caller gets in one method of their base client,
``SyncAPIClient._process_response`` (and its async twin). Wrapping that one method per SDK covers
every path that returns usage: ``create``, ``parse``, the ``stream()`` helpers, ``beta``
resources, ``with_raw_response``, and clients created before ``auto_instrument()``. Wrapping the
public resource methods instead would miss Anthropic's ``messages.stream()`` and OpenAI's
``chat.completions.parse``, which post directly. The method is private, so ``install`` checks it is
there and reports the integration as not installed otherwise; the tests pin the behaviour.

A streamed response keeps its type: its inner iterator is replaced by one that watches the
items go by (and may withhold one the caller did not ask for), and records once at the end.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from spendtrace.schema import UsageItem
from spendtrace.sdk.context import is_suppressed
from spendtrace.sdk.instrument._common import DeferredUsage, note_error

__all__ = ["Handler", "StreamTally", "observe_stream", "patch", "raw_body", "unpatch"]

#: ``handler(options, result) -> None``: reads usage from one processed response (must not consume it).
Handler = Callable[[Any, Any], None]

_ORIGINAL = "__spendtrace_original__"


def patch(sync_cls: Any, async_cls: Any, handler: Handler, where: str) -> bool:
    """Wrap ``_process_response`` of both client classes (once); ``False`` if the SDK lacks it."""
    if not callable(getattr(sync_cls, "_process_response", None)) or not callable(
        getattr(async_cls, "_process_response", None)
    ):
        return False
    sync_orig = sync_cls._process_response
    if not hasattr(sync_orig, _ORIGINAL):

        @functools.wraps(sync_orig)
        def process_response(self: Any, **kwargs: Any) -> Any:
            result = sync_orig(self, **kwargs)
            if not is_suppressed():
                try:
                    handler(kwargs.get("options"), result)
                except Exception:
                    note_error(where)
            return result

        setattr(process_response, _ORIGINAL, sync_orig)
        sync_cls._process_response = process_response

    async_orig = async_cls._process_response
    if not hasattr(async_orig, _ORIGINAL):

        @functools.wraps(async_orig)
        async def aprocess_response(self: Any, **kwargs: Any) -> Any:
            result = await async_orig(self, **kwargs)
            if not is_suppressed():
                try:
                    handler(kwargs.get("options"), result)
                except Exception:
                    note_error(where)
            return result

        setattr(aprocess_response, _ORIGINAL, async_orig)
        async_cls._process_response = aprocess_response
    return True


def unpatch(*classes: Any) -> None:
    """Restore the original ``_process_response`` of each class."""
    for cls in classes:
        current = cls.__dict__.get("_process_response")
        original = getattr(current, _ORIGINAL, None)
        if original is not None:
            cls._process_response = original


class StreamTally:
    """What one streamed response has shown so far; ``observe(item)`` returns True to withhold ``item``."""

    __slots__ = ("deferred", "observe")

    def __init__(self, observe: Callable[[Any], bool], build: Callable[[], UsageItem | None], where: str) -> None:
        self.observe = observe
        self.deferred = DeferredUsage(where, build)


def observe_stream(stream: Any, tally: StreamTally, is_async: bool) -> None:
    """Make ``stream`` (an SDK ``Stream`` / ``AsyncStream``) report its items to ``tally`` and record at the end."""
    inner = stream._iterator  # on anthropic a cached_property: reading it creates it, the assignment shadows it
    where = tally.deferred.where
    ref = weakref.ref(stream)  # no strong reference back to the stream: no cycle that only the GC could free

    if is_async:

        async def awatch() -> AsyncIterator[Any]:
            try:
                async for item in inner:
                    try:
                        hide = tally.observe(item)
                    except Exception:
                        note_error(where)
                        hide = False
                    if not hide:
                        yield item
            finally:
                tally.deferred.finish()

        async def aclose() -> None:
            tally.deferred.finish()
            s = ref()
            if s is not None:
                await type(s).close(s)

        stream._iterator = awatch()
        stream.close = aclose
        return

    def watch() -> Iterator[Any]:
        try:
            for item in inner:
                try:
                    hide = tally.observe(item)
                except Exception:
                    note_error(where)
                    hide = False
                if not hide:
                    yield item
        finally:
            tally.deferred.finish()

    def close() -> None:
        tally.deferred.finish()
        s = ref()
        if s is not None:
            type(s).close(s)

    stream._iterator = watch()
    stream.close = close


def raw_body(result: Any) -> Mapping[str, Any] | None:
    """The JSON body of a ``with_raw_response`` result whose body was already read; never reads one itself."""
    http = getattr(result, "http_response", None)
    if http is None or getattr(http, "_content", None) is None:
        return None
    doc = json.loads(http.content)
    return doc if isinstance(doc, Mapping) else None
