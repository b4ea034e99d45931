"""Bedrock runtime: tokens of InvokeModel, Converse and their streaming forms, priced by model.

Token fields follow one convention for every provider (see ``UsageItem``): ``input_tokens`` never
includes cache reads or writes. Bedrock already reports them that way (Converse ``inputTokens``,
Anthropic's ``input_tokens``, the ``x-amzn-bedrock-*-token-count`` headers), so they are copied
as they are; Anthropic's 1-hour cache writes (``cache_creation.ephemeral_1h_input_tokens`` or a
Converse ``cacheDetails`` entry with ``ttl == "1h"``) go to ``cache_write_1h_tokens``.

Streams are observed, not consumed: the response's ``EventStream`` becomes an instance of a
subclass that watches the events go by and records once, when the stream ends, is closed or
is collected, in the context of the call that opened it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

from spendtrace.schema import MAX_KEY_LEN, UsageItem
from spendtrace.sdk.instrument._common import DeferredUsage, note_error
from spendtrace.sdk.instrument._models import model_key, profile_geography

__all__ = ["converse_usage", "invoke_model_usage", "observe_stream", "profile_geography"]

WHERE = "bedrock"


class _Tokens:
    """Running token counts of one Bedrock call."""

    __slots__ = ("cache_1h", "cache_read", "cache_write", "input", "output", "seen")

    def __init__(self) -> None:
        self.input = self.output = self.cache_read = self.cache_write = self.cache_1h = 0
        self.seen = False

    def item(self, model_id: str) -> UsageItem | None:
        if not self.seen:
            return None
        return UsageItem(
            key=model_key("bedrock", model_id),
            service="bedrock",
            count=1.0,
            input_tokens=self.input,
            output_tokens=self.output,
            cache_read_tokens=self.cache_read,
            cache_write_tokens=max(0, self.cache_write - self.cache_1h),
            cache_write_1h_tokens=self.cache_1h,
            provider="bedrock",
            model=model_id[:MAX_KEY_LEN] or None,
            region=profile_geography(model_id),
        )

    def anthropic(self, usage: Mapping[str, Any], *, output_only: bool = False) -> None:
        """Take Anthropic ``usage`` (messages API); ``message_delta`` events carry cumulative output only."""
        self.seen = True
        self.output = _int(usage.get("output_tokens"), self.output)
        if output_only and "input_tokens" not in usage:
            return
        self.input = _int(usage.get("input_tokens"), self.input)
        self.cache_read = _int(usage.get("cache_read_input_tokens"), self.cache_read)
        self.cache_write = _int(usage.get("cache_creation_input_tokens"), self.cache_write)
        split = usage.get("cache_creation")
        if isinstance(split, Mapping):
            self.cache_1h = _int(split.get("ephemeral_1h_input_tokens"), self.cache_1h)

    def converse(self, usage: Mapping[str, Any]) -> None:
        """Take a Converse ``TokenUsage`` (camelCase, cache counts outside ``inputTokens``)."""
        self.seen = True
        self.input = _int(usage.get("inputTokens"), self.input)
        self.output = _int(usage.get("outputTokens"), self.output)
        self.cache_read = _int(usage.get("cacheReadInputTokens"), self.cache_read)
        self.cache_write = _int(usage.get("cacheWriteInputTokens"), self.cache_write)
        for detail in usage.get("cacheDetails") or ():
            if detail.get("ttl") == "1h":
                self.cache_1h = _int(detail.get("inputTokens"), 0)

    def metrics(self, metrics: Mapping[str, Any]) -> None:
        """Take ``amazon-bedrock-invocationMetrics`` of a stream's last chunk, unless the model's own usage came."""
        if self.seen:
            return
        self.seen = True
        self.input = _int(metrics.get("inputTokenCount"), 0)
        self.output = _int(metrics.get("outputTokenCount"), 0)
        self.cache_read = _int(metrics.get("cacheReadInputTokenCount"), 0)
        self.cache_write = _int(metrics.get("cacheWriteInputTokenCount"), 0)

    def body(self, doc: Mapping[str, Any]) -> None:
        """Take the usage of a non-streamed InvokeModel body, whatever the model family's format."""
        usage = doc.get("usage")
        if isinstance(usage, Mapping):
            if "input_tokens" in usage or "output_tokens" in usage:
                self.anthropic(usage)
            elif "inputTokens" in usage:  # Amazon Nova
                self.converse(usage)
                self.cache_read = _int(usage.get("cacheReadInputTokenCount"), self.cache_read)
                self.cache_write = _int(usage.get("cacheWriteInputTokenCount"), self.cache_write)
            return
        if "prompt_token_count" in doc:  # Meta Llama
            self.seen = True
            self.input = _int(doc.get("prompt_token_count"), 0)
            self.output = _int(doc.get("generation_token_count"), 0)
        elif "inputTextTokenCount" in doc:  # Amazon Titan text and embeddings
            self.seen = True
            self.input = _int(doc.get("inputTextTokenCount"), 0)
            self.output = sum(_int(r.get("tokenCount"), 0) for r in doc.get("results") or ())

    def headers(self, headers: Mapping[str, Any]) -> None:
        """Take the ``x-amzn-bedrock-*-token-count`` response headers every model gets."""
        raw_in = headers.get("x-amzn-bedrock-input-token-count")
        if raw_in is None:
            return
        self.seen = True
        self.input = _int(raw_in, 0)
        self.output = _int(headers.get("x-amzn-bedrock-output-token-count"), 0)
        self.cache_read = _int(headers.get("x-amzn-bedrock-cache-read-input-token-count"), 0)
        self.cache_write = _int(headers.get("x-amzn-bedrock-cache-write-input-token-count"), 0)


def _int(value: Any, default: int) -> int:
    if value is None:
        return default
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def _headers(http_response: Any, parsed: Mapping[str, Any]) -> Mapping[str, Any]:
    headers: Mapping[str, Any] | None = getattr(http_response, "headers", None)
    if headers and "x-amzn-bedrock-input-token-count" in headers:
        return headers
    meta: Mapping[str, Any] = parsed.get("ResponseMetadata") or {}
    http_headers: Mapping[str, Any] = meta.get("HTTPHeaders") or {}
    return http_headers


def invoke_model_usage(model_id: str, http_response: Any, parsed: dict[str, Any]) -> UsageItem | None:
    """Usage of a non-streamed InvokeModel call; re-wraps the body it reads so the app can still read it.

    The body is read only when the headers do not say everything: always for Anthropic models
    (the 5-minute / 1-hour cache-write split is only in the body), and for any model without headers.
    """
    tokens = _Tokens()
    tokens.headers(_headers(http_response, parsed))
    normal = model_id.lower()
    if (not tokens.seen or "anthropic." in normal) and "body" in parsed:
        from botocore.response import StreamingBody

        data = parsed["body"].read()
        parsed["body"] = StreamingBody(io.BytesIO(data), len(data))
        if data[:1] == b"{":
            doc = json.loads(data)
            if isinstance(doc, Mapping):
                before = tokens.seen
                tokens.seen = False
                tokens.body(doc)
                tokens.seen = tokens.seen or before
    return tokens.item(model_id)


def converse_usage(model_id: str, parsed: Mapping[str, Any]) -> UsageItem | None:
    """Usage of a Converse call."""
    usage = parsed.get("usage")
    if not isinstance(usage, Mapping):
        return None
    tokens = _Tokens()
    tokens.converse(usage)
    return tokens.item(model_id)


def _watch_invoke_event(tokens: _Tokens, event: Mapping[str, Any]) -> None:
    chunk = event.get("chunk")
    if not chunk:
        return
    data = chunk.get("bytes") or b""
    if b"usage" not in data and b"invocationMetrics" not in data:
        return  # most chunks are text deltas: skip the JSON parse
    doc = json.loads(data)
    kind = doc.get("type")
    if kind == "message_start":
        tokens.anthropic((doc.get("message") or {}).get("usage") or {})
    elif kind == "message_delta":
        tokens.anthropic(doc.get("usage") or {}, output_only=True)
    elif isinstance(doc.get("usage"), Mapping) and kind is None:
        tokens.body(doc)
    metrics = doc.get("amazon-bedrock-invocationMetrics")
    if isinstance(metrics, Mapping):
        tokens.metrics(metrics)


def _watch_converse_event(tokens: _Tokens, event: Mapping[str, Any]) -> None:
    meta = event.get("metadata")
    if meta and isinstance(meta.get("usage"), Mapping):
        tokens.converse(meta["usage"])


_EventStream: Any = None


def _observed_class() -> Any:
    """The ``EventStream`` subclass that watches events; built on first use so botocore loads lazily."""
    global _EventStream
    if _EventStream is None:
        from botocore.eventstream import EventStream

        class ObservedEventStream(EventStream):  # type: ignore[misc]
            """A botocore ``EventStream`` that also tallies token usage for spendtrace."""

            _st_tokens: _Tokens
            _st_watch: Any
            _st_deferred: DeferredUsage

            def __iter__(self) -> Iterator[Any]:
                try:
                    for event in super().__iter__():
                        try:
                            self._st_watch(self._st_tokens, event)
                        except Exception:
                            note_error(WHERE)
                        yield event
                finally:
                    self._st_deferred.finish()

            def close(self) -> None:
                self._st_deferred.finish()
                super().close()

            def __del__(self) -> None:
                deferred = getattr(self, "_st_deferred", None)
                if deferred is not None:
                    deferred.finish()

        _EventStream = ObservedEventStream
    return _EventStream


def observe_stream(stream: Any, model_id: str, converse: bool) -> None:
    """Make ``stream`` (a botocore ``EventStream``) record the call's usage once it has been read."""
    cls = _observed_class()
    if not isinstance(stream, cls.__mro__[1]) or isinstance(stream, cls):
        return
    tokens = _Tokens()
    stream._st_tokens = tokens
    stream._st_watch = _watch_converse_event if converse else _watch_invoke_event
    stream._st_deferred = DeferredUsage(WHERE, lambda: tokens.item(model_id))
    stream.__class__ = cls
