"""Recording scopes: what each of cost_track, track, track_request and add_api_call puts in a span."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator

import pytest

import spendtrace
from spendtrace.schema import MAX_NAME_LEN, UNATTRIBUTED, Span, UsageItem
from spendtrace.sdk import clock as _clock
from spendtrace.sdk import scope as _scope


def by_feature(spans: list[Span]) -> dict[str, Span]:
    """Index spans by feature (the tests below use each feature once)."""
    return {s.feature: s for s in spans}


def test_readme_manual_instrumentation(spans: list[Span]) -> None:
    """The README's add_api_call example records both calls on the search span, in order."""

    @spendtrace.cost_track(feature="search")
    def search_products(query: str) -> str:
        spendtrace.add_api_call("dynamodb_read", count=3)
        spendtrace.add_api_call("bedrock_claude_3_haiku", input_tokens=512, output_tokens=128)
        return query.upper()

    assert search_products("shoes") == "SHOES"
    (span,) = spans
    assert span.feature == "search"
    assert span.parent_id is None
    assert span.request_id == span.span_id
    assert span.path == ("search",)
    assert [(u.key, u.count, u.input_tokens, u.output_tokens) for u in span.usage] == [
        ("dynamodb_read", 3.0, 0, 0),
        ("bedrock_claude_3_haiku", 1.0, 512, 128),
    ]
    assert span.weight == 1.0
    assert span.error is False and span.error_type is None
    assert span.duration_ns > 0 and span.start_ns > 1_700_000_000 * 10**9


def test_wraps_keeps_name_and_doc() -> None:
    """Decorated functions keep their name, docstring and wrapped reference."""

    @spendtrace.cost_track(feature="f")
    def documented() -> None:
        """Doc."""

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Doc."
    assert documented.__wrapped__ is not None  # type: ignore[attr-defined]


def test_error_flag_and_exception_propagates(spans: list[Span]) -> None:
    """An exception marks the span as an error with its class name and still reaches the caller."""

    @spendtrace.cost_track(feature="fails", operation="parse")
    def fails() -> None:
        spendtrace.add_api_call("s3_get")
        raise KeyError("missing")

    with pytest.raises(KeyError):
        fails()
    (span,) = spans
    assert (span.error, span.error_type, span.operation) == (True, "KeyError", "parse")
    assert [u.key for u in span.usage] == ["s3_get"]


def test_nested_spans_form_a_tree_with_distinct_paths(spans: list[Span]) -> None:
    """Children point at their parent, share the request id, and carry distinct features root first."""

    @spendtrace.cost_track(feature="product_details")
    def details() -> None:
        spendtrace.add_api_call("dynamodb_read")

    @spendtrace.cost_track(feature="search")
    def search() -> None:
        details()
        recurse()

    @spendtrace.cost_track(feature="search")
    def recurse() -> None:  # the same feature again below itself: listed once in the path
        details()

    @spendtrace.cost_track(feature="api")
    def api() -> None:
        search()

    api()
    assert [s.feature for s in spans] == ["product_details", "product_details", "search", "search", "api"]
    d1, d2, inner_search, outer_search, root = spans
    assert root.parent_id is None and root.request_id == root.span_id
    assert outer_search.parent_id == root.span_id
    assert inner_search.parent_id == outer_search.span_id
    assert d1.parent_id == outer_search.span_id and d2.parent_id == inner_search.span_id
    assert {s.request_id for s in spans} == {root.span_id}
    assert d2.path == ("api", "search", "product_details")
    assert inner_search.path == ("api", "search")
    assert len({s.span_id for s in spans}) == 5


async def test_async_function_and_track_block(spans: list[Span]) -> None:
    """``async`` functions and ``async with track`` record spans, nested as written."""

    @spendtrace.cost_track(feature="embed")
    async def embed() -> int:
        await asyncio.sleep(0)
        spendtrace.add_api_call("openai_embedding", input_tokens=10)
        return 7

    async with spendtrace.track(feature="embeddings", operation="batch") as block:
        assert block.span_id == spendtrace.current_span_id()
        assert await embed() == 7
    spans_by = by_feature(spans)
    assert spans_by["embed"].parent_id == spans_by["embeddings"].span_id
    assert spans_by["embeddings"].operation == "batch"
    assert spans_by["embed"].usage[0].input_tokens == 10


def test_sync_track_block_records_error(spans: list[Span]) -> None:
    """A ``with track`` block that raises records an error span and re-raises."""
    with pytest.raises(ZeroDivisionError), spendtrace.track(feature="math"):
        1 / 0  # noqa: B018
    (span,) = spans
    assert (span.feature, span.error_type) == ("math", "ZeroDivisionError")


async def test_track_as_decorator(spans: list[Span]) -> None:
    """``@track(feature=...)`` records each call like ``@cost_track``, sync or async."""

    @spendtrace.track(feature="decorated", operation="op")
    def sync_fn() -> int:
        return 1

    @spendtrace.track(feature="adecorated")
    async def async_fn() -> int:
        await asyncio.sleep(0)
        return 2

    assert sync_fn() + await async_fn() == 3
    assert [(s.feature, s.operation) for s in spans] == [("decorated", "op"), ("adecorated", None)]


def test_track_object_cannot_be_entered_twice_at_once(spans: list[Span]) -> None:
    """Re-entering an open track() is an error rather than a corrupted context."""
    block = spendtrace.track(feature="once")
    with block, pytest.raises(RuntimeError), block:
        pass
    assert [s.feature for s in spans] == ["once"]


def test_generator_span_covers_all_steps_only(spans: list[Span]) -> None:
    """A decorated generator records one span with the usage of every step, not the consumer's."""

    @spendtrace.cost_track(feature="rows")
    def rows() -> Iterator[int]:
        for i in range(3):
            spendtrace.add_api_call("dynamodb_read", count=i + 1)
            yield i

    seen = []
    for row in rows():
        seen.append(row)
        spendtrace.add_api_call("consumer_side")  # outside any scope: unattributed
    assert seen == [0, 1, 2]
    gen_span = by_feature(spans)["rows"]
    assert [u.count for u in gen_span.usage] == [1.0, 2.0, 3.0]
    assert [s.feature for s in spans].count(UNATTRIBUTED) == 3


def test_generator_closed_early_is_not_an_error(spans: list[Span]) -> None:
    """Breaking out of a decorated generator closes the span without the error flag."""

    @spendtrace.cost_track(feature="stream")
    def stream() -> Iterator[int]:
        yield from range(10)

    for i in stream():
        if i == 2:
            break
    (span,) = spans
    assert span.feature == "stream" and span.error is False


def test_generator_send_throw_and_return_value(spans: list[Span]) -> None:
    """send() values and the return value pass through; a raised exception marks the span."""

    @spendtrace.cost_track(feature="echo")
    def echo() -> Iterator[int]:
        got = yield 1
        try:
            yield got * 2
        except ValueError:
            raise RuntimeError("converted") from None

    g = echo()
    assert next(g) == 1
    assert g.send(21) == 42
    with pytest.raises(RuntimeError):
        g.throw(ValueError("boom"))
    (span,) = spans
    assert span.error_type == "RuntimeError"


async def test_async_generator(spans: list[Span]) -> None:
    """A decorated async generator yields through and records its steps' usage on one span."""

    @spendtrace.cost_track(feature="pages")
    async def pages() -> AsyncIterator[int]:
        for i in range(2):
            await asyncio.sleep(0)
            spendtrace.add_api_call("s3_list")
            yield i

    assert [p async for p in pages()] == [0, 1]
    (span,) = spans
    assert span.feature == "pages" and len(span.usage) == 2


def test_track_request_readme_example_with_callable_tenant(spans: list[Span]) -> None:
    """``user_id=current_tenant_id`` is called per request; nested spans inherit tenant and endpoint."""
    tenants = iter(["tenant-acme", "tenant-globex"])

    def current_tenant_id() -> str:
        return next(tenants)

    @spendtrace.cost_track(feature="search")
    def search_products(query: str) -> str:
        spendtrace.add_api_call("dynamodb_read")
        return query

    @spendtrace.track_request(endpoint="/api/search", user_id=current_tenant_id)
    def handle_request(query: str) -> str:
        return search_products(query)

    handle_request("a")
    handle_request("b")
    assert [(s.feature, s.user_id, s.endpoint) for s in spans] == [
        ("search", "tenant-acme", "/api/search"),
        ("search", "tenant-globex", "/api/search"),
    ]
    assert spans[0].request_id != spans[1].request_id
    assert all(s.parent_id is None for s in spans)  # the request scope records no span of its own


def test_track_request_with_feature_and_given_request_id(spans: list[Span]) -> None:
    """With ``feature=`` the request records its own root span; a given request id is kept."""
    with spendtrace.track_request(endpoint="/api", user_id="t1", request_id="req-abc-123", feature="api") as req:
        assert req.request_id == "req-abc-123"
        with spendtrace.track(feature="child"):
            pass
    child, root = spans
    assert root.request_id == child.request_id == "req-abc-123"
    assert child.parent_id == root.span_id and root.parent_id is None
    assert child.path == ("api", "child") and child.user_id == "t1"


def test_nested_track_request_joins_and_overrides(spans: list[Span]) -> None:
    """A nested request scope without an id joins the open request and overrides only what it sets."""
    with spendtrace.track_request(endpoint="/outer", user_id="t1", feature="outer"):
        with spendtrace.track_request(user_id="t2"), spendtrace.track(feature="inner"):
            pass
        with spendtrace.track(feature="after"):
            pass
    inner, after, outer = spans
    assert (inner.user_id, inner.endpoint, inner.parent_id) == ("t2", "/outer", outer.span_id)
    assert inner.request_id == outer.request_id
    assert after.user_id == "t1"


async def test_track_request_async_decorator_and_block(spans: list[Span]) -> None:
    """track_request decorates async functions and works as ``async with``."""

    @spendtrace.track_request(endpoint="/a", user_id="t", feature="handler")
    async def handler() -> str:
        await asyncio.sleep(0)
        return "ok"

    assert await handler() == "ok"
    async with spendtrace.track_request(endpoint="/b", user_id="u"):
        spendtrace.add_api_call("s3_put")
    handler_span, unattributed = spans
    assert (handler_span.feature, handler_span.endpoint) == ("handler", "/a")
    assert (unattributed.feature, unattributed.endpoint, unattributed.user_id) == (UNATTRIBUTED, "/b", "u")


def test_failing_tenant_callable_does_not_fail_the_request(spans: list[Span]) -> None:
    """A tenant callable that raises leaves user_id unset; non-string tenants are stringified."""

    def broken() -> str:
        raise LookupError("no tenant")

    with spendtrace.track_request(endpoint="/x", user_id=broken, feature="x"):
        pass
    with spendtrace.track_request(endpoint="/y", user_id=lambda: 42, feature="y"):
        pass
    assert [s.user_id for s in spans] == [None, "42"]


def test_unattributed_usage_outside_any_scope(spans: list[Span]) -> None:
    """add_api_call outside every scope becomes its own one-item __unattributed__ span."""
    spendtrace.add_api_call("s3_get", count=2, bytes=100)
    spendtrace.add_api_call("s3_get")
    first, second = spans
    assert first.feature == UNATTRIBUTED and first.path == (UNATTRIBUTED,)
    assert first.usage == (UsageItem("s3_get", count=2.0, bytes=100),)
    assert first.span_id != second.span_id and first.request_id != second.request_id


def test_usage_after_span_closed_is_kept_as_child(spans: list[Span]) -> None:
    """Usage recorded through a context that outlived its span arrives as a one-item child span."""
    late: list[object] = []

    @spendtrace.cost_track(feature="parent")
    def parent() -> None:
        late.append(spendtrace.run_in_context(spendtrace.add_api_call, "sqs_send"))

    parent()
    late_call = late[0]
    assert callable(late_call)
    late_call()
    parent_span, child = spans
    assert parent_span.usage == ()
    assert child.parent_id == parent_span.span_id and child.feature == "parent"
    assert [u.key for u in child.usage] == ["sqs_send"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"feature": ""}, ValueError),
        ({"feature": None}, TypeError),
        ({"feature": 3}, TypeError),
        ({"feature": "x" * (MAX_NAME_LEN + 1)}, ValueError),
        ({"feature": "ok", "operation": ""}, ValueError),
        ({"feature": "ok", "sample_rate": 1.5}, ValueError),
        ({"feature": "ok", "sample_rate": "0.5"}, TypeError),
    ],
)
def test_bad_scope_arguments_raise_at_the_call_site(kwargs: dict[str, object], error: type[Exception]) -> None:
    """cost_track and track reject bad names and rates when called, not later in the exporter."""
    with pytest.raises(error):
        spendtrace.cost_track(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(error):
        spendtrace.track(**kwargs)  # type: ignore[arg-type]


def test_bare_decorator_use_is_explained() -> None:
    """``@cost_track`` without a feature name says how to use it."""
    with pytest.raises(TypeError, match="feature"):

        @spendtrace.cost_track  # type: ignore[arg-type]
        def f() -> None:
            pass


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"endpoint": ""}, ValueError),
        ({"user_id": 5}, TypeError),
        ({"request_id": ""}, ValueError),
        ({"feature": ""}, ValueError),
        ({"sample_rate": -0.1}, ValueError),
    ],
)
def test_bad_request_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    """track_request validates endpoint, user, request id, feature and rate at the call site."""
    with pytest.raises(error):
        spendtrace.track_request(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("",), {}, ValueError),
        ((None,), {}, TypeError),
        (("k",), {"count": -1}, ValueError),
        (("k",), {"count": math.nan}, ValueError),
        (("k",), {"count": math.inf}, ValueError),
        (("k",), {"count": 10**400}, ValueError),  # an int no float holds (it raised OverflowError)
        (("k",), {"gb_seconds": 10**400}, ValueError),
        (("k",), {"count": "3"}, TypeError),
        (("k",), {"count": True}, TypeError),
        (("k",), {"input_tokens": -5}, ValueError),
        (("k",), {"input_tokens": 1.5}, TypeError),
        (("k",), {"bytes": -1}, ValueError),
        (("k",), {"gb_seconds": math.nan}, ValueError),
        (("k",), {"service": 1}, TypeError),
        (("k",), {"tokens": 1}, TypeError),  # unknown keyword
    ],
)
def test_add_api_call_rejects_bad_input(
    spans: list[Span], args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception]
) -> None:
    """Bad keys, negative / NaN / non-numeric units and unknown keywords raise and record nothing."""
    with spendtrace.track(feature="f"), pytest.raises(error):
        spendtrace.add_api_call(*args, **kwargs)  # type: ignore[arg-type]
    assert spans[0].usage == ()


def test_add_api_call_accepts_every_documented_field(spans: list[Span]) -> None:
    """All documented usage fields land in the item unchanged."""
    with spendtrace.track(feature="llm"):
        spendtrace.add_api_call(
            "anthropic_claude_sonnet_4",
            count=1,
            input_tokens=10,
            output_tokens=20,
            cache_read_tokens=30,
            cache_write_tokens=40,
            cache_write_1h_tokens=50,
            bytes=60,
            gb_seconds=0.25,
            service="anthropic",
        )
    assert spans[0].usage == (UsageItem("anthropic_claude_sonnet_4", "anthropic", 1.0, 10, 20, 30, 40, 50, 60, 0.25),)


def test_lambda_memory_only_on_root_spans(spans: list[Span]) -> None:
    """The Lambda memory size is stamped on root spans only, so GB-seconds are priced once."""
    _scope.set_lambda_memory_mb(1024)
    try:
        with spendtrace.track(feature="handler"), spendtrace.track(feature="inner"):
            pass
    finally:
        _scope.set_lambda_memory_mb(0)
    inner, handler = spans
    assert (handler.lambda_memory_mb, inner.lambda_memory_mb) == (1024, 0)
    with pytest.raises(ValueError):
        _scope.set_lambda_memory_mb(-1)


def test_lambda_memory_read_from_environment(monkeypatch: pytest.MonkeyPatch, spans: list[Span]) -> None:
    """``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` is what ``set_lambda_memory_mb(None)`` falls back to."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
    _scope.set_lambda_memory_mb(None)
    try:
        with spendtrace.track(feature="fn"):
            pass
    finally:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        _scope.set_lambda_memory_mb(None)
    assert spans[0].lambda_memory_mb == 512


@pytest.mark.parametrize(("machine", "arch"), [("aarch64", "arm64"), ("x86_64", "x86_64")])
def test_on_lambda_root_spans_carry_the_function_architecture(
    monkeypatch: pytest.MonkeyPatch, spans: list[Span], machine: str, arch: str
) -> None:
    """On Lambda (AWS_LAMBDA_FUNCTION_NAME) the machine names the architecture, so arm64 GB-s get the arm rate.

    ``os.uname`` is the one thing replaced: the test runs on one machine and checks both architectures.
    """
    import json
    import os

    from spendtrace.server.ingest.prepare import prepare_batch
    from spendtrace.server.pricing import PriceBook

    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result((*real[:4], machine)))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "checkout")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    _scope.set_lambda_memory_mb(None)
    try:
        with spendtrace.track(feature="handler"), spendtrace.track(feature="inner"):
            pass
        with pytest.raises(ZeroDivisionError), spendtrace.track(feature="failing"):
            1 / 0  # noqa: B018
        _scope.cost_track(feature="fast")(lambda: None)()
    finally:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        _scope.set_lambda_memory_mb(None)
    inner, handler, failing, fast = spans
    assert [(s.lambda_memory_mb, s.lambda_architecture) for s in (handler, failing, fast)] == [(1024, arch)] * 3
    assert (inner.lambda_memory_mb, inner.lambda_architecture) == (0, None)
    items = [json.loads(row[14])[-1] for row in prepare_batch([handler], PriceBook.default()).span_rows]
    assert items[0]["key"] == "lambda_gb_second" and items[0]["architecture"] == arch
    with spendtrace.track(feature="off-lambda"):
        pass
    assert spans[-1].lambda_architecture is None


def test_record_usage_fast_path_and_suppression(spans: list[Span]) -> None:
    """record_usage appends to the open span, and records nothing under suppress_instrumentation."""
    item = UsageItem("s3_put", count=1.0)
    with spendtrace.track(feature="upload"):
        _scope.record_usage(item)
        with _scope.suppress_instrumentation():
            assert _scope.is_suppressed()
            assert spendtrace.current_span_id() is None
            _scope.record_usage(item)
            spendtrace.add_api_call("s3_put")
            with spendtrace.track(feature="hidden"):
                pass
        assert not _scope.is_suppressed()
    assert [s.feature for s in spans] == ["upload"]
    assert spans[0].usage == (item,)


def test_span_ids_are_unique(spans: list[Span]) -> None:
    """Thousands of spans get distinct ids."""

    @spendtrace.cost_track(feature="busy")
    def busy() -> int:
        return sum(range(2_000))

    for _ in range(2000):
        busy()
    assert len({s.span_id for s in spans}) == 2000


def test_cpu_timing_is_opt_in(spans: list[Span], monkeypatch: pytest.MonkeyPatch) -> None:
    """By default cpu_ns is 0; with CPU timing on a busy span reports CPU time; the env var selects it."""

    @spendtrace.cost_track(feature="busy")
    def busy() -> int:
        return sum(range(200_000))

    _scope.set_cpu_time(False)  # the default, unless SPENDTRACE_CPU_TIME was set for this run
    busy()
    _scope.set_cpu_time(True)
    try:
        busy()
    finally:
        _scope.set_cpu_time(False)
    assert spans[0].cpu_ns == 0 and spans[1].cpu_ns > 0
    monkeypatch.setenv("SPENDTRACE_CPU_TIME", "1")
    assert _clock.cpu_from_env() is not _clock.no_cpu
    monkeypatch.setenv("SPENDTRACE_CPU_TIME", "off")
    assert _clock.cpu_from_env()() == 0


def test_start_time_is_wall_clock_and_duration_monotonic(spans: list[Span]) -> None:
    """start_ns is Unix-epoch wall time within the call, and duration covers what ran inside."""
    before = time.time_ns()
    with spendtrace.track(feature="timed"):
        time.sleep(0.002)
    after = time.time_ns()
    (span,) = spans
    slack = 50_000_000  # the monotonic-to-wall anchor may drift a little between re-anchors
    assert before - slack <= span.start_ns <= after + slack
    assert 2_000_000 <= span.duration_ns <= after - before + slack


def test_explicit_request_id_inside_a_tree_starts_a_new_tree(spans: list[Span]) -> None:
    """A caller-supplied request id opens a new request tree even inside another request."""
    with spendtrace.track_request(endpoint="/outer", feature="outer") as outer:
        outer_request = outer.request_id
        with spendtrace.track_request(request_id="req-upstream-7", feature="inner"):
            pass
    inner, outer_span = spans
    assert (inner.request_id, inner.parent_id, inner.path) == ("req-upstream-7", None, ("inner",))
    assert outer_span.request_id == outer_request != "req-upstream-7"
