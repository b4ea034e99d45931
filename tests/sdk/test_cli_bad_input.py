"""Bad input to the command lines is one clear line and exit 2, never a traceback; stored names print escaped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _query_fixtures import store

from spendtrace.schema import Span, UsageItem
from spendtrace.server.alerts.rules import set_alert
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect

EVIL = "pay\x1b]0;owned\x07\x1b[2Jroll\u202eexe.txt"


def spendtrace(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``spendtrace`` CLI in a fresh process."""
    return subprocess.run([sys.executable, "-m", "spendtrace", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def assert_one_line_exit_2(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    """Exit 2, no traceback, and the error is the last stderr line and says ``needle``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr.strip().splitlines()[-1], proc.stderr


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """An empty, current database."""
    path = tmp_path / "cost_data.db"
    connect(path).close()
    return path


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["trend", "--days", "100000000"], "--days: must be in 1..36600"),
        (["requests", "--limit", "99999999999999999999999"], "--limit: must be in"),
        (["by-feature", "--limit", "abc"], "--limit: not a whole number"),
        (["alerts", "tail", "--since-id", "99999999999999999999999", "--no-follow"], "--since-id: must be in"),
        (["alerts", "add", "--feature", "x", "--threshold", "1e300"], "--threshold: must be above 0"),
        (["alerts", "add", "--feature", "x", "--threshold", "1", "--window-hours", "1e300"], "--window-hours"),
        (["alerts", "add", "--feature", "x", "--threshold", "1", "--cooldown-minutes", "9" * 25], "--cooldown"),
        (["alerts", "add", "--feature", "x", "--rate", "1e400"], "--rate: must be above 1"),
        (["alerts", "add", "--feature", "x", "--budget", "10", "--percentages", "a,b"], "'a' is not a number"),
        (["reconcile", "--settle-days", "99999999999", "--actuals", "x.json"], "--settle-days: must be in 0..366"),
        (["broker", "--port", "99999"], "--port: must be in 0..65535"),
    ],
)
def test_bad_numbers_are_one_line_and_exit_2(db: Path, argv: list[str], needle: str) -> None:
    """Out-of-range and malformed numbers are refused by the parser, not by a traceback from SQLite or datetime."""
    assert_one_line_exit_2(spendtrace(*argv, "--db", str(db), cwd=db.parent), needle)


def test_removing_a_rule_by_a_huge_number_is_not_a_traceback(db: Path) -> None:
    """``alerts remove 999...`` beyond 64 bits is a name that does not exist."""
    proc = spendtrace("alerts", "remove", "9" * 25, "--db", str(db), cwd=db.parent)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "no rule named" in proc.stderr


ACTUALS = {
    "empty-list.json": ("[]", "not a GetCostAndUsage response"),
    "results-int.json": ('{"ResultsByTime": 5}', "malformed GetCostAndUsage response"),
    "period-int.json": ('{"ResultsByTime": [{"TimePeriod": 3}]}', "malformed GetCostAndUsage response"),
    "no-period.json": ('{"ResultsByTime": [{}]}', "missing 'TimePeriod'"),
    "keys-int.json": ('{"ResultsByTime": [{"TimePeriod": {"Start": "2026-01-01"}, "Groups": [{"Keys": 1, '
                      '"Metrics": {"UnblendedCost": {"Amount": "1"}}}]}]}', "malformed"),
    "amount-abc.json": ('{"ResultsByTime": [{"TimePeriod": {"Start": "2026-01-01"}, "Groups": [{"Keys": '
                        '["AWS Lambda"], "Metrics": {"UnblendedCost": {"Amount": "abc"}}}]}]}', "'abc' is not a"),
    "amount-nan.json": ('{"ResultsByTime": [{"TimePeriod": {"Start": "2026-01-01"}, "Groups": [{"Keys": '
                        '["AWS Lambda"], "Metrics": {"UnblendedCost": {"Amount": "NaN"}}}]}]}', "'NaN' is not a"),
    "binary.json": ("\udcff\udcfe", "cannot read Cost Explorer actuals"),
}


@pytest.mark.parametrize("name", sorted(ACTUALS))
def test_bad_actuals_files_are_one_line_and_exit_2(db: Path, name: str) -> None:
    """A saved Cost Explorer response of the wrong shape names the file and the problem; no traceback."""
    content, needle = ACTUALS[name]
    path = db.parent / name
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    proc = spendtrace("reconcile", "--actuals", str(path), "--start", "2026-01-01", "--end", "2026-02-01",
                      "--db", str(db), cwd=db.parent)
    assert_one_line_exit_2(proc, needle)


@pytest.mark.parametrize("content", ["garbage = [\n", '{"x": 1}'])
def test_consumer_with_a_bad_prices_file_exits_2_once(tmp_path: Path, content: str) -> None:
    """``spendtrace-consumer --prices bad --workers 2`` says what is wrong and exits 2 before starting any worker."""
    prices = tmp_path / "prices.toml"
    prices.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "consumers", "--bootstrap", "127.0.0.1:9", "--db", str(tmp_path / "c.db"),
         "--workers", "2", "--prices", str(prices)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert_one_line_exit_2(proc, "prices file")
    assert proc.stderr.count("prices file") == 1  # one parent, no children restarted
    assert not (tmp_path / "c.db").exists()


def test_stored_names_with_escape_and_rlo_are_printed_escaped(db: Path) -> None:
    """A feature, tenant and rule name holding ESC sequences and U+202E print as \\x1b / \\u202e in tables."""
    now = time.time_ns()
    span = Span(span_id="s1", parent_id=None, request_id="r-evil", feature=EVIL, user_id=EVIL, endpoint=EVIL,
                start_ns=now - 1_000_000, duration_ns=1_000_000, usage=(UsageItem(key="dynamodb_read", count=3),),
                path=(EVIL,))
    store(db, [span], PriceBook.default())
    set_alert(feature=EVIL, threshold=1, name=EVIL, db_path=db)
    for argv in (["by-feature"], ["by-user"], ["by-endpoint"], ["requests"], ["tree", "r-evil"],
                 ["alerts", "list"]):
        proc = spendtrace(*argv, "--db", str(db), cwd=db.parent)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert "\x1b" not in proc.stdout and "\u202e" not in proc.stdout and "\x07" not in proc.stdout, argv
        assert "pay\\x1b]0;owned\\x07\\x1b[2Jroll\\u202eexe.txt" in proc.stdout, (argv, proc.stdout)
    proc = spendtrace("by-feature", "--json", "--db", str(db), cwd=db.parent)
    assert EVIL in {r["feature"] for r in json.loads(proc.stdout)}  # JSON keeps the exact name
