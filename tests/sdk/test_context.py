"""Context inheritance: nested calls, threads, asyncio tasks and forks see the right request and span."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import spendtrace
from spendtrace.schema import Span
from spendtrace.sdk import clock as _clock
from spendtrace.sdk import scope as _scope


def test_no_scope_means_no_ids() -> None:
    """Outside every scope there is no current span or request."""
    assert spendtrace.current_span_id() is None
    assert _scope.current_request_id() is None


def test_context_is_restored_after_scopes(spans: list[Span]) -> None:
    """Leaving a scope, normally or by an exception, restores the enclosing span as current."""
    with spendtrace.track(feature="outer") as outer:
        outer_id = spendtrace.current_span_id()
        assert outer_id == outer.span_id
        with spendtrace.track(feature="inner"):
            assert spendtrace.current_span_id() not in (None, outer_id)
        assert spendtrace.current_span_id() == outer_id
        try:
            with spendtrace.track(feature="fails"):
                raise OSError
        except OSError:
            pass
        assert spendtrace.current_span_id() == outer_id
    assert spendtrace.current_span_id() is None
    assert len(spans) == 3


def test_threads_inherit_through_run_in_context(spans: list[Span]) -> None:
    """Work handed to threads with run_in_context / wrap_with_context joins the caller's request and span."""

    @spendtrace.cost_track(feature="worker")
    def work(n: int) -> int:
        spendtrace.add_api_call("dynamodb_read", count=n)
        return n

    with spendtrace.track_request(endpoint="/batch", user_id="tenant-acme"), spendtrace.track(feature="fanout") as fan:
        fan_id = fan.span_id
        t = threading.Thread(target=spendtrace.run_in_context(work, 1))
        t.start()
        t.join()
        with ThreadPoolExecutor(max_workers=2) as pool:
            assert pool.submit(spendtrace.run_in_context(work, 2)).result() == 2
            assert list(pool.map(_scope.wrap_with_context(work), [3, 4])) == [3, 4]
        plain = threading.Thread(target=work, args=(5,))  # no context copied: a tree of its own
        plain.start()
        plain.join()
    workers = [s for s in spans if s.feature == "worker"]
    joined = [s for s in workers if s.parent_id == fan_id]
    assert sorted(s.usage[0].count for s in joined) == [1.0, 2.0, 3.0, 4.0]
    assert {(s.user_id, s.endpoint, s.path) for s in joined} == {("tenant-acme", "/batch", ("fanout", "worker"))}
    (alone,) = [s for s in workers if s.parent_id is None]
    assert alone.user_id is None and alone.request_id == alone.span_id


async def test_tasks_inherit_through_create_task_with_context(spans: list[Span]) -> None:
    """Tasks created inside a scope join its request; concurrent siblings don't see each other's spans."""

    @spendtrace.cost_track(feature="child")
    async def child(i: int) -> str | None:
        await asyncio.sleep(0)
        spendtrace.add_api_call("bedrock_claude_3_haiku", input_tokens=i)
        await asyncio.sleep(0)
        return spendtrace.current_span_id()

    async with spendtrace.track_request(endpoint="/api", user_id="t", feature="api") as req:
        request_id = req.request_id
        ids = await asyncio.gather(*(spendtrace.create_task_with_context(child(i), name=f"c{i}") for i in range(5)))
    children = [s for s in spans if s.feature == "child"]
    (root,) = [s for s in spans if s.feature == "api"]
    assert sorted(ids) == sorted(s.span_id for s in children)  # each task saw its own span
    assert all(s.parent_id == root.span_id and s.request_id == request_id == root.request_id for s in children)
    assert sorted(s.usage[0].input_tokens for s in children) == [0, 1, 2, 3, 4]


async def test_separate_requests_in_concurrent_tasks_stay_apart(spans: list[Span]) -> None:
    """Two requests handled concurrently on one loop never mix tenants or request ids."""

    @spendtrace.cost_track(feature="step")
    async def step() -> None:
        await asyncio.sleep(0)

    async def handle(tenant: str) -> None:
        async with spendtrace.track_request(endpoint="/x", user_id=tenant):
            for _ in range(3):
                await step()

    await asyncio.gather(handle("a"), handle("b"))
    by_tenant: dict[str | None, set[str]] = {}
    for s in spans:
        by_tenant.setdefault(s.user_id, set()).add(s.request_id)
    assert set(by_tenant) == {"a", "b"}
    assert all(len(ids) == 1 for ids in by_tenant.values())
    assert by_tenant["a"] != by_tenant["b"]


def test_generator_does_not_leak_its_span_to_the_consumer(spans: list[Span]) -> None:
    """Between steps the consumer sees its own span, not the generator's."""

    @spendtrace.cost_track(feature="gen")
    def gen() -> object:
        yield spendtrace.current_span_id()
        yield spendtrace.current_span_id()

    with spendtrace.track(feature="consumer") as consumer:
        consumer_id = consumer.span_id
        inside = []
        for sid in gen():  # type: ignore[attr-defined]
            inside.append(sid)
            assert spendtrace.current_span_id() == consumer_id
    gen_span = next(s for s in spans if s.feature == "gen")
    assert inside == [gen_span.span_id, gen_span.span_id]
    assert gen_span.parent_id == consumer_id


def test_span_ids_differ_after_fork(spans: list[Span]) -> None:
    """A forked child makes span ids from a fresh prefix, so parent and child never collide."""
    parent_id = _clock.new_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report one id and leave without running any test machinery
        try:
            os.write(write_end, _clock.new_id().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        child_id = f.read()
    os.waitpid(pid, 0)
    assert child_id and child_id != parent_id
    assert child_id[:16] != parent_id[:16]  # not just the counter: the per-process prefix changed


def _wait_for(condition: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    """Poll ``condition`` until it holds, failing with ``what`` after the deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_usage_racing_span_close_is_kept_exactly_once(spans: list[Span]) -> None:
    """Threads recording while their span closes: every item lands once, in the span or in a late child span."""
    stop = threading.Event()
    counts = [0, 0, 0]

    def record(slot: int) -> None:
        while not stop.is_set():
            spendtrace.add_api_call("sqs_send")
            counts[slot] += 1

    with spendtrace.track(feature="parent") as parent:
        threads = [threading.Thread(target=spendtrace.run_in_context(record, i)) for i in range(len(counts))]
        for t in threads:
            t.start()
        _wait_for(lambda: min(counts) >= 200, "usage before close")
    closed_at = list(counts)
    _wait_for(lambda: all(c >= a + 200 for c, a in zip(counts, closed_at, strict=True)), "usage after close")
    stop.set()
    for t in threads:
        t.join()
    (parent_span,) = [s for s in spans if s.parent_id is None]
    late = [s for s in spans if s.parent_id == parent.span_id]
    assert parent_span.usage and late
    assert all(len(s.usage) == 1 and s.feature == "parent" for s in late)
    assert len(parent_span.usage) + len(late) == sum(counts)
