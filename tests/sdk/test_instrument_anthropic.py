"""auto_instrument() on real Anthropic clients, answered by an httpx transport with realistic JSON and SSE."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest

import spendtrace
from spendtrace.schema import UNATTRIBUTED, Span, UsageItem
from spendtrace.sdk.instrument import auto_instrument, model_key, uninstrument

Handler = Callable[[httpx2.Request], httpx2.Response]
MODEL = "claude-haiku-4-5"


#: key (``<provider>:<model id>``, lower case), service, provider and raw model id (as the API returned it)
#: of the items these tests expect, by the model-family name older SDKs keyed them with.
_RAW: dict[str, dict[str, Any]] = {
    "anthropic_claude_haiku_4_5": {
        "key": "anthropic:claude-haiku-4-5-20251001",
        "service": "anthropic",
        "provider": "anthropic",
        "model": "claude-haiku-4-5-20251001",
    },
    "anthropic_claude_opus_4_1": {
        "key": "anthropic:claude-opus-4-1-20250805",
        "service": "anthropic",
        "provider": "anthropic",
        "model": "claude-opus-4-1-20250805",
    },
    "anthropic_claude_sonnet_4_5": {
        "key": "anthropic:claude-sonnet-4-5-20250929",
        "service": "anthropic",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5-20250929",
    },
}


@pytest.fixture
def instrumented() -> Iterator[None]:
    """anthropic instrumented for the test, removed afterwards."""
    assert "anthropic" in auto_instrument(only=["anthropic"])
    try:
        yield
    finally:
        uninstrument()


def _sync(handler: Handler) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def _async(handler: Handler) -> anthropic.AsyncAnthropic:
    transport = httpx2.MockTransport(handler)
    return anthropic.AsyncAnthropic(api_key="test", http_client=httpx2.AsyncClient(transport=transport))


def _items(spans: list[Span]) -> list[UsageItem]:
    return [u for s in spans for u in s.usage]


def _message(usage: dict[str, Any], model: str = "claude-sonnet-4-5-20250929") -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": usage}  # fmt: skip


def _json(doc: dict[str, Any]) -> Handler:
    return lambda request: httpx2.Response(200, json=doc)


START = {
    "type": "message_start",
    "message": {**_message({"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 100,
                            "cache_creation_input_tokens": 40,
                            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 40}},
                           model="claude-haiku-4-5-20251001"), "content": [], "stop_reason": None},
}  # fmt: skip
EVENTS: list[dict[str, Any]] = [
    START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 15}},
    {"type": "message_stop"},
]  # fmt: skip
STREAMED = UsageItem(**_RAW["anthropic_claude_haiku_4_5"], count=1.0, input_tokens=25,
                     output_tokens=15, cache_read_tokens=100, cache_write_1h_tokens=40)  # fmt: skip


def _sse(events: list[dict[str, Any]]) -> Handler:
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()
    return lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def test_cache_reads_and_writes_come_on_top_of_input_and_writes_split_by_lifetime(
    instrumented: None, spans: list[Span]
) -> None:
    """input 20 stays 20; 5000 cache reads, 1000 five-minute and 2000 one-hour writes are recorded apart."""
    usage = {"input_tokens": 20, "output_tokens": 10, "cache_read_input_tokens": 5000,
             "cache_creation_input_tokens": 3000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}}  # fmt: skip
    client = _sync(_json(_message(usage)))
    with spendtrace.track(feature="chat"):
        message = client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].type == "text"
    assert [(s.feature, s.usage) for s in spans] == [
        ("chat", (UsageItem(**_RAW["anthropic_claude_sonnet_4_5"], count=1.0, input_tokens=20,
                            output_tokens=10, cache_read_tokens=5000, cache_write_tokens=1000,
                            cache_write_1h_tokens=2000),)),
    ]  # fmt: skip


async def test_async_create_without_a_split_counts_writes_as_five_minute_ones(
    instrumented: None, spans: list[Span]
) -> None:
    """AsyncAnthropic messages.create records usage; cache writes without cache_creation are 5-minute writes."""
    usage = {"input_tokens": 7, "output_tokens": 3, "cache_creation_input_tokens": 900, "cache_read_input_tokens": 0}
    client = _async(_json(_message(usage, model="claude-opus-4-1-20250805")))
    async with spendtrace.track(feature="async"):
        await client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert _items(spans) == [
        UsageItem(**_RAW["anthropic_claude_opus_4_1"], count=1.0, input_tokens=7, output_tokens=3,
                  cache_write_tokens=900)
    ]  # fmt: skip


def test_raw_stream_events_record_start_and_delta_usage(instrumented: None, spans: list[Span]) -> None:
    """stream=True: input and cache tokens from message_start, output from the last message_delta, recorded once."""
    client = _sync(_sse(EVENTS))
    with spendtrace.track(feature="stream"):
        kinds = [e.type for e in client.messages.create(model=MODEL, max_tokens=64, messages=[], stream=True)]
    assert kinds == [e["type"] for e in EVENTS if e["type"] != "ping"]  # the SDK drops pings itself
    assert _items(spans) == [STREAMED]


def test_stream_helper_records_usage(instrumented: None, spans: list[Span]) -> None:
    """The messages.stream() helper (which posts without calling create) is recorded too."""
    client = _sync(_sse(EVENTS))
    with spendtrace.track(feature="helper"), client.messages.stream(model=MODEL, max_tokens=64, messages=[]) as s:
        assert s.get_final_text() == "Hello"
    assert _items(spans) == [STREAMED]


async def test_async_stream_helper_records_usage_outside_any_scope(instrumented: None, spans: list[Span]) -> None:
    """The async stream helper outside any scope records its usage on an __unattributed__ span."""
    client = _async(_sse(EVENTS))
    async with client.messages.stream(model=MODEL, max_tokens=64, messages=[]) as s:
        text = "".join([t async for t in s.text_stream])
    assert text == "Hello"
    assert [(s.feature, s.usage) for s in spans] == [(UNATTRIBUTED, (STREAMED,))]


def test_a_stream_closed_early_records_what_it_saw(instrumented: None, spans: list[Span]) -> None:
    """Leaving a stream after message_start still records the input and cache tokens already billed."""
    client = _sync(_sse(EVENTS))
    with (
        spendtrace.track(feature="early"),
        client.messages.create(model=MODEL, max_tokens=64, messages=[], stream=True) as stream,
    ):
        assert next(iter(stream)).type == "message_start"
    # recorded at close(), while the scope was open: in the scope's own span, not a late child
    assert [(s.feature, s.usage) for s in spans] == [
        ("early", (UsageItem(**_RAW["anthropic_claude_haiku_4_5"], count=1.0, input_tokens=25,
                             output_tokens=1, cache_read_tokens=100, cache_write_1h_tokens=40),)),
    ]  # fmt: skip


def test_count_tokens_is_not_recorded_and_uninstrument_stops_recording(spans: list[Span]) -> None:
    """messages.count_tokens is free and records nothing; after uninstrument() create records nothing either."""
    message = _message({"input_tokens": 1, "output_tokens": 1})

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/count_tokens"):
            return httpx2.Response(200, json={"input_tokens": 12})
        return httpx2.Response(200, json=message)

    client = _sync(handler)
    try:
        auto_instrument(only=["anthropic"])
        auto_instrument(only=["anthropic"])  # idempotent
        with spendtrace.track(feature="t"):
            assert client.messages.count_tokens(model=MODEL, messages=[]).input_tokens == 12
            client.messages.create(model=MODEL, max_tokens=8, messages=[])
    finally:
        uninstrument()
    with spendtrace.track(feature="t"):
        client.messages.create(model=MODEL, max_tokens=8, messages=[])
    assert [(u.input_tokens, u.output_tokens) for u in _items(spans)] == [(1, 1)]


def test_anthropic_calls_are_keyed_by_their_raw_model_id() -> None:
    """Dated ids, -latest and -0 aliases each keep their own key; a model newer than any table too."""
    cases = {
        "claude-3-5-haiku-latest": "anthropic:claude-3-5-haiku-latest",
        "claude-sonnet-4-0": "anthropic:claude-sonnet-4-0",
        "claude-sonnet-4-20250514": "anthropic:claude-sonnet-4-20250514",
        "claude-opus-4-6": "anthropic:claude-opus-4-6",
    }
    assert {m: model_key("anthropic", m) for m in cases} == cases
