"""Recording scopes: ``cost_track``, ``track``, ``track_request``, ``add_api_call`` and their context.

One ``ContextVar`` holds the state of the innermost open scope, as a plain tuple because tuples
are the cheapest thing to build on the hot path (layout below). Nested calls, threads (through
``run_in_context`` / ``wrap_with_context``) and asyncio tasks see their parent's state, so they
inherit its request, tenant, endpoint and sampling decision. Two sentinel states mean "record
nothing here": ``_OFF`` (the tree was sampled out at its root) and ``_SUP`` (instrumentation is
suppressed, e.g. while the exporter talks to Kafka); a decorated call under either costs one
``ContextVar.get`` and one index.

Finished spans go to ``spendtrace.sdk.pipeline.submit``; nothing here prices anything.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import operator
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Self, TypeVar, cast

from spendtrace.schema import MAX_KEY_LEN, MAX_NAME_LEN, MAX_UNITS, UNATTRIBUTED, Span, UsageItem
from spendtrace.sdk import clock as _clock
from spendtrace.sdk import config as _config  # noqa: F401 - installs the default configuration hook
from spendtrace.sdk import pipeline as _pipeline
from spendtrace.sdk import sampling as _sampling
from spendtrace.sdk.context import (
    _OFF,
    _SUP,
    _current,
    _State,
    create_task_with_context,
    current_request_id,
    current_span_id,
    is_suppressed,
    run_in_context,
    suppress_instrumentation,
    wrap_with_context,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "add_api_call",
    "cost_track",
    "create_task_with_context",
    "current_request_id",
    "current_span_id",
    "is_suppressed",
    "record_usage",
    "run_in_context",
    "set_cpu_time",
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

_get = _current.get
_set = _current.set
_reset = _current.reset

# A span's usage list holds a status in slot 0 and UsageItems after it. Slot 0 is ``_OPEN`` while
# the span runs; closing sets ``_CLOSING``, copies the items, then stores the cut (an int: the
# items at indexes below it were taken). Appends and these steps are atomic under the GIL, so a
# thread or task that outlives its span can tell whether its item made it in (see _settle_late).
_OPEN: Final = object()
_CLOSING: Final = object()
#: Serialises the rare late path (usage arriving while or after its span closes).
_late_lock = threading.Lock()

# Ids and clocks live in _clock; these names never change there, so they are bound here once.
_counter = _clock.counter
_perf = _clock.perf
_new_id = _clock.new_id
set_cpu_time = _clock.set_cpu_time
set_lambda_memory_mb = _clock.set_lambda_memory_mb


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


# ------------------------------------------------------- the contract used by instrument/ and export/


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
        if usage[0] is _OPEN:
            usage.append(item)
            if usage[0] is _OPEN:
                return
            _settle_late(item, usage, st)  # the span closed while we appended
        else:  # a task or thread that outlived its span
            _submit_late(item, st)
    except Exception:  # telemetry never breaks the host app
        pass


def _submit_orphan(item: UsageItem, st: _State | None) -> None:
    """Submit usage recorded outside any span as its own ``__unattributed__`` span."""
    sid = _new_id()
    now = _perf() + _clock.wall_offset
    if st is None:
        rate = _sampling.rate
        if rate < 1.0 and _sampling.draw() >= rate:
            return
        _pipeline.submit(
            Span(span_id=sid, parent_id=None, request_id=sid, feature=UNATTRIBUTED, start_ns=now, usage=(item,),
                 weight=1.0 / rate, path=(UNATTRIBUTED,))
        )  # fmt: skip
    else:  # a request scope with no span of its own: keep its request, endpoint, tenant and weight
        _pipeline.submit(
            Span(span_id=sid, parent_id=None, request_id=st[2], feature=UNATTRIBUTED, endpoint=st[3], user_id=st[4],
                 start_ns=now, usage=(item,), weight=st[6], path=(UNATTRIBUTED,))
        )  # fmt: skip


def _settle_late(item: UsageItem, usage: list[Any], st: _State) -> None:
    """``item`` was appended while its span was closing: keep it out of the list and send it late, unless taken."""
    cut = usage[0]
    spins = 0
    while type(cut) is not int and spins < 100_000:  # the closing thread is between its two steps
        time.sleep(0)
        spins += 1
        cut = usage[0]
    with _late_lock:
        for i in range(len(usage) - 1, 0, -1):  # our append is the latest occurrence of ``item``
            if usage[i] is item:
                if type(cut) is int and i < cut:
                    return  # the span took it
                del usage[i]  # late items never stay in the list, so it stays bounded
                break
    _submit_late(item, st)


def _submit_late(item: UsageItem, st: _State) -> None:
    """Send usage that arrived after its span closed as a one-item child span of it."""
    _pipeline.submit(
        Span(span_id=_new_id(), parent_id=st[1], request_id=st[2], feature=cast(str, st[8]), operation=st[9],
             endpoint=st[3], user_id=st[4], start_ns=_perf() + _clock.wall_offset, usage=(item,), weight=st[6],
             path=st[5])
    )  # fmt: skip


def _take_usage(usage: list[Any]) -> tuple[UsageItem, ...]:
    """Close a span's usage list and return the items recorded before closing."""
    usage[0] = _CLOSING
    items = tuple(usage[1:]) if len(usage) > 1 else ()
    usage[0] = len(items) + 1
    return items


# --------------------------------------------------------------------------- opening and closing spans

#: What an opened scope needs at close: (state set in the context, owns a span?, parent span id, lambda MB).
_Frame = tuple[_State, bool, str | None, int]


def _open_span(feature: str, operation: str | None, rate: float | None, feat1: tuple[str, ...]) -> _Frame | None:
    """Decide and build the state of a new span under the current one; ``None``: leave the context alone."""
    parent = _get()
    if parent is None:
        r = _sampling.rate if rate is None else rate
        if r < 1.0 and _sampling.draw() >= r:
            return (_OFF, False, None, 0)
        sid = _new_id()
        return ((True, sid, sid, None, None, feat1, 1.0 / r, [_OPEN], feature, operation), True, None, _clock.lambda_mb)
    if not parent[0]:
        return None
    ppath = parent[5]
    st: _State = (
        True, _new_id(), parent[2], parent[3], parent[4], ppath if feature in ppath else ppath + feat1,
        parent[6], [_OPEN], feature, operation,
    )  # fmt: skip
    pid = parent[1]
    return (st, True, pid, 0 if pid is not None else _clock.lambda_mb)


def _close(frame: _Frame, start: int, cpu: int, exc: BaseException | None) -> None:
    """Submit the span ``frame`` owns, if any; never raises."""
    st, own, pid, lam = frame
    if not own:
        return
    end = _perf()
    try:
        usage = cast(list[Any], st[7])
        # Positional on purpose (here and in _fast_sync): msgspec builds this Span in ~100 ns from
        # positions and ~615 ns from keywords, against ~1.2 µs for a whole recorded call.
        _pipeline.submit(
            Span(cast(str, st[1]), pid, st[2], cast(str, st[8]), st[9], st[3], st[4], start + _clock.wall_offset,
                 end - start, cpu, exc is not None, None if exc is None else type(exc).__name__,
                 _take_usage(usage), st[6], st[5], lam, _clock.lambda_arch if lam else None)
        )  # fmt: skip
    except Exception:  # telemetry never breaks the host app
        pass


def _frame_wrappers(fn: Callable[..., Any], open_frame: Callable[[], _Frame | None]) -> Callable[..., Any]:
    """Wrap ``fn`` (sync, async, generator or async generator) so each call runs inside ``open_frame()``."""
    if inspect.isasyncgenfunction(fn):
        return _wrap_asyncgen(fn, open_frame)
    if inspect.iscoroutinefunction(fn):
        return _wrap_async(fn, open_frame)
    if inspect.isgeneratorfunction(fn):
        return _wrap_gen(fn, open_frame)
    return _wrap_sync(fn, open_frame)


def _wrap_sync(fn: Callable[..., R], open_frame: Callable[[], _Frame | None]) -> Callable[..., R]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        frame = open_frame()
        if frame is None:
            return fn(*args, **kwargs)
        token = _set(frame[0])
        c0 = _clock.cpu()
        t0 = _perf()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            cpu = _clock.cpu() - c0
            _reset(token)
            _close(frame, t0, cpu, exc)
            raise
        cpu = _clock.cpu() - c0
        _reset(token)
        _close(frame, t0, cpu, None)
        return result

    return wrapper


def _wrap_async(
    fn: Callable[..., Coroutine[Any, Any, R]], open_frame: Callable[[], _Frame | None]
) -> Callable[..., Coroutine[Any, Any, R]]:
    # cpu_ns of an async span is the thread's CPU time while it was open, which includes whatever
    # other tasks the event loop ran in between: an upper bound, not an exact figure.
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> R:
        frame = open_frame()
        if frame is None:
            return await fn(*args, **kwargs)
        token = _set(frame[0])
        c0 = _clock.cpu()
        t0 = _perf()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            cpu = _clock.cpu() - c0
            _reset(token)
            _close(frame, t0, cpu, exc)
            raise
        cpu = _clock.cpu() - c0
        _reset(token)
        _close(frame, t0, cpu, None)
        return result

    return wrapper


def _wrap_gen(
    fn: Callable[..., Generator[Y, S, R]], open_frame: Callable[[], _Frame | None]
) -> Callable[..., Generator[Y, S, R]]:
    # The span is set in the context only while the generator's own code runs (each step), never
    # across a yield, so the consumer's code between steps is not attributed to it. The span opens
    # at the first step and closes when the generator finishes, raises or is closed.
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Y, S, R]:
        frame = open_frame()
        gen = fn(*args, **kwargs)
        if frame is None:
            return (yield from gen)
        st = frame[0]
        cpu = 0
        t0 = _perf()
        sent: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                token = _set(st)
                c0 = _clock.cpu()
                try:
                    out = gen.send(sent) if thrown is None else gen.throw(thrown)
                finally:
                    cpu += _clock.cpu() - c0
                    _reset(token)
                thrown = None
                try:
                    sent = yield out
                except GeneratorExit:
                    token = _set(st)
                    try:
                        gen.close()
                    finally:
                        _reset(token)
                    raise
                except BaseException as exc:  # thrown into us by the consumer: pass it on
                    thrown = exc
        except StopIteration as stop:
            _close(frame, t0, cpu, None)
            return cast(R, stop.value)
        except GeneratorExit:
            _close(frame, t0, cpu, None)  # closed early by the consumer: not an error
            raise
        except BaseException as exc:
            _close(frame, t0, cpu, exc)
            raise

    return wrapper


def _wrap_asyncgen(
    fn: Callable[..., AsyncGenerator[Y, S]], open_frame: Callable[[], _Frame | None]
) -> Callable[..., AsyncGenerator[Y, S]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Y, S]:
        frame = open_frame()
        agen = fn(*args, **kwargs)
        st = None if frame is None else frame[0]
        cpu = 0
        t0 = _perf()
        sent: Any = None
        thrown: BaseException | None = None
        try:
            while True:
                token = None if st is None else _set(st)
                c0 = _clock.cpu()
                try:
                    out = await (agen.asend(sent) if thrown is None else agen.athrow(thrown))
                finally:
                    cpu += _clock.cpu() - c0
                    if token is not None:
                        _reset(token)
                thrown = None
                try:
                    sent = yield out
                except GeneratorExit:
                    token = None if st is None else _set(st)
                    try:
                        await agen.aclose()
                    finally:
                        if token is not None:
                            _reset(token)
                    raise
                except BaseException as exc:  # thrown into us by the consumer: pass it on
                    thrown = exc
        except StopAsyncIteration:
            if frame is not None:
                _close(frame, t0, cpu, None)
        except GeneratorExit:
            if frame is not None:
                _close(frame, t0, cpu, None)
            raise
        except BaseException as exc:
            if frame is not None:
                _close(frame, t0, cpu, exc)
            raise

    return wrapper


# --------------------------------------------------------------------------- cost_track


def cost_track(
    feature: str, *, operation: str | None = None, sample_rate: float | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record every call of the decorated function as a span of ``feature``.

    Works on plain, ``async``, generator and async-generator functions. Usage recorded inside
    (``add_api_call``, auto-instrumented clients) is attributed to the innermost span; nested spans
    inherit the request, tenant and endpoint. ``sample_rate`` (0 to 1) overrides the global rate
    for request trees this decorator starts. Raises ``TypeError`` / ``ValueError`` at decoration
    time for a missing, empty or over-long ``feature`` or a bad ``operation`` / ``sample_rate``.
    """
    if callable(feature):
        raise TypeError("cost_track needs a feature name: write @cost_track(feature=...)")
    feature = _check_name(feature, "feature")
    operation = _check_opt_name(operation, "operation")
    rate = _check_rate(sample_rate)
    feat1 = (feature,)

    def open_frame() -> _Frame | None:
        return _open_span(feature, operation, rate, feat1)

    def decorator(fn: Callable[P, R]) -> Callable[P, R]:
        if not callable(fn):
            raise TypeError(f"cost_track decorates functions, got {type(fn).__name__}")
        if inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
            return cast(Callable[P, R], _frame_wrappers(fn, open_frame))
        return _fast_sync(fn, feature, operation, rate, feat1)

    return decorator


def _fast_sync(
    fn: Callable[P, R], feature: str, operation: str | None, rate: float | None, feat1: tuple[str, ...]
) -> Callable[P, R]:
    """The plain-function wrapper, written out flat because it is the hot path (see bench_overhead.py)."""
    draw = _sampling.draw
    submit = _pipeline.submit
    get, set_, reset, perf_now = _get, _set, _reset, _perf

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        parent = get()
        if parent is None:
            r = _sampling.rate if rate is None else rate
            if r < 1.0 and draw() >= r:
                token = set_(_OFF)
                try:
                    return fn(*args, **kwargs)
                finally:
                    reset(token)
            n = next(_counter)
            sid = _clock.prefix + hex(n)
            usage: list[Any] = [_OPEN]
            st: _State = (True, sid, sid, None, None, feat1, 1.0 / r, usage, feature, operation)
            pid = None
            lam = _clock.lambda_mb
        elif parent[0]:
            n = next(_counter)
            sid = _clock.prefix + hex(n)
            usage = [_OPEN]
            ppath = parent[5]
            pid = parent[1]
            st = (
                True, sid, parent[2], parent[3], parent[4], ppath if feature in ppath else ppath + feat1,
                parent[6], usage, feature, operation,
            )  # fmt: skip
            lam = 0 if pid is not None else _clock.lambda_mb
        else:  # sampled out or suppressed
            return fn(*args, **kwargs)
        token = set_(st)
        c0 = _clock.cpu()
        t0 = perf_now()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            t1 = perf_now()
            cpu = _clock.cpu() - c0
            reset(token)
            submit(
                Span(sid, pid, st[2], feature, operation, st[3], st[4], t0 + _clock.wall_offset, t1 - t0, cpu, True,
                     type(exc).__name__, _take_usage(usage), st[6], st[5], lam, _clock.lambda_arch if lam else None)
            )  # fmt: skip
            raise
        t1 = perf_now()
        cpu = _clock.cpu() - c0
        reset(token)
        usage[0] = _CLOSING
        items = tuple(usage[1:]) if len(usage) > 1 else ()
        usage[0] = len(items) + 1
        submit(
            Span(sid, pid, st[2], feature, operation, st[3], st[4], t0 + _clock.wall_offset, t1 - t0, cpu, False, None,
                 items, st[6], st[5], lam, _clock.lambda_arch if lam else None)
        )  # fmt: skip
        if not n & 4095:
            _clock.resync()
        return result

    return wrapper


# --------------------------------------------------------------------------- track


class _Block:
    """A ``with`` / ``async with`` block of ``track`` or ``track_request``: ``_open`` gives its frame on entry
    (None: it records nothing and leaves the context alone); exit closes the span it opened."""

    __slots__ = ("_c0", "_frame", "_opened", "_t0", "_token")

    _frame: _Frame | None
    _opened: _Frame | None
    _token: contextvars.Token[_State | None] | None
    _c0: int
    _t0: int

    def _open(self) -> _Frame | None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if self._frame is not None:
            raise RuntimeError(f"this {type(self).__name__}(...) is already open; create a new one for each block")
        frame = self._open()
        self._frame = self._opened = _NO_FRAME if frame is None else frame
        self._token = None if frame is None else _set(frame[0])
        self._c0 = _clock.cpu()
        self._t0 = _perf()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        frame = self._frame
        if frame is None:
            return
        cpu = _clock.cpu() - self._c0
        token = self._token
        self._frame = self._token = None
        if token is not None:
            _reset(token)
        _close(frame, self._t0, cpu, exc)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class track(_Block):
    """A span of ``feature`` around a ``with`` or ``async with`` block (or, as a decorator, each call).

    ``operation`` and ``sample_rate`` mean what they mean for ``cost_track``. One ``track``
    object is one block: open a new one for each ``with``.
    """

    __slots__ = ("_feat1", "_feature", "_operation", "_rate")

    def __init__(self, feature: str, *, operation: str | None = None, sample_rate: float | None = None) -> None:
        self._feature = _check_name(feature, "feature")
        self._operation = _check_opt_name(operation, "operation")
        self._rate = _check_rate(sample_rate)
        self._feat1 = (self._feature,)
        self._frame: _Frame | None = None
        self._opened: _Frame | None = None
        self._token: contextvars.Token[_State | None] | None = None
        self._c0 = 0
        self._t0 = 0

    @property
    def span_id(self) -> str | None:
        """The id of the span this block records or recorded (``None`` when it records none)."""
        frame = self._opened
        return frame[0][1] if frame is not None and frame[1] else None

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """``@track(feature=...)`` works like ``@cost_track(feature=...)``."""
        return cost_track(self._feature, operation=self._operation, sample_rate=self._rate)(fn)

    def _open(self) -> _Frame | None:
        return _open_span(self._feature, self._operation, self._rate, self._feat1)


#: Frame of a block that records nothing and leaves the context alone.
_NO_FRAME: Final[_Frame] = (_OFF, False, None, 0)


# --------------------------------------------------------------------------- track_request


class track_request(_Block):
    """Open a request scope: a request id, an endpoint and a tenant that every nested span inherits.

    Use as a decorator (plain or ``async`` functions, generators) or as a ``with`` / ``async with``
    block. ``user_id`` is a string or a zero-argument callable evaluated at each call (for a tenant
    known only at request time); a callable that raises or returns ``None`` leaves the tenant unset.
    ``request_id`` keeps a caller-supplied id (e.g. from an upstream header) and starts a new request
    tree; otherwise a new id is made, or the enclosing request is joined when one is open. The
    sampling decision is made here for the whole tree. A span of its own is recorded only when
    ``feature`` is given.
    """

    __slots__ = (
        "_endpoint",
        "_feat1",
        "_feature",
        "_operation",
        "_rate",
        "_request_id",
        "_user",
        "_user_fn",
    )

    def __init__(
        self,
        endpoint: str | None = None,
        user_id: str | Callable[[], object] | None = None,
        *,
        request_id: str | None = None,
        feature: str | None = None,
        operation: str | None = None,
        sample_rate: float | None = None,
    ) -> None:
        self._endpoint = _check_opt_name(endpoint, "endpoint", 1024)
        if user_id is not None and callable(user_id):
            self._user_fn: Callable[[], object] | None = user_id
            self._user: str | None = None
        else:
            self._user_fn = None
            self._user = _check_opt_name(user_id, "user_id")
        self._request_id = _check_opt_name(request_id, "request_id", 128)
        self._feature = _check_opt_name(feature, "feature")
        self._operation = _check_opt_name(operation, "operation")
        self._rate = _check_rate(sample_rate)
        self._feat1: tuple[str, ...] = () if self._feature is None else (self._feature,)
        self._frame: _Frame | None = None
        self._opened: _Frame | None = None
        self._token: contextvars.Token[_State | None] | None = None
        self._c0 = 0
        self._t0 = 0

    def _resolve_user(self) -> str | None:
        fn = self._user_fn
        if fn is None:
            return self._user
        try:
            value = fn()
        except Exception:  # the tenant lookup is the app's code; a failure there must not fail the request
            return None
        if value is None:
            return None
        text = value if isinstance(value, str) else str(value)
        return text[:MAX_NAME_LEN] or None

    def _open(self) -> _Frame | None:
        parent = _get()
        if parent is _SUP:
            return None
        feature = self._feature
        if parent is None or self._request_id is not None:  # a new request tree: decide sampling here
            r = _sampling.rate if self._rate is None else self._rate
            if r < 1.0 and _sampling.draw() >= r:
                return (_OFF, False, None, 0)
            rid = self._request_id or _new_id()
            user = self._resolve_user()
            if feature is None:
                return ((True, None, rid, self._endpoint, user, (), 1.0 / r, None, None, None), False, None, 0)
            sid = _new_id() if self._request_id is not None else rid
            st: _State = (True, sid, rid, self._endpoint, user, self._feat1, 1.0 / r, [_OPEN], feature, self._operation)
            return (st, True, None, _clock.lambda_mb)
        if not parent[0]:
            return None
        # Join the enclosing request; endpoint and tenant given here override the inherited ones.
        endpoint = parent[3] if self._endpoint is None else self._endpoint
        user = self._resolve_user()
        if user is None:
            user = parent[4]
        if feature is None:
            st = (True, parent[1], parent[2], endpoint, user, parent[5], parent[6], parent[7], parent[8], parent[9])
            return (st, False, None, 0)
        ppath = parent[5]
        pid = parent[1]
        st = (
            True, _new_id(), parent[2], endpoint, user, ppath if feature in ppath else ppath + self._feat1,
            parent[6], [_OPEN], feature, self._operation,
        )  # fmt: skip
        return (st, True, pid, 0 if pid is not None else _clock.lambda_mb)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` so that each call runs in a request scope of its own."""
        if not callable(fn):
            raise TypeError(f"track_request decorates functions, got {type(fn).__name__}")
        return cast(Callable[P, R], _frame_wrappers(fn, self._open))

    @property
    def request_id(self) -> str | None:
        """The id of the request this block belongs or belonged to (``None`` when it records nothing)."""
        frame = self._opened
        return frame[0][2] if frame is not None and frame[0][0] else None



# --------------------------------------------------------------------------- add_api_call

#: ``MAX_UNITS`` is 2**44 - 1, so ``a | b | ... <= _MAX_UNITS`` holds exactly when each of a, b, ... does.
_MAX_UNITS: Final = MAX_UNITS
#: the same bound as a float, for ``count`` / ``gb_seconds`` (NaN and inf fail it)
_MAX_UNITS_F: Final = float(MAX_UNITS)
_ZERO: Final = 0
_ZERO_F: Final = 0.0


def add_api_call(
    key: str,
    count: float = 1,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
    bytes: int = 0,  # the original API's name, shadowing the builtin
    gb_seconds: float = 0.0,
    *,
    service: str = "",
) -> None:
    """Record one API call's usage (``key`` is a price key, e.g. ``"dynamodb_read"``) on the current span.

    Outside any span the usage becomes an ``__unattributed__`` span, so nothing is lost. Token and
    byte counts are ints and ``count`` and ``gb_seconds`` numbers, all between 0 and
    ``spendtrace.schema.MAX_UNITS`` (about 1.8e13, what the stores' 64-bit sums can hold).
    Anything else raises ``TypeError`` / ``ValueError`` here, before it reaches the exporter.
    """
    # Fast acceptance of the common shapes (defaults are the cached 0 / 0.0 / "" objects in CPython);
    # anything else takes the slow path below, which either accepts it or says what is wrong.
    if not (
        (
            (input_tokens is _ZERO and output_tokens is _ZERO and cache_read_tokens is _ZERO
            and cache_write_tokens is _ZERO and cache_write_1h_tokens is _ZERO and bytes is _ZERO)
            or (int is type(input_tokens) is type(output_tokens) is type(cache_read_tokens) is type(cache_write_tokens)
            is type(cache_write_1h_tokens) is type(bytes)
            and 0 <= (input_tokens | output_tokens | cache_read_tokens | cache_write_tokens | cache_write_1h_tokens
                 | bytes) <= _MAX_UNITS)
        )
        and type(key) is str and 0 < len(key) <= MAX_KEY_LEN
        and (type(count) is int or type(count) is float) and 0 <= count <= _MAX_UNITS_F
        and (gb_seconds is _ZERO_F
             or ((type(gb_seconds) is float or type(gb_seconds) is int) and 0 <= gb_seconds <= _MAX_UNITS_F))
        and (service == "" or (type(service) is str and len(service) <= 64))
    ):  # fmt: skip
        _check_name(key, "key", MAX_KEY_LEN)
        count = _check_units(count, "count")
        gb_seconds = _check_units(gb_seconds, "gb_seconds")
        input_tokens = _check_tokens(input_tokens, "input_tokens")
        output_tokens = _check_tokens(output_tokens, "output_tokens")
        cache_read_tokens = _check_tokens(cache_read_tokens, "cache_read_tokens")
        cache_write_tokens = _check_tokens(cache_write_tokens, "cache_write_tokens")
        cache_write_1h_tokens = _check_tokens(cache_write_1h_tokens, "cache_write_1h_tokens")
        bytes = _check_tokens(bytes, "bytes")
        if not isinstance(service, str):
            raise TypeError(f"service must be a str, got {type(service).__name__}")
        if len(service) > 64:
            raise ValueError(f"service is {len(service)} characters long; the limit is 64")
    try:  # free in 3.11 unless raised
        item = UsageItem(key, service, float(count), input_tokens, output_tokens, cache_read_tokens,
                         cache_write_tokens, cache_write_1h_tokens, bytes, float(gb_seconds))
    except OverflowError:  # an int beyond any float (count=10**400): an argument error like the others
        raise ValueError("count and gb_seconds must be finite numbers >= 0 that fit a float") from None
    record_usage(item)  # fmt: skip


def _check_units(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    if not (0 <= value <= _MAX_UNITS_F):
        raise ValueError(f"{what} must be a finite number between 0 and {_MAX_UNITS}, got {value!r}")
    return float(value)


def _check_tokens(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:  # accept integer-like types such as numpy.int64, but never floats or bools
            if isinstance(value, bool | float):
                raise TypeError
            value = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{what} must be an int, got {type(value).__name__}") from None
    if not 0 <= value <= _MAX_UNITS:
        raise ValueError(f"{what} must be between 0 and {_MAX_UNITS}, got {value}")
    return int(value)


