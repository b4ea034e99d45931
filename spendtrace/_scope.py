"""Recording scopes: ``cost_track``, ``track``, ``track_request``, ``add_api_call`` and their context.

One ``ContextVar`` holds the state of the innermost open scope, as a plain tuple because tuples
are the cheapest thing to build on the hot path (layout below). Nested calls, threads (through
``run_in_context`` / ``wrap_with_context``) and asyncio tasks see their parent's state, so they
inherit its request, tenant, endpoint and sampling decision. Two sentinel states mean "record
nothing here": ``_OFF`` (the tree was sampled out at its root) and ``_SUP`` (instrumentation is
suppressed, e.g. while the exporter talks to Kafka); a decorated call under either costs one
``ContextVar.get`` and one index.

Finished spans go to ``spendtrace._pipeline.submit``; nothing here prices anything.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import math
import operator
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

from spendtrace import _pipeline, _sampling
from spendtrace.schema import MAX_KEY_LEN, MAX_NAME_LEN, UNATTRIBUTED, Span, UsageItem

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "add_api_call",
    "cost_track",
    "create_task_with_context",
    "current_request_id",
    "current_span_id",
    "is_suppressed",
    "record_usage",
    "run_in_context",
    "set_lambda_memory_mb",
    "suppress_instrumentation",
    "track",
    "track_request",
    "wrap_with_context",
]

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
S = TypeVar("S")

# --------------------------------------------------------------------------- state
#
# State tuple layout (index: meaning):
#   0 recording   False only for the _OFF / _SUP sentinels
#   1 span_id     id of the innermost open span (None: no span open, only a request scope)
#   2 request_id
#   3 endpoint
#   4 user_id
#   5 path        distinct features root..innermost span
#   6 weight      1 / sample rate decided at the root
#   7 usage       list the innermost span collects UsageItems in (None: no span)
#   8 feature     of the innermost span
#   9 operation   of the innermost span
_State = tuple[
    bool, str | None, str, str | None, str | None, tuple[str, ...], float, list[Any] | None, str | None, str | None
]

_OFF: Final[_State] = (False, None, "", None, None, (), 1.0, None, "__sampled_out__", None)
_SUP: Final[_State] = (False, None, "", None, None, (), 1.0, None, "__suppressed__", None)

_current: contextvars.ContextVar[_State | None] = contextvars.ContextVar("spendtrace_scope", default=None)
_get = _current.get
_set = _current.set
_reset = _current.reset

#: Appended to a span's usage list when the span closes; usage appended after it arrived late.
_END: Final = object()

# --------------------------------------------------------------------------- ids and clocks

_counter = itertools.count(1)
_prefix = os.urandom(8).hex()

_perf = time.perf_counter_ns
#: CPU time of the calling thread; a system call on Linux (~0.3 µs), the costliest part of a span.
_cpu = time.thread_time_ns
_wall_offset = time.time_ns() - time.perf_counter_ns()


def _resync_clock() -> None:
    """Re-anchor wall-clock start times to the system clock (called every 4096 spans and after fork)."""
    global _wall_offset
    _wall_offset = time.time_ns() - time.perf_counter_ns()


def _new_id() -> str:
    """A span / request id unique across processes: a random per-process prefix and a counter, in hex."""
    return _prefix + hex(next(_counter))


def _after_fork_in_child() -> None:
    global _prefix
    _prefix = os.urandom(8).hex()
    _resync_clock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _lambda_from_env() -> int:
    raw = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


#: Memory of the Lambda function this process runs in (0: not on Lambda), stamped on root spans.
_lambda_mb: int = _lambda_from_env()


def set_lambda_memory_mb(memory_mb: int | None) -> None:
    """Set the Lambda memory size (MB) stamped on root spans; ``None`` re-reads ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``."""
    global _lambda_mb
    if memory_mb is None:
        _lambda_mb = _lambda_from_env()
        return
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
        raise TypeError(f"memory_mb must be an int, got {type(memory_mb).__name__}")
    if memory_mb < 0:
        raise ValueError(f"memory_mb must be >= 0, got {memory_mb}")
    _lambda_mb = memory_mb


# --------------------------------------------------------------------------- validation


def _check_name(value: object, what: str, max_len: int = MAX_NAME_LEN) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > max_len:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {max_len}")
    return value


def _check_opt_name(value: object, what: str, max_len: int = MAX_NAME_LEN) -> str | None:
    return None if value is None else _check_name(value, what, max_len)


def _check_rate(sample_rate: object) -> float | None:
    return None if sample_rate is None else _sampling.validate_rate(sample_rate)


# --------------------------------------------------------------------------- the contract used by instrument/ and export/


def record_usage(item: UsageItem) -> None:
    """Add ``item`` to the innermost open span without validating it (auto-instrumentation's path).

    Outside any span it becomes a one-item ``__unattributed__`` span; under
    ``suppress_instrumentation`` or in a sampled-out request it is dropped on purpose. Never raises.
    """
    try:
        st = _get()
        if st is None:
            _submit_orphan(item, None)
            return
        if not st[0]:
            return
        usage = st[7]
        if usage is None:
            _submit_orphan(item, st)
            return
        usage.append(item)
        if _END in usage:  # the span closed meanwhile (a task or thread that outlived it)
            _settle_late(item, usage, st)
    except Exception:  # telemetry never breaks the host app
        pass


@contextmanager
def suppress_instrumentation() -> Iterator[None]:
    """Record nothing inside this block: no spans, no usage (the exporter's and pricing clients' own traffic)."""
    token = _set(_SUP)
    try:
        yield
    finally:
        _reset(token)


def is_suppressed() -> bool:
    """Whether the caller is inside ``suppress_instrumentation``."""
    return _get() is _SUP


def current_span_id() -> str | None:
    """The id of the innermost recording span, or ``None`` (no span open, sampled out or suppressed)."""
    st = _get()
    return st[1] if st is not None and st[0] else None


def current_request_id() -> str | None:
    """The id of the current recording request, or ``None`` outside any recording scope."""
    st = _get()
    return st[2] if st is not None and st[0] else None


def _submit_orphan(item: UsageItem, st: _State | None) -> None:
    """Submit usage recorded outside any span as its own ``__unattributed__`` span."""
    sid = _new_id()
    now = _perf() + _wall_offset
    if st is None:
        rate = _sampling.rate
        if rate < 1.0 and _sampling.draw() >= rate:
            return
        _pipeline.submit(
            Span(sid, None, sid, UNATTRIBUTED, None, None, None, now, 0, 0, False, None, (item,),
                 1.0 / rate, (UNATTRIBUTED,), 0)
        )  # fmt: skip
    else:  # a request scope with no span of its own: keep its request, endpoint, tenant and weight
        _pipeline.submit(
            Span(sid, None, st[2], UNATTRIBUTED, None, st[3], st[4], now, 0, 0, False, None, (item,),
                 st[6], (UNATTRIBUTED,), 0)
        )  # fmt: skip


def _settle_late(item: UsageItem, usage: list[Any], st: _State) -> None:
    """``item`` was appended after its span closed: send it as a one-item child span, unless the span took it."""
    for x in reversed(usage):  # our append is the latest occurrence of ``item``
        if x is _END:
            return  # appended before the span closed: it is in the span's usage
        if x is item:
            break
    sid = _new_id()
    _pipeline.submit(
        Span(sid, st[1], st[2], cast(str, st[8]), st[9], st[3], st[4], _perf() + _wall_offset, 0, 0, False, None,
             (item,), st[6], st[5], 0)
    )  # fmt: skip


def _take_usage(usage: list[Any]) -> tuple[UsageItem, ...]:
    """Close a usage list and return what was recorded before closing."""
    usage.append(_END)
    n = usage.index(_END)
    return tuple(usage[:n]) if n else ()
