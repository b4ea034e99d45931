"""TUI refresh cost with millions of spans stored, and key-press latency while workers ingest.

    python benchmarks/bench_tui.py [--spans 5000000] [--repeat 40] [--pace 0.25] [--no-ingest]
                                   [--ingest-rate 50000 | --backlog N] [--workers 2]
    python benchmarks/bench_tui.py --no-ingest --spans 730000 --days 365 --tenants 100000 \
                                   --features 10000 --endpoints 2000 [--backend sqlite|chdb | --store URL]

``--features`` / ``--endpoints`` (default 0: the eight fixed endpoint trees) generate the scale shape
of ``benchmarks/_data.py``; ``--backend chdb`` builds it in chDB and ``--store URL`` times an existing
store (both: the refresh part only, the workers of part 2 write SQLite).

1. Refresh cycle: the real ``SpendtraceApp`` (headless, 160x48) on a store of ``--spans`` spans
   written through the real ingest path (``benchmarks/_data.py``, cached under /tmp). One cycle is
   what the refresh worker does when the store changed: the header query, the visible screen's
   queries, its by-key widget update, and the wait for the repainted frame. The Live, Tenants and
   Endpoints screens alternate their window between "all" and "7d" so that cells really change.
   Cycles start ``--pace`` seconds apart (default 0.25 s, the app's refresh interval). Back to back,
   Textual's 60 fps frame pacing can hold a frame up to two frame periods after the previous one,
   which the app's 4 Hz refreshes never meet; the Live cycle is also printed back to back for that.
   Median and p95 per screen; target median <= 50 ms. Beside each cycle, the CPU time of the app's
   thread in it (the widget update and the frame; the reads run on the store's thread), which other
   processes on the machine move far less than the wall time. Reference, same run: one bare
   ``SELECT sum(cost_nano)`` over the day rollups on the same aiosqlite connection (the cheapest
   query a refresh could make).
2. Key-press latency: time from a key press (delivered through the app's driver, as a terminal's
   would be) to the next repainted frame showing its effect (``j``/``k`` on the Live
   table, and ``4``/``1`` switching screens), first with the store idle (the reference), then
   while ``--workers`` consumer workers (default 2, each a worker and its writer process) store spans
   into a copy of the same database, with the app refreshing live (4 Hz). The spans come from a
   producer publishing ~``--ingest-rate`` spans/s meanwhile, or with ``--backlog N`` from N spans
   published before the workers start (on a 2-core machine a live producer cannot publish 50,000/s
   next to the workers and the app). Either way the spans carry the start times live traffic at that
   rate would have (N spans over the last N / rate seconds; 50,000/s for a backlog), so a batch
   touches as many rollup rows as a live batch. Prints the rate stored in the measuring window and
   the ratio busy/idle.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import NOW_NS, Shape, cached_store, generate

SIZE = (160, 48)
#: spans per second the issue asks the workers to ingest during the latency measurement
LIVE_RATE = 50_000
#: perf_counter() of every screen repaint (the compositor producing a frame), recorded by a hook.
FRAMES: list[float] = []
CYCLES: list[float] = []
#: CPU time of the app's thread (ms) over each cycle: the widget update and the frame, not the reads
#: (they run on the store's thread), and much less moved by other processes than the wall time
CYCLES_CPU: list[float] = []


def hook_frames() -> None:
    """Record the time of each repaint: Screen._compositor_refresh is where a frame is composed."""
    from textual.screen import Screen

    original = Screen._compositor_refresh

    def recorded(self: Any) -> None:
        original(self)
        FRAMES.append(time.perf_counter())

    Screen._compositor_refresh = recorded  # type: ignore[method-assign]


async def next_frame_after(t: float, timeout: float = 1.0) -> float | None:
    """The first repaint after ``t`` (None if none came within ``timeout``)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for f in reversed(FRAMES):
            if f > t:
                return min(x for x in FRAMES if x > t)
            break
        await asyncio.sleep(0.0005)
    return None


def send_key(app: Any, key: str) -> None:
    """Deliver a key the way a terminal's key press arrives: through the app's driver."""
    from textual import events

    ev = events.Key(key, key if len(key) == 1 else None)
    ev.set_sender(app)
    app._driver.send_message(ev)


async def wait(cond: Callable[[], bool], timeout: float = 10.0) -> float:
    """Poll ``cond`` (yielding to the app) and return when it first held."""
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.0005)
    return time.perf_counter()


def stats(times: list[float]) -> tuple[float, float]:
    """(median, p95) in ms."""
    times = sorted(times)
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    """Wall times (ms) of ``repeat`` awaited calls after one warm-up."""
    await fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


# --- 1. refresh cycle ------------------------------------------------------------------------


async def bench_refresh(db: Path | str, repeat: int, pace: float, now_ns: int = NOW_NS) -> dict[str, Any]:
    """Median/p95 refresh cycle per screen on ``db`` with the data's fixed clock, cycles ``pace`` s apart."""
    from tui.app import SpendtraceApp
    from tui.screens.dimension import DimensionScreen

    app = SpendtraceApp(db, clock=lambda: now_ns, live=False)
    results: dict[str, tuple[float, float]] = {}
    async with app.run_test(size=SIZE) as pilot:
        await app.refresh_now()
        store: Any = app.store

        async def bare() -> None:  # the same connection (SQLite) or client (ClickHouse) as the screens' queries
            await store._all("SELECT sum(cost_nano) FROM rollup_day WHERE service = ''")

        results["reference: bare SELECT sum() over rollup_day"] = stats(await timed(bare, repeat))
        for key, name in (("1", "live"), ("2", "tenants"), ("3", "endpoints"), ("4", "requests"), ("5", "alerts"),
                          ("6", "trends")):  # fmt: skip
            await pilot.press(key)
            await pilot.pause()
            screen = app.screen

            async def cycle(screen: Any = screen, pace: float = pace) -> None:
                await asyncio.sleep(pace)
                await wait(lambda: not app.refresher.busy)  # a key's own refresh must not make this one a no-op
                if isinstance(screen, DimensionScreen):  # make the cells change every cycle
                    screen.window = "7d" if screen.window == "all" else "all"
                c0 = time.thread_time()
                t0 = time.perf_counter()
                if not await app.refresh_now():
                    raise RuntimeError("the refresh cycle did not run")
                t1 = time.perf_counter()
                c1 = time.thread_time()
                frame = await next_frame_after(t1, 0.25)  # None: nothing on screen changed
                CYCLES.append(((frame or t1) - t0) * 1000)
                CYCLES_CPU.append(((time.thread_time() if frame else c1) - c0) * 1000)  # not the wait for no frame

            async def fetch(screen: Any = screen) -> None:
                await screen.fetch(app.store)

            results[f"  of which queries: {name}"] = stats(await timed(fetch, repeat))
            CYCLES.clear()
            CYCLES_CPU.clear()
            for _ in range(repeat + 1):
                await cycle()
            results[f"refresh cycle: {name}"] = stats(CYCLES[1:])
            results[f"  app thread CPU in the cycle: {name}"] = stats(CYCLES_CPU[1:])
            if name == "live":
                CYCLES.clear()
                for _ in range(repeat + 1):
                    await cycle(pace=0)
                results["  live, cycles back to back"] = stats(CYCLES[1:])
                rows = len(screen.query_one("#main").rows)  # type: ignore[attr-defined]
                cols = len(app.screen.query_one("#main").columns)  # type: ignore[attr-defined]
                print(f"  live table: {rows} features, {cols} columns")
    return results


# --- 2. key-press latency under ingest ---------------------------------------------------------


def _cursor_left(table: Any, row: int) -> bool:
    return bool(table.cursor_row != row)


def _showing(app: Any, kind: type) -> bool:
    return isinstance(app.screen, kind)


async def key_latencies(app: Any, pilot: Any, rounds: int) -> dict[str, list[float]]:
    """Key press (through the driver) -> state changed -> the next repaint, for cursor moves and screen switches."""
    from tui.screens.dimension import LiveScreen
    from tui.screens.requests import RequestsScreen

    out: dict[str, list[float]] = {"j/k on the live table": [], "switch screen (4, 1)": []}
    for _ in range(rounds):
        table = app.screen.query_one("#main")
        row = table.cursor_row
        t0 = time.perf_counter()
        send_key(app, "j" if row == 0 else "k")
        changed = await wait(partial(_cursor_left, table, row))
        frame = await next_frame_after(changed)
        out["j/k on the live table"].append(((frame or changed) - t0) * 1000)
        for key, kind in (("4", RequestsScreen), ("1", LiveScreen)):
            t0 = time.perf_counter()
            send_key(app, key)
            changed = await wait(partial(_showing, app, kind))
            frame = await next_frame_after(changed)
            out["switch screen (4, 1)"].append(((frame or changed) - t0) * 1000)
        await asyncio.sleep(0.1)
    return out


def producer_main(bootstrap: str, topic: str, rate: float, count: int) -> int:
    """(child process) Publish ``count`` fresh spans at ``rate`` per second (0: as fast as it can).

    The spans are timed as live traffic at ``rate`` (``LIVE_RATE`` for a backlog) would be: spread over
    the last ``count / rate`` seconds before ``NOW_NS``, so a batch touches as many rollup rows as a
    batch of live spans would (spread over a whole day, 20,000 spans made ~22,000 minute rows, 6x more).
    """
    import msgspec
    from aiokafka import AIOKafkaProducer

    from spendtrace.schema import encode_span

    n = count
    day_ns = 86_400 * 10**9
    start = NOW_NS - day_ns
    span_ns = int(n / (rate or LIVE_RATE) * 1e9)  # how long live traffic takes to make n spans
    msgs: list[tuple[bytes, bytes]] = []
    for batch in generate(Shape(spans=n, days=1, tenants=100, seed=99), batch=20_000):
        for s in batch:
            t = NOW_NS - span_ns + (s.start_ns - start) * span_ns // day_ns
            s = msgspec.structs.replace(s, span_id="b" + s.span_id, request_id="b" + s.request_id, start_ns=t,
                                        parent_id=None if s.parent_id is None else "b" + s.parent_id)  # fmt: skip
            msgs.append((s.request_id.encode(), encode_span(s)))
    msgs = msgs[:n]

    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
        await p.start()
        try:
            t0 = time.monotonic()
            step = max(1, int(rate / 20)) if rate > 0 else 20_000  # 20 slices a second
            for i in range(0, len(msgs), step):
                for key, value in msgs[i : i + step]:
                    await p.send(topic, value, key=key)
                if rate <= 0:
                    continue
                due = t0 + (i + step) / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await p.flush()
            print(f"producer: {len(msgs)} spans in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        finally:
            await p.stop()

    asyncio.run(run())
    return 0


async def published(bootstrap: str, topic: str) -> int:
    """Messages on ``topic`` so far (the sum of its partitions' end offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return sum((await consumer.end_offsets(parts)).values()) if parts else 0
    finally:
        await consumer.stop()


def stored_spans(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT coalesce(sum(spans), 0) FROM rollup_day WHERE service = ''").fetchone()[0])
    finally:
        conn.close()


async def bench_latency(db: Path, rate: float, seconds: float, rounds: int, workers: int, backlog: int) -> None:
    """Idle vs ingesting key latency on a copy of ``db``.

    With ``backlog`` the spans are published before the workers start, so the workers ingest as
    fast as they can while the keys are pressed (a producer publishing live on the same two cores
    cannot reach 50,000 spans/s); otherwise a producer publishes ``rate`` spans/s meanwhile.
    """
    from spendtrace.server.broker import EmbeddedBroker
    from spendtrace.server.topics import ensure_topics
    from tui.app import SpendtraceApp

    tmp = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    copy = tmp / "store.db"
    print(f"copying the store to {copy} for the ingest run ...", flush=True)
    shutil.copyfile(db, copy)
    # The store's spans are dated up to NOW_NS, weeks ago: under the default policy the workers' first
    # retention round would spend the measurement deleting most of them instead of storing the ingest.
    from spendtrace import SQLiteStorage

    store = SQLiteStorage(str(copy))
    store.set_retention(raw_data_days=3650, hourly_rollups_days=3650, daily_rollups_days=3650, minute_rollups_days=3650)
    store.close()
    broker = EmbeddedBroker(log_path=tmp / "broker.log").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await ensure_topics(broker.bootstrap, ["spendtrace.spans"], partitions=6)
        app = SpendtraceApp(copy, live=True, refresh_interval=0.25)
        async with app.run_test(size=SIZE) as pilot:
            await app.refresh_now()
            await pilot.pause()
            app.screen.query_one("#main").focus()
            await pilot.pause()  # focus is applied on the next message; a key before it would go elsewhere
            idle = await key_latencies(app, pilot, rounds)
            before = stored_spans(copy)
            producer = [sys.executable, __file__, "--producer", broker.bootstrap, "spendtrace.spans"]
            if backlog:
                print(f"publishing a backlog of {backlog:,} spans ...", flush=True)
                done = await asyncio.to_thread(subprocess.run, [*producer, "0", str(backlog)], check=True)
                assert done.returncode == 0
            worker_log = (tmp / "worker.log").open("ab")
            worker = [sys.executable, "-m", "consumers", "--bootstrap", broker.bootstrap, "--db", str(copy),
                      "--partitions", "6", "--workers", str(workers), "--no-alerts",
                      "--log-level", "WARNING"]  # fmt: skip
            procs.append(subprocess.Popen(worker, stdout=worker_log, stderr=subprocess.STDOUT))
            if not backlog:
                procs.append(subprocess.Popen([*producer, str(rate), str(int(rate * seconds))]))
            # wait until spans are flowing into the store, then measure while they keep flowing
            deadline = time.monotonic() + 600
            while stored_spans(copy) <= before:
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker stored nothing; see worker.log")
                await asyncio.sleep(0.2)
            t0, n0, p0 = time.monotonic(), stored_spans(copy), await published(broker.bootstrap, "spendtrace.spans")
            refresh_before = app.refresher.cycles
            busy = await key_latencies(app, pilot, rounds)
            t1, n1, p1 = time.monotonic(), stored_spans(copy), await published(broker.bootstrap, "spendtrace.spans")
            refreshes = app.refresher.cycles - refresh_before
            cycle = list(app.refresher.durations)[-refreshes:] if refreshes else [0.0]
        rate_seen = (n1 - n0) / (t1 - t0)
        source = (f"from a backlog of {backlog:,} published beforehand" if backlog else
                  f"{(p1 - p0) / (t1 - t0):,.0f}/s published by the producer meanwhile (asked for {rate:,.0f}/s)")
        print(f"\ningest while measuring: {rate_seen:,.0f} spans/s stored by {workers} worker(s), {source}; "
              f"{refreshes} live refreshes in {t1 - t0:.1f} s")  # fmt: skip
        head = f"{'key press -> repainted screen':<40} {'idle median':>12} {'ingest median':>14} {'p95':>8}"
        print(f"{head} {'ratio':>7}")
        for name in idle:
            im, _ = stats(idle[name])
            bm, bp = stats(busy[name])
            print(f"{name:<40} {im:>10.1f}ms {bm:>12.1f}ms {bp:>6.1f}ms {bm / im:>6.2f}x")
        cm, cp = stats(cycle)
        print(f"{'live refresh cycles during ingest':<40} {'':>12} {cm:>12.1f}ms {cp:>6.1f}ms  (queries + update)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--producer":
        return producer_main(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=5_000_000)
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--pace", type=float, default=0.25, help="seconds between refresh cycles (the app's interval)")
    ap.add_argument("--ingest-rate", type=float, default=50_000)
    ap.add_argument("--ingest-seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=20, help="key-press rounds per phase")
    ap.add_argument("--workers", type=int, default=2, help="consumer workers storing the ingest (2 processes each)")
    ap.add_argument("--backlog", type=int, default=0, help="publish this many spans before the workers start")
    ap.add_argument("--no-ingest", action="store_true", help="only the refresh-cycle part")
    ap.add_argument("--features", type=int, default=0, help="generated features (0: the eight fixed endpoint trees)")
    ap.add_argument("--endpoints", type=int, default=0, help="generated endpoints (0: the eight fixed ones)")
    ap.add_argument("--backend", choices=("sqlite", "chdb"), default="sqlite", help="store the generated data in")
    ap.add_argument("--store", default=None, help="time this existing store URL (wall clock) instead")
    args = ap.parse_args()
    shape = Shape(spans=args.spans, days=args.days, tenants=args.tenants, features=args.features,
                  endpoints=args.endpoints)  # fmt: skip
    url = args.store or cached_store(shape, args.backend)
    sqlite_file = url.startswith("sqlite:///") and not args.store
    if (args.store or args.backend != "sqlite") and not args.no_ingest:
        ap.error("the ingest part writes SQLite through the workers: use --no-ingest with --store or --backend chdb")
    hook_frames()
    from spendtrace.server.store.base import parse_store_url

    db: Path | str = Path(parse_store_url(url).path) if sqlite_file else url
    if isinstance(db, Path):
        print(f"store: {db} ({db.stat().st_size / 1e9:.2f} GB, {stored_spans(db):,} spans)")
    else:
        print(f"store: {db}")
    now = time.time_ns() if args.store else NOW_NS
    results = asyncio.run(bench_refresh(db, args.repeat, args.pace, now))
    head = f"refresh (queries + widget update + frame), {args.pace:g} s apart"
    print(f"\n{head:<48} {'median':>9} {'p95':>9}")
    for name, (med, p95) in results.items():
        print(f"{name:<48} {med:>7.2f}ms {p95:>7.2f}ms")
    ref = results["reference: bare SELECT sum() over rollup_day"][0]
    worst = max(med for name, (med, _) in results.items() if name.startswith("refresh"))
    print(f"slowest screen median {worst:.1f} ms = {worst / ref:.1f}x the bare rollup scan; "
          f"target <= 50 ms: {'OK' if worst <= 50 else 'MISSED'}")  # fmt: skip
    if not args.no_ingest and isinstance(db, Path):
        asyncio.run(bench_latency(db, args.ingest_rate, args.ingest_seconds, args.rounds, args.workers, args.backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
