"""``spendtrace-consumer`` as a user runs it: N workers as processes or tasks, metrics, a graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from consumers.cli import build_parser, config_from_args, main
from consumers.config import WorkerConfig
from consumers.testing import make_spans, produce_spans, stored_offsets, wait_for
from spendtrace.server.broker import EmbeddedBroker, free_port


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


@contextmanager
def _running(cmd: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` started with its output in ``log_path``; killed if it still runs when the block ends."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stored_spans(db_path: Path) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM spans").fetchone()[0])


def _value(text: str, series: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + "{"))


@pytest.mark.parametrize("mode", ["process", "task"])
async def test_two_workers_drain_then_stop_gracefully_on_sigterm(
    broker: EmbeddedBroker, topic_name: str, db_path: Path, tmp_path: Path, mode: str
) -> None:
    """Both modes store every span once, serve metrics per worker, and exit 0 on SIGTERM."""
    spans = make_spans(3_000, seed=11)
    ends = await produce_spans(broker.bootstrap, topic_name, spans, partitions=4)
    group = f"{topic_name}-g"
    port = free_port()
    cmd = [
        sys.executable, "-m", "consumers", "--bootstrap", broker.bootstrap, "--db", str(db_path), "--group", group,
        "--topic", topic_name, "--partitions", "4", "--workers", "2", "--worker-mode", mode, "--batch-size", "300",
        "--session-timeout-ms", "2000", "--metrics-port", str(port), "--log-level", "WARNING",
    ]  # fmt: skip
    with _running(cmd, tmp_path / "cli.log") as proc:
        await wait_for(lambda: stored_offsets(db_path, group, topic_name) == ends, 120, "the workers to drain")
        # process mode: one endpoint per child (port, port + 1); task mode: one endpoint, a series per worker
        ports = [port, port + 1] if mode == "process" else [port]
        await wait_for(lambda: all(_metrics(p) for p in ports), 60, "every metrics endpoint to answer")
        # the counters move after each batch's Kafka commit, which follows its database commit
        await wait_for(
            lambda: sum(_value(_metrics(p), "spendtrace_consumer_spans_total") for p in ports) >= len(spans),
            60,
            "the span counters to reach every span",
        )
        texts = [_metrics(p) for p in ports]
        assert sum(t.count('spendtrace_consumer_batches_total{worker="') for t in texts) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert _stored_spans(db_path) == len(spans)


def test_options_reach_the_worker_config() -> None:
    """Every documented option lands in the worker's settings."""
    args = build_parser().parse_args(
        ["--bootstrap", "k:9092", "--db", "x.db", "--group", "G", "--topic", "T", "--partitions", "12",
         "--batch-size", "777", "--prices", "p.json", "--session-timeout-ms", "6000", "--fetch-max-wait-ms", "40"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.bootstrap, cfg.db_path, cfg.group_id, cfg.topic) == ("k:9092", "x.db", "G", "T")
    assert (cfg.partitions, cfg.batch_size, cfg.prices_file, cfg.session_timeout_ms) == (12, 777, "p.json", 6000)
    assert cfg.heartbeat_interval_ms < cfg.session_timeout_ms
    assert cfg.fetch_max_wait_ms == 40
    assert config_from_args(build_parser().parse_args([])).fetch_max_wait_ms == WorkerConfig("k", "d").fetch_max_wait_ms


def test_the_store_comes_from_store_then_db_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--store URL`` wins, ``--db PATH`` is its SQLite shorthand (not both), ``SPENDTRACE_STORE`` the default."""
    parse = build_parser().parse_args
    assert config_from_args(parse(["--store", "chdb:///tmp/ch"])).db_path == "chdb:///tmp/ch"
    assert config_from_args(parse(["--db", "x.db"])).db_path == "x.db"
    monkeypatch.setenv("SPENDTRACE_STORE", "chdb:///tmp/env")
    assert config_from_args(parse([])).db_path == "chdb:///tmp/env"
    assert main(["--store", "a.db", "--db", "b.db"]) == 2


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--store", "chdb:///tmp/ch", "--workers", "2"], "one process at a time"),
    ],
)
def test_clickhouse_stores_the_workers_cannot_serve_are_refused_in_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """chDB with N worker processes: exit status 2 and one line saying why."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_clickhouse_server_store_runs_the_workers_with_alerts() -> None:
    """Alert state lives in ClickHouse itself, so ``--store clickhouse://`` needs no ``--no-alerts``."""
    args = build_parser().parse_args(["--store", "clickhouse://h:8123/db", "--workers", "2"])
    assert not args.no_alerts and config_from_args(args).db_path == "clickhouse://h:8123/db"


def test_nonsense_counts_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """``--workers 0`` stops with a message and exit status 2 (a bad argument) instead of starting nothing."""
    with pytest.raises(SystemExit) as exc:
        main(["--workers", "0"])
    assert exc.value.code == 2 and "--workers" in capsys.readouterr().err


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_supervisor_restarts_a_killed_worker_and_leaves_no_orphans(
    broker: EmbeddedBroker, topic_name: str, db_path: Path, tmp_path: Path
) -> None:
    """A SIGKILLed child is replaced; a SIGKILLed supervisor's children notice and stop by themselves."""
    cmd = [
        sys.executable, "-m", "consumers", "--bootstrap", broker.bootstrap, "--db", str(db_path),
        "--group", f"{topic_name}-g", "--topic", topic_name, "--workers", "2", "--session-timeout-ms", "2000",
        "--log-level", "WARNING",
    ]  # fmt: skip
    with _running(cmd, tmp_path / "cli.log") as proc:
        await wait_for(lambda: len(_children(proc.pid)) == 2, 30, "two worker processes")
        first = _children(proc.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: len(_children(proc.pid) - {victim}) == 2, 30, "the killed worker to be replaced")
        workers = _children(proc.pid) - {victim}
        assert workers != first
        proc.kill()  # the supervisor dies without a chance to stop its children
        proc.wait(10)
        await wait_for(lambda: not any(_alive(pid) for pid in workers), 60, "orphaned workers to stop by themselves")


def test_a_worker_process_hands_the_gil_over_sooner_than_cpython_by_default() -> None:
    """``tune_threads`` (run by ``spendtrace-consumer`` at start) shortens the GIL switch interval to 0.5 ms."""
    from consumers.worker import tune_threads
    from spendtrace.server.runtime import SWITCH_INTERVAL_S

    previous = sys.getswitchinterval()
    try:
        tune_threads()
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S) == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(previous)


async def test_a_worker_without_the_zstd_codec_stops_saying_what_to_install_and_loses_nothing(
    broker: EmbeddedBroker, topic_name: str, db_path: Path, tmp_path: Path
) -> None:
    """zstd batches (what the OTLP receiver sends) reach a worker whose install lacks cramjam: it exits 1 with
    the pip command, commits nothing; with the codec back, every span is stored once."""
    spans = make_spans(400, seed=5)
    ends = await produce_spans(broker.bootstrap, topic_name, spans, partitions=2, compression="zstd")
    hidden = tmp_path / "no-codecs"
    hidden.mkdir()
    (hidden / "cramjam.py").write_text('raise ImportError("cramjam is not installed here")\n')
    group = f"{topic_name}-g"
    cmd = [sys.executable, "-m", "consumers", "--bootstrap", broker.bootstrap, "--db", str(db_path), "--group",
           group, "--topic", topic_name, "--partitions", "2", "--worker-mode", "task",
           "--session-timeout-ms", "2000"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "zstd" in done.stderr and "pip install 'spendtrace[consumer]'" in done.stderr
    assert stored_offsets(db_path, group, topic_name) == {}
    with _running(cmd, tmp_path / "cli.log") as proc:
        await wait_for(lambda: stored_offsets(db_path, group, topic_name) == ends, 120, "the worker to drain")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert _stored_spans(db_path) == len(spans)
