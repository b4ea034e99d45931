"""The one ``ContextVar`` that carries the innermost open scope, and what reads or copies it.

The lowest layer of the SDK (as OpenTelemetry's ``context`` is): exporters, pricing clients and
instrumentation import ``suppress_instrumentation`` from here, never the recorder in ``scope``.
The state is a plain tuple because tuples are the cheapest thing to build on the hot path.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "create_task_with_context",
    "current_request_id",
    "current_span_id",
    "is_suppressed",
    "run_in_context",
    "suppress_instrumentation",
    "wrap_with_context",
]

P = ParamSpec("P")
R = TypeVar("R")

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


# --------------------------------------------------------------------------- threads and tasks


def run_in_context(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Callable[[], R]:
    """Bind ``fn(*args, **kwargs)`` to a copy of the caller's context, for another thread to run.

    ``threading.Thread(target=run_in_context(work, item))`` or ``pool.submit(run_in_context(work, item))``:
    spans and usage inside ``work`` join the caller's request and span. Each run gets its own copy,
    so the returned callable may run several times, even at once.
    """
    ctx = contextvars.copy_context()

    def run() -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return run


def wrap_with_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Return ``fn`` bound to a copy of the caller's context, e.g. for ``executor.map(wrap_with_context(f), items)``."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return ctx.copy().run(fn, *args, **kwargs)

    return wrapper


def create_task_with_context(coro: Coroutine[Any, Any, R], *, name: str | None = None) -> asyncio.Task[R]:
    """Schedule ``coro`` as a task that inherits the caller's request, tenant and span.

    ``asyncio.create_task`` copies the context too; this says so explicitly and works the same
    on every supported Python.
    """
    import asyncio

    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.copy_context())
