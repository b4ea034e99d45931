"""``spendtrace reprice`` in a real process, ``spendtrace.reprice`` in Python, and reprices in reconciliation reports.

The store is written through the real SQLite ingest with the default book (genai-prices), in which
the model ``gpt-unknown-9000`` has no price; the price file the user adds gives it one. Expected
costs are computed here from the file's literal rates.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import spendtrace
from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

NS = 1_000_000_000
DAY = dt.date(2026, 2, 3)
AT = int(dt.datetime(2026, 2, 3, 12, tzinfo=dt.UTC).timestamp()) * NS
#: $1.50 / $6 per million input / output tokens: 1,500 / 6,000 nano-dollars per token
PRICES = '["openai:gpt-unknown-9000"]\nservice = "openai"\nper_1m_input_tokens = "1.50"\nper_1m_output_tokens = "6"\n'
IN, OUT = 1_500, 6_000


def _item(i: int, o: int) -> UsageItem:
    return UsageItem("openai_gpt_unknown_9000", "openai", count=1.0, input_tokens=i, output_tokens=o,
                     provider="openai", model="gpt-unknown-9000")  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Two features' calls to the unknown model on 2026-02-03, plus a priced S3 GET."""
    path = tmp_path / "cost_data.db"
    spans = [
        Span("a", None, "ra", "chat", start_ns=AT, usage=(_item(1000, 200), UsageItem("s3_get", "s3", count=1.0)),
             path=("chat",)),
        Span("b", None, "rb", "search", start_ns=AT + NS, usage=(_item(300, 30),), path=("search",)),
    ]  # fmt: skip
    conn = connect(path)
    try:
        write_batch_sync(conn, prepare_batch(spans, PriceBook.default()))
    finally:
        conn.close()
    return path


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m spendtrace ARGV`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "spendtrace", *argv], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def total(db: Path) -> dict[str, Any]:
    proc = cli("total", "--json", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_the_cli_reprices_after_a_price_is_added_and_undoes_it(db: Path, tmp_path: Path) -> None:
    """Dry run changes nothing; the reprice prices both calls exactly; ``--undo`` gives the totals back."""
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    before = total(db)
    assert before["unpriced_count"] == 2
    args = ("reprice", "--db", str(db), "--start", "2026-02-03", "--end", "2026-02-04", "--prices", str(prices))
    dry = cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run, nothing changed" in dry.stdout and "2 of 2 spans changed" in dry.stdout
    assert total(db) == before

    proc = cli(*args, "--json", "--why", "price for gpt-unknown-9000")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    llm = 1000 * IN + 200 * OUT + 300 * IN + 30 * OUT
    assert result["spans_changed"] == 2 and result["delta_nano"] == llm
    assert (result["unpriced_before"], result["unpriced_after"]) == (2, 0)
    after = total(db)
    assert after["cost_nano"] == before["cost_nano"] + llm and after["unpriced_count"] == 0
    by_feature = json.loads(cli("by-feature", "--json", "--db", str(db)).stdout)
    s3_get = before["cost_nano"]  # the only cost before
    assert {r["feature"]: r["cost_nano"] for r in by_feature} == {
        "chat": s3_get + 1000 * IN + 200 * OUT,
        "search": 300 * IN + 30 * OUT,
    }

    undo = cli("reprice", "--db", str(db), "--undo", str(result["id"]))
    assert undo.returncode == 0, undo.stderr
    assert f"reprice #{result['id']} undone" in undo.stdout
    assert total(db) == before


def test_bad_arguments_are_one_line_and_status_2(db: Path, tmp_path: Path) -> None:
    """A missing range, an inverted range and a bad price file: exit status 2, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text('["x"]\nper_1m_input_tokens = "lots"\n')
    for argv in (
        ("reprice", "--db", str(db)),
        ("reprice", "--db", str(db), "--start", "2026-02-04", "--end", "2026-02-03"),
        ("reprice", "--db", str(db), "--start", "2026-02-03", "--end", "2026-02-04", "--prices", str(bad)),
    ):
        proc = cli(*argv)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("spendtrace: ")


def test_python_reprice_is_listed_in_the_reconciliation_report(db: Path, tmp_path: Path) -> None:
    """``spendtrace.reprice`` (a public name) records the reprice; a later report lists it with its change."""
    from spendtrace.server.pricing import load_overrides

    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    book = PriceBook.default().with_overrides(load_overrides(prices))
    result = spendtrace.reprice("2026-02-03", "2026-02-04", ["search"], db=db, book=book, who="finops")
    assert result.features == ("search",) and result.delta_nano == 300 * IN + 30 * OUT
    bill = {"ResultsByTime": [{"TimePeriod": {"Start": "2026-02-03", "End": "2026-02-04"}, "Estimated": False,
             "Groups": [{"Keys": ["Amazon Simple Storage Service"],
                         "Metrics": {"UnblendedCost": {"Amount": "0.0000004", "Unit": "USD"}}}]}]}  # fmt: skip
    actuals = tmp_path / "bill.json"
    actuals.write_text(json.dumps(bill))
    report = spendtrace.reconcile(db, "2026-02-03", "2026-02-04", actuals_file=actuals,
                                  now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC))  # fmt: skip
    (listed,) = report.restatements
    assert (listed["id"], listed["kind"], listed["features"], listed["who"]) == (result.id, "reprice", ["search"],
                                                                                  "finops")  # fmt: skip
    assert listed["detail"]["services"]["openai"] == {
        "before_nano": 0, "after_nano": 300 * IN + 30 * OUT, "unpriced_before": 1, "unpriced_after": 0,
    }  # fmt: skip
    assert f"#{result.id} 2026-02-03 → 2026-02-04 repriced (search) +$0.0006" in report.summary()
    spendtrace.undo_reprice(result.id, db=db)
    assert spendtrace.reconcile(db, "2026-02-03", "2026-02-04", actuals_file=actuals,
                                now=dt.datetime(2026, 3, 1, tzinfo=dt.UTC)).restatements[0]["undone_ns"]  # fmt: skip
