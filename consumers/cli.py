"""``spendtrace-consumer``: run N consumer workers until SIGTERM / SIGINT.

``--workers N`` starts N worker *processes* by default, each a group member with its own
consumer and SQLite connection, supervised here (a crashed one is restarted). Why processes:
decoding, pricing and binding rows are GIL-bound Python while SQLite takes one writer at a
time, so on the 2-core box two processes drained 1.5x faster than one worker and two asyncio
tasks in one process no faster than one (``benchmarks/bench_pipeline.py --workers-compare``:
83k vs 51k vs 55k spans/s). ``--worker-mode task`` is kept for one-core hosts and tests. A stop
signal makes every worker finish and commit its batch in flight, then leave the group.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import UnsupportedCodecError

from consumers.config import (
    DEFAULT_ALERTS_TOPIC,
    DEFAULT_DLQ_TOPIC,
    DEFAULT_GROUP,
    DEFAULT_SPANS_TOPIC,
    WorkerConfig,
)

__all__ = ["build_parser", "config_from_args", "main"]

log = logging.getLogger("consumers")

#: Set in the children of ``run_processes`` to the supervisor's pid.
_PARENT_ENV = "SPENDTRACE_CONSUMER_SUPERVISOR"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``spendtrace-consumer``."""
    p = argparse.ArgumentParser(
        prog="spendtrace-consumer",
        description="Price spans from Kafka into a store (SQLite or ClickHouse), effectively once.",
    )
    env = os.environ.get
    p.add_argument("--bootstrap", default=env("SPENDTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:9092"), help="HOST:PORT")
    p.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="store URL: sqlite:///path.db, chdb:///dir, clickhouse://user:pw@host:8123/db, clickhouses://... "
        "(default: $SPENDTRACE_STORE, else the SQLite file)",
    )
    p.add_argument(
        "--db", default=None, metavar="PATH", help="SQLite file, the shorthand of --store (default: $SPENDTRACE_DB "
        "or cost_data.db)"
    )
    p.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group id (default: {DEFAULT_GROUP})")
    p.add_argument("--workers", type=int, default=1, help="number of workers (default: 1)")
    p.add_argument("--worker-mode", choices=("process", "task"), default="process", help="how N workers run")
    p.add_argument("--topic", default=DEFAULT_SPANS_TOPIC, help="spans topic")
    p.add_argument("--dlq-topic", default=DEFAULT_DLQ_TOPIC, help="dead-letter topic")
    p.add_argument("--alerts-topic", default=DEFAULT_ALERTS_TOPIC, help="alerts topic (created if missing)")
    p.add_argument("--partitions", type=int, default=6, help="partitions of topics created here (default: 6)")
    p.add_argument("--prices", default=None, metavar="FILE", help="price override file")
    p.add_argument("--batch-size", type=int, default=20_000, help="most messages per transaction (default: 20,000)")
    p.add_argument("--session-timeout-ms", type=int, default=10_000, help="consumer group session timeout")
    p.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=100,
        help="longest the broker may hold an empty fetch (default: 100; Tansu always waits this long)",
    )
    p.add_argument("--retention-interval", type=float, default=300.0, help="seconds between retention runs")
    p.add_argument(
        "--retention-chunk-rows", type=int, default=20_000, help="most rows one retention transaction deletes"
    )
    p.add_argument("--no-alerts", action="store_true", help="do not evaluate alert rules in these workers")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port; with --workers N (processes) worker i uses PORT+i",
    )
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address --metrics-port binds to (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--log-level", default=env("SPENDTRACE_LOG_LEVEL", "INFO"))
    return p


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """The worker settings named on the command line."""
    if args.workers < 1 or args.partitions < 1 or args.batch_size < 1 or args.retention_chunk_rows < 1:
        print("spendtrace-consumer: --workers, --partitions, --batch-size and --retention-chunk-rows must be >= 1",
              file=sys.stderr)
        raise SystemExit(2)
    from spendtrace.errors import ConfigError
    from spendtrace.server.store.base import parse_store_url, resolve_store_url

    url = resolve_store_url(args.store, args.db)
    scheme = parse_store_url(url).scheme
    if scheme == "chdb" and args.workers > 1 and args.worker_mode == "process":
        raise ConfigError(
            "chdb:// is opened by one process at a time: --workers N processes need a ClickHouse server "
            "(--store clickhouse://...), or use --worker-mode task"
        )
    return WorkerConfig(
        bootstrap=args.bootstrap,
        db_path=url,
        group_id=args.group,
        topic=args.topic,
        dlq_topic=args.dlq_topic,
        alerts_topic=args.alerts_topic,
        partitions=args.partitions,
        batch_size=args.batch_size,
        prices_file=args.prices,
        retention_interval_s=args.retention_interval,
        retention_chunk_rows=args.retention_chunk_rows,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=max(100, min(3_000, args.session_timeout_ms // 5)),
        fetch_max_wait_ms=args.fetch_max_wait_ms,
    )


async def run_tasks(
    config: WorkerConfig, n: int, metrics_port: int | None, *, alerts: bool = True, metrics_host: str = "127.0.0.1"
) -> int:
    """Run ``n`` workers as tasks of this event loop until a stop signal."""
    from consumers.worker import Worker, load_price_book

    book = load_price_book(config.prices_file)
    workers = [Worker(config, book=book) for _ in range(n)]
    evaluators = [_attach_alerts(w) for w in workers] if alerts else []
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for w in workers:
            w.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    watchdog = loop.create_task(_watch_parent(stop_all))
    server = None
    if metrics_port is not None:
        from consumers.metrics import serve_metrics

        server = await serve_metrics(metrics_port, lambda: workers, host=metrics_host)
    try:
        results = await asyncio.gather(*(w.run() for w in workers), return_exceptions=True)
    finally:
        watchdog.cancel()
        if server is not None:
            server.close()
        for evaluator in evaluators:
            if evaluator is not None:
                await evaluator.aclose()
                await evaluator.dispatcher.aclose()
    failed = [r for r in results if isinstance(r, BaseException)]
    for exc in failed:
        if isinstance(exc, UnsupportedCodecError):  # batches compressed with a codec this install lacks
            log.error("worker stopped: %s (the OTLP receiver's batches are zstd); nothing from them was committed: "
                      "install the codecs with pip install 'spendtrace[consumer]' (cramjam) and start it again", exc)
        else:
            log.error("worker failed", exc_info=exc)
    return 1 if failed else 0


def _attach_alerts(worker: Any) -> Any:
    """Evaluate alert rules after each committed batch (``consumers.alerting``), when it is installed."""
    try:
        from consumers.alerting import attach_alerting
    except ImportError:  # pragma: no cover - alerting ships with the consumers
        log.warning("alert evaluation is not available in this install")
        return None
    return attach_alerting(worker)


def run_processes(argv: Sequence[str], n: int, metrics_port: int | None) -> int:
    """Run ``n`` single-worker child processes; forward stop signals; restart a child that crashes.

    Each child watches this process and stops by itself if it disappears, so a supervisor killed
    with SIGKILL leaves no orphan consuming behind.
    """
    base = [sys.executable, "-m", "consumers", *_without(argv, ("--workers", "--metrics-port")), "--workers", "1"]
    env = {**os.environ, _PARENT_ENV: str(os.getpid())}
    stopping = False
    children: list[subprocess.Popen[bytes]] = []

    def spawn(i: int) -> subprocess.Popen[bytes]:
        extra = ["--metrics-port", str(metrics_port + i)] if metrics_port is not None else []
        return subprocess.Popen([*base, *extra], env=env)

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        children.extend(spawn(i) for i in range(n))
        restart_at: dict[int, float] = {}
        while True:
            alive = False
            for i, child in enumerate(children):
                code = child.poll()
                if code is None:
                    alive = True
                elif code != 0 and not stopping:
                    if i not in restart_at:
                        log.error("worker %d exited with %d; restarting it in 1s", i, code)
                        restart_at[i] = time.monotonic() + 1.0
                    if time.monotonic() >= restart_at[i] and not stopping:
                        del restart_at[i]
                        children[i] = spawn(i)
                    alive = True
            if not alive:
                return 0 if all(c.returncode == 0 for c in children) else 1
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for child in children:  # only reached with live children on an unexpected error
            if child.poll() is None:
                child.terminate()


async def _watch_parent(stop: Any) -> None:
    """Stop the workers when the supervising process (``--workers N`` in process mode) is gone."""
    expected = int(os.environ.get(_PARENT_ENV, "0"))
    if not expected:
        return
    while os.getppid() == expected:
        await asyncio.sleep(1.0)
    log.error("the supervising process %d is gone; stopping", expected)
    stop()


def _without(argv: Sequence[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` less the named options and their values (both ``--opt v`` and ``--opt=v`` forms)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not any(arg.startswith(o + "=") for o in options):
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spendtrace-consumer`` and ``python -m consumers``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    from spendtrace.errors import SpendtraceError

    try:
        config = config_from_args(args)
        if args.prices:  # fail once, here, not in every worker (process mode restarted crashing children forever)
            from spendtrace.server.pricing import load_overrides

            load_overrides(args.prices)
    except SpendtraceError as exc:
        print(f"spendtrace-consumer: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1 and args.worker_mode == "process":
        return run_processes(argv, args.workers, args.metrics_port)
    log.info("consuming %s from %s into %s as group %s", config.topic, config.bootstrap, config.db_path, args.group)
    from consumers.worker import tune_gc, tune_threads
    from spendtrace.server.store.base import parse_store_url

    tune_gc()
    if parse_store_url(str(config.db_path)).scheme != "sqlite":  # measured on ClickHouse only (runtime.tune_threads)
        tune_threads()
    return asyncio.run(
        run_tasks(config, args.workers, args.metrics_port, alerts=not args.no_alerts, metrics_host=args.metrics_host)
    )
