"""Ids, clocks and per-process facts stamped on spans, kept apart from the scopes that use them.

The values the hot path reads are module attributes (``prefix``, ``wall_offset``, ``cpu``,
``lambda_mb``) rather than constants, because they change: after ``fork`` (a new id prefix),
every few thousand spans (the wall clock is re-anchored) and when configuration changes.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

__all__ = ["new_id", "resync", "set_cpu_time", "set_lambda_memory_mb"]

#: Span and request ids: a random 64-bit per-process prefix, then a counter in hex.
counter = itertools.count(1)
prefix = os.urandom(8).hex()

#: Monotonic clock for durations; start times are ``perf() + wall_offset``.
perf = time.perf_counter_ns
wall_offset = time.time_ns() - time.perf_counter_ns()

#: Always 0: ``cpu`` when CPU timing is off (a C call, as cheap as a call gets).
no_cpu = itertools.repeat(0).__next__


def cpu_from_env() -> Callable[[], int]:
    """``time.thread_time_ns`` if ``SPENDTRACE_CPU_TIME`` turns CPU timing on, else ``no_cpu``."""
    on = os.environ.get("SPENDTRACE_CPU_TIME", "").strip().lower() in {"1", "true", "yes", "on"}
    return time.thread_time_ns if on else no_cpu


#: CPU time of the calling thread, or always 0. Off by default: on Linux the thread CPU clock is a
#: system call (~0.3 µs, twice per span), a third of a recorded span's cost
#: (``benchmarks/bench_overhead.py`` prints both), and nothing is priced from it yet. Turn it on
#: with ``set_cpu_time(True)`` or ``SPENDTRACE_CPU_TIME=1`` to fill each span's ``cpu_ns``.
cpu: Callable[[], int] = cpu_from_env()


def set_cpu_time(enabled: bool) -> None:
    """Measure each span's thread CPU time into ``cpu_ns`` (``True``, ~0.6 µs a span) or not (the default)."""
    global cpu
    cpu = time.thread_time_ns if enabled else no_cpu


def resync() -> None:
    """Re-anchor wall-clock start times to the system clock (every 4096 spans and after fork)."""
    global wall_offset
    wall_offset = time.time_ns() - time.perf_counter_ns()


def new_id() -> str:
    """A span / request id unique across processes and forks (and a periodic wall-clock re-anchor)."""
    n = next(counter)
    if not n & 4095:
        resync()
    return prefix + hex(n)


def _after_fork_in_child() -> None:
    global prefix
    prefix = os.urandom(8).hex()
    resync()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def lambda_from_env() -> int:
    """``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` as an int (0 when unset or malformed)."""
    raw = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


#: Memory of the Lambda function this process runs in (0: not on Lambda), stamped on root spans.
lambda_mb: int = lambda_from_env()

_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def lambda_arch_from_env() -> str | None:
    """The CPU architecture of the Lambda function this process runs in (``x86_64`` / ``arm64``), else None.

    On Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set) the machine is the function's architecture, which
    sets its GB-second rate (arm64 is 20% cheaper); elsewhere None (x86 rates, as before).
    """
    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return None
    return _ARCH.get(os.uname().machine.lower())


#: Architecture stamped with ``lambda_mb`` on root spans (None: not on Lambda, or not known).
lambda_arch: str | None = lambda_arch_from_env()


def set_lambda_memory_mb(memory_mb: int | None) -> None:
    """Set the Lambda memory size (MB) stamped on root spans; ``None`` re-reads ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``."""
    global lambda_mb, lambda_arch
    if memory_mb is None:
        lambda_mb = lambda_from_env()
        lambda_arch = lambda_arch_from_env()
        return
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
        raise TypeError(f"memory_mb must be an int, got {type(memory_mb).__name__}")
    if memory_mb < 0:
        raise ValueError(f"memory_mb must be >= 0, got {memory_mb}")
    lambda_mb = memory_mb
