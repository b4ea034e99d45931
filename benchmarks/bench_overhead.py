"""What does recording cost the app? Per-call overhead of spendtrace's scopes beside an OpenTelemetry span.

Run: ``python benchmarks/bench_overhead.py [--calls N] [--repeats R]``

Every case runs in this one process, interleaved round by round, and the best round of each
is kept (the least disturbed by other processes). Overheads are the case minus a bare call.
The reference is an OpenTelemetry SDK span (TracerProvider + BatchSpanProcessor + an exporter
that discards), measured here, in the same run, so the ratios hold on any machine.
Targets (issue #2): recorded ``@cost_track`` <= 0.1x an OTel span; sampled out <= 0.5 µs.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import spendtrace
from spendtrace.sdk import pipeline as _pipeline
from spendtrace.sdk import scope as _scope


def bare(x: int) -> int:
    """The function every case wraps: as close to free as a Python call gets."""
    return x


def _loop(fn: Callable[[int], int], calls: int) -> float:
    """Nanoseconds per call of ``fn`` over ``calls`` calls."""
    t0 = time.perf_counter_ns()
    for i in range(calls):
        fn(i)
    return (time.perf_counter_ns() - t0) / calls


def _otel_case() -> tuple[Callable[[int], int], Callable[[], None]]:
    """A function wrapped in an OpenTelemetry SDK span with a batching processor and a discarding exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    tracer = provider.get_tracer("bench")

    def otel(x: int) -> int:
        with tracer.start_as_current_span("feature"):
            return x

    return otel, provider.shutdown


def _import_costs(codes: Sequence[str], runs: int) -> dict[str, tuple[float, float]]:
    """For each snippet: (wall ms over ``python -c pass``, ms that ``-X importtime`` books to it), best of ``runs``.

    Runs are interleaved and the minimum kept, so a busy machine inflates the numbers less.
    The importtime figure adds up the top-level imports after ``site``: what the snippet pulled in.
    """
    wall = {code: float("inf") for code in ("pass", *codes)}
    booked = {code: float("inf") for code in codes}
    for _ in range(runs):
        for code in wall:
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", code], check=True, capture_output=True, text=True
            )
            wall[code] = min(wall[code], (time.perf_counter() - t0) * 1e3)
            if code != "pass":
                booked[code] = min(booked[code], _booked_ms(out.stderr))
    return {code: (wall[code] - wall["pass"], booked[code]) for code in codes}


def _booked_ms(importtime_log: str) -> float:
    """Cumulative µs of the top-level imports after ``site`` in an ``-X importtime`` log, in ms."""
    total_us = 0
    after_site = False
    for line in importtime_log.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[2].startswith(" ") or parts[2].startswith("  "):
            continue  # header or a nested import (counted in its parent's cumulative time)
        name = parts[2].strip()
        if after_site:
            total_us += int(parts[1])
        after_site = after_site or name == "site"
    return total_us / 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short rounds rather than a few long ones: on a shared machine the best short round is
    # the one least disturbed by other processes, for our cases and the reference alike.
    parser.add_argument("--calls", type=int, default=5_000, help="calls per round (the OTel case makes a tenth)")
    parser.add_argument("--repeats", type=int, default=30, help="rounds; the best is kept")
    parser.add_argument("--import-runs", type=int, default=7, help="subprocess runs per import measurement")
    args = parser.parse_args(argv)

    drop: collections.deque[object] = collections.deque(maxlen=0)  # a C-level sink that keeps nothing
    _pipeline.set_sink(drop.append)
    spendtrace.set_global_sample_rate(1.0)
    _scope.set_cpu_time(False)  # the default; the "CPU timing on" case turns it on for its rounds

    recorded = spendtrace.cost_track(feature="bench")(bare)
    sampled_out_root = spendtrace.cost_track(feature="bench", sample_rate=0.0)(bare)
    nested_in_sampled_out = spendtrace.cost_track(feature="inner")(bare)

    @spendtrace.cost_track(feature="bench_root", sample_rate=0.0)
    def sampled_out_tree(calls: int) -> None:  # many decorated calls inside one sampled-out tree
        for i in range(calls):
            nested_in_sampled_out(i)

    def with_call(x: int) -> int:
        spendtrace.add_api_call("dynamodb_read", count=1)
        return x

    recorded_with_call = spendtrace.cost_track(feature="bench")(with_call)
    otel, otel_shutdown = _otel_case()

    def cpu_on(n: int) -> float:
        _scope.set_cpu_time(True)
        try:
            return _loop(recorded, n)
        finally:
            _scope.set_cpu_time(False)

    cases: dict[str, Callable[[int], float]] = {
        "bare call": lambda n: _loop(bare, n),
        "@cost_track recorded (dropping sink)": lambda n: _loop(recorded, n),
        "@cost_track + 1 add_api_call": lambda n: _loop(recorded_with_call, n),
        "@cost_track sampled out (root)": lambda n: _loop(sampled_out_root, n),
        "@cost_track inside a sampled-out tree": lambda n: _timed_tree(sampled_out_tree, n),
        "OpenTelemetry span (BatchSpanProcessor)": lambda n: _loop(otel, max(n // 10, 200)),
        "@cost_track recorded, CPU timing on": cpu_on,
    }
    in_memory, exporter_note = _in_memory_case(recorded, drop.append)
    if in_memory is not None:
        cases["@cost_track recorded (InMemoryExporter)"] = in_memory

    best: dict[str, float] = {name: float("inf") for name in cases}
    try:
        for _ in range(args.repeats):
            for name, run in cases.items():
                best[name] = min(best[name], run(args.calls))
    finally:
        otel_shutdown()
        if in_memory is not None:
            spendtrace.shutdown()

    base = best["bare call"]
    otel_over = best["OpenTelemetry span (BatchSpanProcessor)"] - base
    print(f"per-call cost, best of {args.repeats} rounds of {args.calls} calls (Python {sys.version.split()[0]})")
    print(f"{'case':<44}{'ns/call':>10}{'overhead':>12}{'x OTel':>9}")
    for name, ns in best.items():
        over = ns - base
        ratio = f"{over / otel_over:.3f}" if name != "bare call" else ""
        print(f"{name:<44}{ns:>10.0f}{over / 1e3:>10.3f}µs{ratio:>9}")
    rec_over = best["@cost_track recorded (dropping sink)"] - base
    out_over = max(best["@cost_track sampled out (root)"], best["@cost_track inside a sampled-out tree"]) - base
    print()
    rec_ok = "OK" if rec_over <= 0.1 * otel_over else "MISSED"
    out_ok = "OK" if out_over <= 500 else "MISSED"
    print(f"target: recorded <= 0.1x OTel      -> {rec_over / otel_over:.3f}x  {rec_ok}")
    print(f"target: sampled out <= 0.5 µs      -> {out_over / 1e3:.3f} µs  {out_ok}")
    if exporter_note is not None:
        print(f"InMemoryExporter case skipped: {exporter_note}")
    else:
        print("(the InMemoryExporter case goes through configure()'s batching processor, as an app's spans do)")

    runs = args.import_runs
    codes = ("import spendtrace", "import spendtrace; spendtrace.cost_track")
    print()
    print(f"import time added (best of {runs} interleaved subprocess runs):")
    print(f"  {'':<42} {'wall - python -c pass':>22} {'-X importtime':>14}")
    for code, (wall_ms, booked_ms) in _import_costs(codes, runs).items():
        print(f"  {code:<42} {wall_ms:>19.1f} ms {booked_ms:>11.1f} ms")


def _timed_tree(tree: Callable[[int], None], calls: int) -> float:
    t0 = time.perf_counter_ns()
    tree(calls)
    return (time.perf_counter_ns() - t0) / calls


def _in_memory_case(
    recorded: Callable[[int], int], drop: Callable[[object], None]
) -> tuple[Callable[[int], float] | None, str | None]:
    """A case timing ``recorded`` with the export layer's batching processor and in-memory exporter as sink.

    Returns ``(None, why)`` when ``spendtrace.configure`` / ``InMemoryExporter`` are not available.
    """
    try:
        exporter = spendtrace.InMemoryExporter()
        spendtrace.configure(exporter=exporter)
    except (AttributeError, ImportError, TypeError) as exc:
        return None, f"not available ({exc})"
    real_sink = _pipeline.get_sink()
    _pipeline.set_sink(drop)

    def run(n: int) -> float:
        spendtrace.flush()  # start each round with an empty queue (outside the timed loop)
        exporter.clear()
        _pipeline.set_sink(real_sink)
        try:
            return _loop(recorded, n)
        finally:
            _pipeline.set_sink(drop)

    return run, None


if __name__ == "__main__":
    main()
