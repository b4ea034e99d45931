"""auto_instrument() on real OpenAI clients, answered by an httpx transport with realistic JSON and SSE."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest

import spendtrace
from spendtrace.schema import MAX_KEY_LEN, UNATTRIBUTED, Span, UsageItem
from spendtrace.sdk.instrument import KNOWN_PRICE_KEYS, auto_instrument, error_count, model_key, uninstrument

Handler = Callable[[httpx2.Request], httpx2.Response]


#: key (``<provider>:<model id>``, lower case), service, provider and raw model id (as the API returned it)
#: of the items these tests expect, by the model-family name older SDKs keyed them with.
_RAW: dict[str, dict[str, Any]] = {
    "openai_gpt4_1_mini": {
        "key": "openai:gpt-4.1-mini-2025-04-14",
        "service": "openai",
        "provider": "openai",
        "model": "gpt-4.1-mini-2025-04-14",
    },
    "openai_gpt4o": {
        "key": "openai:gpt-4o-2024-08-06",
        "service": "openai",
        "provider": "openai",
        "model": "gpt-4o-2024-08-06",
    },
    "openai_gpt4o_mini": {
        "key": "openai:gpt-4o-mini-2024-07-18",
        "service": "openai",
        "provider": "openai",
        "model": "gpt-4o-mini-2024-07-18",
    },
    "openai_text_embedding_3_small": {
        "key": "openai:text-embedding-3-small",
        "service": "openai",
        "provider": "openai",
        "model": "text-embedding-3-small",
    },
}


@pytest.fixture
def instrumented() -> Iterator[None]:
    """openai instrumented for the test, removed afterwards."""
    assert "openai" in auto_instrument(only=["openai"])
    try:
        yield
    finally:
        uninstrument()


def _sync(handler: Handler, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="test", http_client=httpx2.Client(transport=httpx2.MockTransport(handler)), **kwargs)


def _async(handler: Handler) -> openai.AsyncOpenAI:
    transport = httpx2.MockTransport(handler)
    return openai.AsyncOpenAI(api_key="test", http_client=httpx2.AsyncClient(transport=transport))


def _items(spans: list[Span]) -> list[UsageItem]:
    return [u for s in spans for u in s.usage]


CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_760_000_000,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop", "logprobs": None}
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 50,
        "total_tokens": 1250,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}

RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_760_000_000,
    "status": "completed",
    "model": "gpt-4.1-mini-2025-04-14",
    "output": [
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hi", "annotations": []}],
        }
    ],
    "usage": {
        "input_tokens": 300,
        "input_tokens_details": {"cached_tokens": 200, "cache_write_tokens": 0},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 340,
    },
}


def _json(doc: dict[str, Any]) -> Handler:
    return lambda request: httpx2.Response(200, json=doc)


def _sse(events: list[tuple[str | None, Any]], seen: list[dict[str, Any]] | None = None) -> Handler:
    """An SSE answer; each event is (event name or None, data); ``seen`` collects the request bodies."""
    lines = []
    for name, data in events:
        if name:
            lines.append(f"event: {name}")
        lines.append(f"data: {data if isinstance(data, str) else json.dumps(data)}\n")
    body = ("\n".join(lines) + "\n").encode()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if seen is not None:
            seen.append(json.loads(request.content))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return handler


def _chunk(content: str | None, usage: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": choices, "usage": usage}  # fmt: skip


CHAT_STREAM = [
    (None, _chunk("Hel")),
    (None, _chunk("lo", finish="stop")),
    (None, _chunk(None, {"prompt_tokens": 80, "completion_tokens": 2, "total_tokens": 82,
                         "prompt_tokens_details": {"cached_tokens": 64}})),
    (None, "[DONE]"),
]  # fmt: skip


def test_chat_completion_records_cached_tokens_as_a_subset_of_prompt_tokens(
    instrumented: None, spans: list[Span]
) -> None:
    """prompt 1200 with 1024 cached becomes input 176 + cache_read 1024: nothing counted twice, nothing at $0."""
    client = _sync(_json(CHAT))
    with spendtrace.track(feature="chat"):
        completion = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "hi"
    assert [(s.feature, s.usage) for s in spans] == [
        ("chat", (UsageItem(**_RAW["openai_gpt4o"], count=1.0, input_tokens=176, output_tokens=50,
                            cache_read_tokens=1024),)),
    ]  # fmt: skip


async def test_async_chat_and_responses_record_usage(instrumented: None, spans: list[Span]) -> None:
    """AsyncOpenAI chat.completions.create and responses.create record the same items as the sync client."""
    client = _async(lambda r: httpx2.Response(200, json=RESPONSE if r.url.path.endswith("/responses") else CHAT))
    async with spendtrace.track(feature="async"):
        await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        response = await client.responses.create(model="gpt-4.1-mini", input="hi")
    assert response.output_text == "hi"
    assert _items(spans) == [
        UsageItem(**_RAW["openai_gpt4o"], count=1.0, input_tokens=176, output_tokens=50,
                  cache_read_tokens=1024),
        UsageItem(**_RAW["openai_gpt4_1_mini"], count=1.0, input_tokens=100, output_tokens=40,
                  cache_read_tokens=200),
    ]  # fmt: skip


def test_responses_cache_writes_are_part_of_the_input(instrumented: None, spans: list[Span]) -> None:
    """input_tokens_details.cache_write_tokens moves out of input_tokens into cache_write_tokens."""
    doc = json.loads(json.dumps(RESPONSE))
    doc["usage"]["input_tokens_details"] = {"cached_tokens": 0, "cache_write_tokens": 250}
    client = _sync(_json(doc))
    with spendtrace.track(feature="r"):
        client.responses.create(model="gpt-4.1-mini", input="hi")
    assert _items(spans) == [
        UsageItem(**_RAW["openai_gpt4_1_mini"], count=1.0, input_tokens=50, output_tokens=40,
                  cache_write_tokens=250)
    ]  # fmt: skip


def test_embeddings_outside_any_scope_are_unattributed(instrumented: None, spans: list[Span]) -> None:
    """embeddings.create outside a scope records its prompt tokens on an __unattributed__ span."""
    doc = {"object": "list", "model": "text-embedding-3-small",
           "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
           "usage": {"prompt_tokens": 8, "total_tokens": 8}}  # fmt: skip
    client = _sync(_json(doc))
    client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert [(s.feature, s.usage) for s in spans] == [
        (UNATTRIBUTED, (UsageItem(**_RAW["openai_text_embedding_3_small"], count=1.0, input_tokens=8),))
    ]


def test_streamed_chat_asks_for_usage_and_hides_the_extra_chunk(instrumented: None, spans: list[Span]) -> None:
    """Without stream_options we ask for usage, record it, and the caller sees only the chunks it would have seen."""
    seen: list[dict[str, Any]] = []
    client = _sync(_sse(CHAT_STREAM, seen))
    with spendtrace.track(feature="stream"):
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True))
    assert seen[0]["stream_options"] == {"include_usage": True}
    assert [c.choices[0].delta.content for c in chunks] == ["Hel", "lo"]  # no usage-only chunk with empty choices
    assert _items(spans) == [
        UsageItem(**_RAW["openai_gpt4o_mini"], count=1.0, input_tokens=16, output_tokens=2,
                  cache_read_tokens=64)
    ]  # fmt: skip


async def test_async_streamed_chat_keeps_the_usage_chunk_the_caller_asked_for(
    instrumented: None, spans: list[Span]
) -> None:
    """When the caller asked for include_usage, its usage chunk is passed through and recorded once."""
    client = _async(_sse(CHAT_STREAM))
    async with spendtrace.track(feature="stream"):
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[], stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert [(u.key, u.input_tokens, u.cache_read_tokens, u.output_tokens) for u in _items(spans)] == [
        ("openai:gpt-4o-mini-2024-07-18", 16, 64, 2)
    ]


def test_chat_stream_helper_is_covered(instrumented: None, spans: list[Span]) -> None:
    """The chat.completions.stream() helper goes through the same hook: usage asked for and recorded."""
    client = _sync(_sse(CHAT_STREAM))
    with spendtrace.track(feature="helper"), client.chat.completions.stream(model="gpt-4o-mini", messages=[]) as s:
        text = "".join(e.delta for e in s if e.type == "content.delta")
    assert text == "Hello"
    assert [u.input_tokens + u.cache_read_tokens for u in _items(spans)] == [80]


def test_other_endpoints_are_not_sent_stream_options_and_the_miss_is_counted(
    instrumented: None, spans: list[Span]
) -> None:
    """A compatible server may reject stream_options, so it is not injected there; no usage means a counted miss."""
    seen: list[dict[str, Any]] = []
    events = [e for e in CHAT_STREAM if not (isinstance(e[1], dict) and e[1]["usage"])]
    client = _sync(_sse(events, seen), base_url="http://127.0.0.1:9/v1")
    before = error_count("openai stream without usage")
    with spendtrace.track(feature="local"):
        assert len(list(client.chat.completions.create(model="llama", messages=[], stream=True))) == 2
    assert "stream_options" not in seen[0]
    assert error_count("openai stream without usage") == before + 1
    assert _items(spans) == []


def test_streamed_responses_record_the_completed_event_usage(instrumented: None, spans: list[Span]) -> None:
    """responses.create(stream=True) records the usage carried by the response.completed event."""
    events = [
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": {**RESPONSE, "status": "in_progress", "output": [], "usage": None}}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1,
                                        "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "hi",
                                        "logprobs": []}),
        ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": RESPONSE}),
    ]  # fmt: skip
    client = _sync(_sse(events))
    with spendtrace.track(feature="resp"):
        kinds = [e.type for e in client.responses.create(model="gpt-4.1-mini", input="hi", stream=True)]
    assert kinds == ["response.created", "response.output_text.delta", "response.completed"]
    assert _items(spans) == [
        UsageItem(**_RAW["openai_gpt4_1_mini"], count=1.0, input_tokens=100, output_tokens=40,
                  cache_read_tokens=200)
    ]  # fmt: skip


def test_raw_responses_are_recorded_and_uninstrument_stops_recording(spans: list[Span]) -> None:
    """with_raw_response calls are recorded; after uninstrument() the same client records nothing."""
    client = _sync(_json(CHAT))
    try:
        auto_instrument(only=["openai"])
        auto_instrument(only=["openai"])  # idempotent: still one item per call
        with spendtrace.track(feature="raw"):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[])
            assert raw.parse().usage is not None
    finally:
        uninstrument()
    assert [u.input_tokens for u in _items(spans)] == [176]
    with spendtrace.track(feature="raw"):
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert len(_items(spans)) == 1


def test_openai_calls_are_keyed_by_their_raw_model_id() -> None:
    """Each id keeps its own key (a dated snapshot is not its family); no model is collapsed, none is invented."""
    cases = {
        "gpt-4o": "openai:gpt-4o",
        "gpt-4o-2024-05-13": "openai:gpt-4o-2024-05-13",  # its own price, not gpt-4o's
        "gpt-4o-2024-11-20": "openai:gpt-4o-2024-11-20",
        "ft:gpt-4o-mini-2024-07-18:acme::x1": "openai:ft:gpt-4o-mini-2024-07-18:acme::x1",
        " GPT-5-Mini ": "openai:gpt-5-mini",
        "text-embedding-3-large": "openai:text-embedding-3-large",
    }
    assert {m: model_key("openai", m) for m in cases} == cases
    assert model_key("openai", "") == model_key("openai", "  ") == "openai_unknown"
    assert model_key("openai", "x" * 300) == ("openai:" + "x" * 300)[:MAX_KEY_LEN]
    assert not any(k.startswith(("openai", "anthropic", "bedrock")) for k in KNOWN_PRICE_KEYS)
