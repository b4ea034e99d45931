"""``spendtrace otlp``: the command serves, refuses bad setups with one line, and the documented rule file loads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from support import json_export, post, topic_span_ids

from spendtrace.server.broker import EmbeddedBroker, free_port
from spendtrace.server.otlp import JSON, decode_body, load_rules
from spendtrace.server.otlp._grpc import SERVICE
from spendtrace.server.store.base import open_store

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_serves_and_writes_the_store(tmp_path: Path) -> None:
    """`spendtrace otlp --port 0 --db PATH` prints its URL, accepts an export, and the span is in the store."""
    db = tmp_path / "otlp.db"
    cmd = [sys.executable, "-m", "spendtrace", "otlp", "--port", "0", "--db", str(db)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            url = re.search(r"http://\S+/v1/traces", line)
            assert url, f"no URL in {line!r}"
            now = str(time.time_ns())  # a span dated 0 (1970) is a dead letter
            span = {"traceId": "44444444444444444444444444444444", "spanId": "4444444444444444", "name": "x",
                    "startTimeUnixNano": now, "endTimeUnixNano": now,
                    "attributes": [{"key": "spendtrace.feature", "value": {"stringValue": "cli"}}]}  # fmt: skip
            status, _, body = post(url.group(0), json_export([span]), "application/json")
            assert status == 200 and "partialSuccess" not in json.loads(body)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
    with open_store(db) as store:
        assert [r["feature"] for r in store.aggregate_by_feature()] == ["cli"]


def test_a_bad_rule_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A rule file that does not parse stops the command before it listens, naming the file."""
    bad = tmp_path / "rules.toml"
    bad.write_text("[[rule]]\nfeature = 'x'\n")
    r = subprocess.run([sys.executable, "-m", "spendtrace", "otlp", "--port", "0", "--db", str(tmp_path / "x.db"),
                        "--rules", str(bad)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and str(bad) in r.stderr and "match" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_rule_file_example_in_deployment_loads(tmp_path: Path) -> None:
    """The TOML example under `spendtrace otlp` in DEPLOYMENT.md is a valid rule file."""
    text = (ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
    section = text.split("### `spendtrace otlp`", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "rules.toml"
    path.write_text(example)
    rules = load_rules(path)
    assert rules.tenant == ("enduser.id", "user.id", "app.tenant_id") and len(rules.rules) == 4
    assert rules.apply({"service.name": "billing-worker", "messaging.destination.name": "q"}) == {
        "feature": "billing", "tenant": "q"}  # fmt: skip


def test_without_a_broker_a_non_sqlite_store_is_refused(tmp_path: Path) -> None:
    """No broker and a store URL that is not SQLite: one line saying what to pass, exit 2."""
    cmd = [sys.executable, "-m", "spendtrace", "otlp", "--port", "0", "--store", f"chdb:///{tmp_path}"]
    env = {**os.environ, "SPENDTRACE_KAFKA_BOOTSTRAP": ""}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "--bootstrap" in r.stderr and "Traceback" not in r.stderr


def test_workers_share_the_port_and_stop_together(broker: EmbeddedBroker, topic_name: str, tmp_path: Path) -> None:
    """`--workers 2`: two processes serve the ports (HTTP and gRPC), every export is acknowledged, one Ctrl-C stops
    them all."""
    grpc_port = free_port()
    cmd = [sys.executable, "-m", "spendtrace", "otlp", "--port", "0", "--bootstrap", broker.bootstrap,
           "--topic", topic_name, "--workers", "2", "--compression", "none", "--grpc-port", str(grpc_port)]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # printed once every worker is forked and gRPC listens
            url = re.search(r"http://\S+/v1/traces", line)
            assert url and "2 processes" in line, f"unexpected {line!r}"
            assert f"OTLP/gRPC on 127.0.0.1:{grpc_port}" in line, f"unexpected {line!r}"
            assert len(_children(proc.pid)) == 2
            now = str(time.time_ns())
            for i in range(20):
                span = {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "x",
                        "startTimeUnixNano": now, "endTimeUnixNano": now}  # fmt: skip
                assert post(url.group(0), json_export([span]), "application/json")[0] == 200
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:  # the same over gRPC, on fresh channels
                export = channel.unary_unary(f"/{SERVICE}/Export")
                for i in range(20, 30):
                    span = {"traceId": f"{i + 1:032x}", "spanId": f"{i + 1:016x}", "name": "x",
                            "startTimeUnixNano": now, "endTimeUnixNano": now}  # fmt: skip
                    export(decode_body(json_export([span]), JSON).SerializeToString(), timeout=60)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err
    assert _children(proc.pid) == []
    assert sorted(topic_span_ids(broker.bootstrap, topic_name)) == [f"{i + 1:016x}" for i in range(30)]


def test_workers_without_a_broker_are_refused(tmp_path: Path) -> None:
    """Several processes cannot share the one-writer store: one line, exit 2."""
    env = {**os.environ, "SPENDTRACE_KAFKA_BOOTSTRAP": ""}
    r = subprocess.run([sys.executable, "-m", "spendtrace", "otlp", "--port", "0", "--db", str(tmp_path / "x.db"),
                        "--workers", "2"], capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert r.returncode == 2 and "--bootstrap" in r.stderr and "Traceback" not in r.stderr


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out
