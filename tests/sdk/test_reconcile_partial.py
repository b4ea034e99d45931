"""Reconciling with a bill that does not cover the range (issue #15 item 7).

A saved Cost Explorer response for part of the range used to be compared as if the other days had
been billed $0 (Actual $0, absurd factors, which restatement then applied). Days without actuals
are now listed as missing, compared with nothing, and a factor from such a report is refused by
restatement unless forced.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from spendtrace import SQLiteStorage, reconcile
from spendtrace.errors import ConfigError
from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

NS = 10**9
BOOK = PriceBook([PriceEntry(key="t_ddb", service="dynamodb", per_request=Decimal("0.0001"))], name="t")
AFTER = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)


def day(i: int) -> dt.date:
    return dt.date(2026, 2, 1) + dt.timedelta(days=i)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """$1.00 of DynamoDB modelled on each of the 28 days of February."""
    path = tmp_path / "cost_data.db"
    spans = []
    for i in range(28):
        at = int(dt.datetime.combine(day(i), dt.time(12), tzinfo=dt.UTC).timestamp()) * NS
        spans.append(Span(f"s{i}", None, f"r{i}", "api", start_ns=at,
                          usage=(UsageItem("t_ddb", "dynamodb", count=10_000.0),), path=("api",)))  # fmt: skip
    conn = connect(path)
    try:
        write_batch_sync(conn, prepare_batch(spans, BOOK))
    finally:
        conn.close()
    return path


def bill(days: list[dt.date], amount: str) -> dict[str, Any]:
    """A GetCostAndUsage response billing ``amount`` of DynamoDB on each of ``days``."""
    return {"ResultsByTime": [
        {"TimePeriod": {"Start": d.isoformat(), "End": (d + dt.timedelta(days=1)).isoformat()}, "Estimated": False,
         "Groups": [{"Keys": ["Amazon DynamoDB"], "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}]}
        for d in days
    ]}  # fmt: skip


def test_days_without_actuals_are_missing_not_zero(db: Path, tmp_path: Path) -> None:
    """A bill for the first 3 days: compared over those 3 (factor 1.1), the 25 others listed as missing."""
    actuals = tmp_path / "ce.json"
    actuals.write_text(json.dumps(bill([day(i) for i in range(3)], "1.10")))
    report = reconcile(db, "2026-02-01", "2026-03-01", actuals_file=actuals, now=AFTER)
    assert report.partial and report.missing_days == [day(i).isoformat() for i in range(3, 28)]
    assert report.modelled_total_nano == 3 * NS and report.actual_total_nano == 3_300_000_000
    assert report.global_calibration_factor == pytest.approx(1.1)
    assert report.missing_modelled_nano == 25 * NS
    assert [r["actual_nano"] for r in report.daily_rows[2:4]] == [1_100_000_000, None]
    text = report.summary()
    assert "PARTIAL: no actuals for 25 of 28 days (2026-02-04 .. 2026-02-28)" in text
    saved = report.to_dict()
    assert saved["partial"] and saved["global_calibration_factor"] is None
    assert saved["covered_days_factor"] == pytest.approx(1.1)

    storage = SQLiteStorage(db)
    with pytest.raises(ConfigError, match="partial reconciliation: 25 day"):
        storage.restate_historical_costs(factor=report.global_calibration_factor, start_date="2026-02-01",
                                         end_date="2026-03-01")  # fmt: skip
    with pytest.raises(ConfigError, match="partial reconciliation"):
        storage.restate_historical_costs(factors=report.service_factors, start_date="2026-02-01",
                                         end_date="2026-03-01")  # fmt: skip
    assert storage.total()["cost_nano"] == 28 * NS
    storage.restate_historical_costs(factor=report.global_calibration_factor, start_date="2026-02-01",
                                     end_date="2026-02-04", force=True)  # fmt: skip
    assert storage.total()["cost_nano"] == 28 * NS + 300_000_000


def test_a_bill_for_another_range_compares_nothing(db: Path, tmp_path: Path) -> None:
    """A January bill reconciled against February: every day missing, no factor, January left out."""
    actuals = tmp_path / "january.json"
    actuals.write_text(json.dumps(bill([dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(31)], "900")))
    report = reconcile(db, "2026-02-01", "2026-03-01", actuals_file=actuals, now=AFTER)
    assert len(report.missing_days) == 28 and report.actual_total_nano == 0 and report.modelled_total_nano == 0
    assert report.global_calibration_factor == 1.0 and report.global_calibration_factor.partial
    assert "Calibration Δ  :        n/a (no actuals in range)" in report.summary()
    with pytest.raises(ConfigError, match="partial reconciliation"):
        SQLiteStorage(db).restate_historical_costs(factor=report.global_calibration_factor,
                                                   start_date="2026-02-01", end_date="2026-03-01")  # fmt: skip


def test_a_full_bill_is_not_partial(db: Path, tmp_path: Path) -> None:
    """Every day billed: nothing missing, the factor restates without force."""
    actuals = tmp_path / "ce.json"
    actuals.write_text(json.dumps(bill([day(i) for i in range(28)], "1.00")))
    report = reconcile(db, "2026-02-01", "2026-03-01", actuals_file=actuals, now=AFTER)
    assert not report.partial and report.global_calibration_factor == pytest.approx(1.0)
    assert report.to_dict()["global_calibration_factor"] == pytest.approx(1.0)
    SQLiteStorage(db).restate_historical_costs(factor=report.global_calibration_factor, start_date="2026-02-01",
                                               end_date="2026-03-01")  # fmt: skip
