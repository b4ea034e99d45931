"""The ``spendtrace`` CLI: tables and JSON from a real database, ``--db`` anywhere, clear errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _query_fixtures import INJECTION, Expect, make_spans, store

from spendtrace.cli import main as cli
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite import SQLiteStorage

NOW = 1_793_620_800_000_000_000  # the fixed_now_ns instant


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Expect]:
    """A database of recorded request trees and the expected numbers."""
    path = tmp_path_factory.mktemp("cli") / "cost_data.db"
    spans = make_spans(NOW, n_requests=60, seed=11)
    book = PriceBook.default()
    store(path, spans, book)
    return str(path), Expect(spans)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``main(argv)`` and return (exit status, stdout, stderr)."""
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_by_feature_table_and_json(db: tuple[str, Expect], capsys: pytest.CaptureFixture[str]) -> None:
    """The table lists every feature with its span count; ``--json`` carries the exact nano-dollar totals."""
    path, expect = db
    rc, out, _ = run(capsys, "--db", path, "by-feature")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[0] == "feature" and set(lines[1]) <= {"-", " "}
    by_feature = expect.by("feature")
    for feature, e in by_feature.items():
        row = next(line for line in lines[2:] if line.startswith(feature + " "))
        assert f" {e['spans']} " in row + " "
    rc, out, _ = run(capsys, "--db", path, "by-feature", "--json")
    assert {r["feature"]: r["cost_nano"] for r in json.loads(out)} == {k: v["cost"] for k, v in by_feature.items()}


def test_db_before_or_after_the_subcommand(db: tuple[str, Expect], capsys: pytest.CaptureFixture[str]) -> None:
    """``--db`` works before and after the subcommand, with the same output."""
    path, _ = db
    before = run(capsys, "--db", path, "by-user", "--limit", "2")
    after = run(capsys, "by-user", "--limit", "2", "--db", path)
    assert before == after and before[0] == 0
    assert len(before[1].splitlines()) == 4  # header, rule, two rows


def test_reports_match_the_storage(db: tuple[str, Expect], capsys: pytest.CaptureFixture[str]) -> None:
    """total, by-endpoint, breakdown, requests and trend print what SQLiteStorage returns."""
    path, expect = db
    with SQLiteStorage(path) as s:
        cases = [
            (["total"], s.total()),
            (["total", "--user", INJECTION], s.total(user_id=INJECTION)),
            (["by-endpoint"], s.aggregate_by_endpoint()),
            (["breakdown"], s.get_feature_cost_breakdown()),
            (["requests", "--order", "cost", "--limit", "3"], s.get_request_cost(3, "cost")),
            (["trend", "--feature", "search", "--days", "7"], s.get_cost_trend("search", 7)),
        ]
    for argv, want in cases:
        rc, out, _ = run(capsys, "--db", path, *argv, "--json")
        assert rc == 0 and json.loads(out) == json.loads(json.dumps(want)), argv
    assert json.loads(run(capsys, "--db", path, "total", "--json")[1])["cost_nano"] == sum(
        p.cost for p in expect.priced
    )
    rc, out, _ = run(capsys, "--db", path, "trend", "--feature", "search", "--days", "7")
    assert rc == 0 and len(out.splitlines()) == 2 + 7


def test_tree_prints_the_request(db: tuple[str, Expect], capsys: pytest.CaptureFixture[str]) -> None:
    """``tree`` indents children under their parent; an unknown request id exits 1 with a message."""
    path, expect = db
    rid = next(p.span.request_id for p in expect.priced if p.span.span_id.endswith("-pd1"))
    rc, out, _ = run(capsys, "--db", path, "tree", rid)
    lines = out.splitlines()[2:]
    assert rc == 0 and lines[0].startswith("api ")
    assert any(line.startswith("    product_details") for line in lines)  # depth 2
    rc, out, err = run(capsys, "--db", path, "tree", "no-such-request")
    assert rc == 1 and out == "" and "no-such-request" in err


def test_missing_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file gives one line naming it, exit status 2, and does not create the file."""
    missing = tmp_path / "nope.db"
    rc, out, err = run(capsys, "by-feature", "--db", str(missing))
    assert rc == 2 and out == ""
    assert str(missing) in err and "Traceback" not in err
    assert not missing.exists()


def test_default_database_from_environment(
    db: tuple[str, Expect], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--db`` the CLI reads ``SPENDTRACE_DB``."""
    monkeypatch.setenv("SPENDTRACE_DB", db[0])
    rc, out, _ = run(capsys, "total", "--json")
    assert rc == 0 and json.loads(out)["transaction_count"] == len(db[1].priced)


def test_plugins_are_the_cli_modules_present(capsys: pytest.CaptureFixture[str]) -> None:
    """Each ``spendtrace/cli/*.py`` module but ``main`` is a plugin; unknown subcommands are refused."""
    import spendtrace.cli

    folder = Path(spendtrace.cli.__file__).parent
    present = sorted(p.stem for p in folder.glob("*.py") if p.stem != "main" and not p.stem.startswith("_"))
    assert present and cli.plugins() == present
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["not-a-subcommand"])
    capsys.readouterr()
    text = parser.format_help()
    for builtin in ("total", "by-feature", "by-user", "by-endpoint", "requests", "tree", "trend", "broker"):
        assert builtin in text


def test_python_dash_m_spendtrace(db: tuple[str, Expect]) -> None:
    """``python -m spendtrace`` is the same CLI in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "spendtrace", "by-feature", "--json", "--db", db[0]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = {r["feature"]: r["cost_nano"] for r in json.loads(proc.stdout)}
    assert got == {k: v["cost"] for k, v in db[1].by("feature").items()}


def test_broker_subcommand_serves_until_interrupted() -> None:
    """``spendtrace broker`` prints a loopback address that accepts connections and exits 0 on Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendtrace", "broker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        host, _, port = proc.stdout.readline().decode().strip().rpartition(":")
        assert host == "127.0.0.1"
        socket.create_connection((host, int(port)), timeout=5).close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        with socket.socket() as s:
            assert s.connect_ex((host, int(port))) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_newer_schema_is_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database written by a newer spendtrace gives a one-line message and exit status 2, not a traceback."""
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    rc, out, err = run(capsys, "--db", str(path), "total")
    assert rc == 2 and out == ""
    assert "newer" in err and "Traceback" not in err


def test_store_url_names_the_same_database(
    db: tuple[str, Expect], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--store sqlite:///PATH`` (before or after the subcommand) and ``SPENDTRACE_STORE`` read what ``--db`` reads."""
    path, expect = db
    by_db = run(capsys, "--db", path, "total", "--json")
    assert by_db[0] == 0 and json.loads(by_db[1])["cost_nano"] == sum(p.cost for p in expect.priced)
    assert run(capsys, "--store", f"sqlite:///{path}", "total", "--json") == by_db
    assert run(capsys, "total", "--json", "--store", f"sqlite:///{path}") == by_db
    monkeypatch.setenv("SPENDTRACE_STORE", f"sqlite:///{path}")
    monkeypatch.delenv("SPENDTRACE_DB", raising=False)
    assert run(capsys, "total", "--json") == by_db


def test_store_url_errors_are_clear(db: tuple[str, Expect], capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown scheme, both --store and --db, or a missing file: exit 2 with one line saying which."""
    path, _ = db
    rc, _, err = run(capsys, "--store", "postgres://h/db", "total")
    assert rc == 2 and "unknown store URL scheme 'postgres'" in err
    rc, _, err = run(capsys, "--store", f"sqlite:///{path}", "--db", path, "total")
    assert rc == 2 and "not both" in err
    rc, _, err = run(capsys, "--store", f"sqlite:///{path}.missing", "total")
    assert rc == 2 and "no database at" in err


@pytest.mark.parametrize("module", ["spendtrace.cli.main", "spendtrace.cli"])
def test_python_m_spendtrace_cli_main_as_the_original_readme_runs_it(db: tuple[str, Expect], module: str) -> None:
    """``python -m spendtrace.cli[.main] --db PATH total`` prints the same total as ``spendtrace``."""
    import subprocess
    import sys

    path, expect = db
    result = subprocess.run(
        [sys.executable, "-m", module, "--db", path, "total", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cost_nano"] == sum(p.cost for p in expect.priced)
