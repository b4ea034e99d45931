"""Reconciliation against Cost Explorer: a real boto3 ``ce`` client answered by botocore's Stubber.

The report tests run on each store kind (``db_path``: a SQLite file path, or a ``chdb://`` URL for
ClickHouse in this process), with spend written through the ingest interface.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from spendtrace import reconcile
from spendtrace.schema import Span, UsageItem
from spendtrace.server.ingest.prepare import prepare_batch
from spendtrace.server.pricing import PriceBook, PriceEntry
from spendtrace.server.reconcile.costexplorer import map_service
from spendtrace.server.reconcile.report import latest_report
from spendtrace.server.store.base import open_ingest_store, open_store
from spendtrace.server.store.sqlite._db import connect

NS = 1_000_000_000
#: Every test key costs $0.0001 per unit, so a count of N units is N/10000 dollars exactly.
SERVICES = ("bedrock", "dynamodb", "s3", "sqs", "openai")
BOOK = PriceBook(
    [PriceEntry(key=f"t_{s}", service=s, per_request=Decimal("0.0001")) for s in SERVICES], name="recon-test"
)
FEB = [dt.date(2026, 2, 1) + dt.timedelta(days=i) for i in range(28)]
AFTER = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)  # every February day has settled by then

README_SUMMARY = """\
============================================================
  Reconciliation Report  2026-02-01 → 2026-03-01
============================================================
  Modelled total :    $142.3810
  Actual total   :    $149.0200
  Delta          :     +$6.6390
  Calibration Δ  :     1.0466×

  Top features by modelled cost:
    ai_recommendations   modelled $98.2100  actual $103.4400  gap +$5.2300
    search               modelled $31.0400  actual $31.8800   gap  +$0.8400
    batch_processing     modelled $13.1300  actual $13.7000   gap  +$0.5700
============================================================"""


#: a client kept open on the session's one chDB directory (chDB allows one per process): the engine starts once
_engine: list[object] = []


@pytest.fixture(params=["sqlite", "chdb"])
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The store under test: a fresh SQLite file's path, or a fresh database in the session's chDB directory."""
    if request.param == "sqlite":
        return tmp_path / "cost_data.db"
    from spendtrace.server.store.clickhouse._client import connect as ch_connect

    root = tmp_path.parent / "chdb"
    if not _engine:
        _engine.append(ch_connect(f"chdb://{root}?database=keep"))
    return f"chdb://{root}?database=rec_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A fresh SQLite file's path (for what only a path can show: the path and URL spellings of one file)."""
    return tmp_path / "cost_data.db"


def record(db: Path | str, day: dt.date, feature: str, service: str, dollars: str) -> None:
    """Commit one span on ``day`` that used ``dollars`` worth of ``service`` through the real write path."""
    units = float(Decimal(dollars) * 10000)
    sid = uuid.uuid4().hex
    at = int(dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp()) * NS
    span = Span(span_id=sid, parent_id=None, request_id=sid, feature=feature, start_ns=at,
                usage=(UsageItem(key=f"t_{service}", service=service, count=units),), path=(feature,))
    store = open_ingest_store(db)
    try:
        store.apply_batch(prepare_batch([span], BOOK))
    finally:
        store.close()


def readme_model(db: Path | str) -> None:
    """The README example's modelled spend: three features, plus a tenth of a cent of SQS elsewhere."""
    record(db, FEB[0], "ai_recommendations", "bedrock", "50.0000")
    record(db, FEB[20], "ai_recommendations", "bedrock", "48.2100")
    record(db, FEB[3], "search", "dynamodb", "31.0400")
    record(db, FEB[10], "batch_processing", "s3", "13.1300")
    record(db, FEB[11], "nightly_cleanup", "sqs", "0.0010")  # modelled, never billed: factor 0


def page(days: list[dt.date], amounts: dict[str, str], *, token: str | None = None, tag: str | None = None,
         estimated: frozenset[dt.date] = frozenset()) -> dict[str, Any]:
    """A GetCostAndUsage page: each service's amount billed on the first of ``days``, $0 on the others."""
    results = []
    for i, d in enumerate(days):
        groups = []
        for name, total in amounts.items():
            keys = [name] if tag is None else [name, tag]
            amount = total if i == 0 else "0"
            groups.append({"Keys": keys, "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}})
        results.append({
            "TimePeriod": {"Start": d.isoformat(), "End": (d + dt.timedelta(days=1)).isoformat()},
            "Total": {}, "Groups": groups, "Estimated": d in estimated,
        })
    out: dict[str, Any] = {"ResultsByTime": results, "GroupDefinitions": [{"Type": "DIMENSION", "Key": "SERVICE"}]}
    if token:
        out["NextPageToken"] = token
    return out


def request(start: str = "2026-02-01", end: str = "2026-03-01", tag_key: str | None = None,
            token: str | None = None) -> dict[str, Any]:
    """The GetCostAndUsage parameters reconcile must send."""
    group_by = [{"Type": "DIMENSION", "Key": "SERVICE"}]
    if tag_key:
        group_by.append({"Type": "TAG", "Key": tag_key})
    params: dict[str, Any] = {"TimePeriod": {"Start": start, "End": end}, "Granularity": "DAILY",
                              "Metrics": ["UnblendedCost"], "GroupBy": group_by}
    if token:
        params["NextPageToken"] = token
    return params


@pytest.fixture
def ce() -> Iterator[tuple[Any, Stubber]]:
    """A real boto3 Cost Explorer client with a Stubber attached (fails on any unexpected call)."""
    client = boto3.client("ce", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


README_BILL_1 = {"Amazon Bedrock": "50.0000", "Amazon DynamoDB": "15.9400", "Amazon Simple Storage Service": "6.8500"}
README_BILL_2 = {"Amazon Bedrock": "53.4400", "Amazon DynamoDB": "15.9400", "Amazon Simple Storage Service": "6.8500"}


def test_readme_example_layout_with_two_pages(db_path: Path, ce: tuple[Any, Stubber]) -> None:
    """The README's call prints the README's report exactly; both pages are fetched with the token."""
    client, stub = ce
    readme_model(db_path)
    stub.add_response("get_cost_and_usage", page(FEB[:14], README_BILL_1, token="page-2"), request())
    stub.add_response("get_cost_and_usage", page(FEB[14:], README_BILL_2), request(token="page-2"))
    report = reconcile(db_path=db_path, start="2026-02-01", end="2026-03-01", ce_client=client, now=AFTER)
    assert report.summary() == README_SUMMARY
    assert report.global_calibration_factor == pytest.approx(149.02 / 142.381)
    rows = {r.service: r for r in report.service_rows}
    assert rows["bedrock"].factor == pytest.approx(103.44 / 98.21) and rows["sqs"].actual_nano == 0
    assert rows["dynamodb"].residual_nano == 31_880_000_000 - round(31_040_000_000 * report.global_calibration_factor)
    assert report.provisional_days == []
    assert latest_report(db_path) == json.loads(json.dumps(report.to_dict()))


def test_unmodelled_services_stay_out_of_the_factor(db_path: Path, ce: tuple[Any, Stubber]) -> None:
    """Tax, support and data transfer are listed as residuals; Bedrock marketplace lines map to bedrock."""
    client, stub = ce
    record(db_path, FEB[1], "chat", "bedrock", "10.0000")
    record(db_path, FEB[1], "chat", "openai", "4.0000")
    bill = {
        "Amazon Bedrock": "8.0000", "Claude 3 Haiku (Amazon Bedrock Edition)": "4.0000",
        "Tax": "2.8000", "AWS Support (Business)": "100.0000", "AWS Data Transfer": "7.0000",
    }
    stub.add_response("get_cost_and_usage", page(FEB, {k: v for k, v in bill.items()}), request())
    report = reconcile(db_path, "2026-02-01", "2026-03-01", ce_client=client, now=AFTER)
    assert report.global_calibration_factor == pytest.approx(1.2)
    assert (report.modelled_total_nano, report.actual_total_nano) == (10 * NS, 12 * NS)
    assert report.unmodelled_actual_nano == round(109.8 * NS)
    rows = {r.service: r for r in report.service_rows}
    assert rows["bedrock"].ce_names == ("Amazon Bedrock", "Claude 3 Haiku (Amazon Bedrock Edition)")
    for name, amount in (("Tax", "2.8"), ("AWS Support (Business)", "100"), ("AWS Data Transfer", "7")):
        assert not rows[name].covered and rows[name].factor is None
        assert rows[name].residual_nano == rows[name].actual_nano == int(Decimal(amount) * NS)
    assert report.non_aws_rows == [{"service": "openai", "modelled_nano": 4 * NS, "modelled": 4.0}]
    (chat,) = report.feature_rows
    assert (chat.modelled_nano, chat.actual_nano, chat.non_aws_nano) == (10 * NS, 12 * NS, 4 * NS)
    text = report.summary()
    assert "AWS Support (Business)" in text and "openai" in text and "1.2000×" in text


def test_feature_tag_is_compared(db_path: Path, ce: tuple[Any, Stubber]) -> None:
    """With ``tag_key`` the bill is grouped by service and tag; each tag value sits beside its feature."""
    client, stub = ce
    record(db_path, FEB[2], "search", "dynamodb", "3.0000")
    record(db_path, FEB[2], "upload", "dynamodb", "1.0000")
    resp = page(FEB, {"Amazon DynamoDB": "2.8000"}, tag="feature$search")
    untagged = page(FEB, {"Amazon DynamoDB": "2.8000", "Tax": "0.2800"}, tag="feature$")
    for r, u in zip(resp["ResultsByTime"], untagged["ResultsByTime"], strict=True):
        r["Groups"] += u["Groups"]
    stub.add_response("get_cost_and_usage", resp, request(tag_key="feature"))
    report = reconcile(db_path, "2026-02-01", "2026-03-01", tag_key="feature", ce_client=client, now=AFTER)
    assert report.global_calibration_factor == pytest.approx(5.6 / 4)
    feats = {r.feature: r for r in report.feature_rows}
    assert feats["search"].tagged_actual_nano == round(2.8 * NS)
    assert feats["upload"].tagged_actual_nano == 0
    assert feats["search"].actual_nano == round(4.2 * NS)
    assert [(t["value"], t["actual_nano"]) for t in report.tag_rows] == [("search", round(2.8 * NS)),
                                                                         ("", round(2.8 * NS))]
    assert "tag feature=(untagged)" in report.service_table()


def test_provisional_days_and_the_cache(db_path: Path, ce: tuple[Any, Stubber]) -> None:
    """Days that ended under two days ago (or flagged Estimated) are provisional; settled ranges hit the cache."""
    client, stub = ce
    record(db_path, FEB[0], "search", "dynamodb", "1.0000")
    now = dt.datetime(2026, 2, 27, 12, tzinfo=dt.UTC)
    estimated = frozenset({FEB[24]})
    stub.add_response("get_cost_and_usage", page(FEB, {"Amazon DynamoDB": "1.4000"}, estimated=estimated), request())
    report = reconcile(db_path, "2026-02-01", "2026-03-01", ce_client=client, now=now)
    assert report.provisional_days == ["2026-02-25", "2026-02-26", "2026-02-27", "2026-02-28"]
    assert "Provisional (Cost Explorer still settling): 2026-02-25 .. 2026-02-28" in report.summary()
    assert [d["provisional"] for d in report.daily_rows[23:25]] == [False, True]
    # An unsettled range is served from the cache while the copy is young, then fetched again.
    again = reconcile(db_path, "2026-02-01", "2026-03-01", ce_client=client, now=now + dt.timedelta(hours=1))
    assert again.from_cache and again.actual_total_nano == report.actual_total_nano
    stub.add_response("get_cost_and_usage", page(FEB, {"Amazon DynamoDB": "1.2600"}), request())
    later = reconcile(db_path, "2026-02-01", "2026-03-01", ce_client=client, now=AFTER)
    assert not later.from_cache and later.global_calibration_factor == pytest.approx(1.26)
    # A settled range is never fetched twice (the Stubber has no response left: a call would fail).
    cached = reconcile(db_path, "2026-02-01", "2026-03-01", ce_client=client, now=AFTER + dt.timedelta(days=30))
    assert cached.from_cache and cached.global_calibration_factor == pytest.approx(1.26)


def test_offline_actuals_file(db_path: Path, tmp_path: Path) -> None:
    """A saved response (one object or a list of pages) gives the same report as the live API."""
    readme_model(db_path)
    single = tmp_path / "one.json"
    merged = page(FEB[:14], README_BILL_1)
    merged["ResultsByTime"] += page(FEB[14:], README_BILL_2)["ResultsByTime"]
    single.write_text(json.dumps(merged))
    pages = tmp_path / "pages.json"
    pages.write_text(json.dumps([page(FEB[:14], README_BILL_1, token="t"), page(FEB[14:], README_BILL_2)]))
    a = reconcile(db_path, "2026-02-01", "2026-03-01", actuals_file=single, now=AFTER)
    b = reconcile(db_path, "2026-02-01", "2026-03-01", actuals_file=pages, now=AFTER)
    assert a.summary() == b.summary() == README_SUMMARY
    assert a.source.startswith("file:")
    bad = tmp_path / "bad.json"
    bad.write_text('{"nope": 1}')
    from spendtrace.errors import ConfigError

    with pytest.raises(ConfigError):
        reconcile(db_path, "2026-02-01", "2026-03-01", actuals_file=bad, now=AFTER)


def test_a_store_url_works_wherever_a_database_path_does(sqlite_path: Path, ce: tuple[Any, Stubber],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``reconcile``, ``latest_report`` and ``spendtrace reconcile --store`` take ``sqlite:///...`` URLs too."""
    from spendtrace.cli.main import main

    db_path = sqlite_path
    client, stub = ce
    readme_model(db_path)
    url = f"sqlite:///{db_path.resolve()}"
    stub.add_response("get_cost_and_usage", page(FEB[:14], README_BILL_1, token="page-2"), request())
    stub.add_response("get_cost_and_usage", page(FEB[14:], README_BILL_2), request(token="page-2"))
    report = reconcile(db_path=url, start="2026-02-01", end="2026-03-01", ce_client=client, now=AFTER)
    assert report.summary() == README_SUMMARY and not report.from_cache
    assert latest_report(url) == latest_report(db_path) == json.loads(json.dumps(report.to_dict()))
    # The bill was cached in the store the URL names: the plain path finds it (no stubbed response is left).
    cached = reconcile(db_path, "2026-02-01", "2026-03-01", ce_client=client, now=AFTER)
    assert cached.from_cache and cached.summary() == README_SUMMARY and cached.id == report.id + 1
    assert main(["reconcile", "--store", url, "--start", "2026-02-01", "--end", "2026-03-01", "--now",
                 "2026-03-10", "--top", "3", "--no-services"]) == 0
    assert capsys.readouterr().out.strip() == README_SUMMARY
    assert latest_report(url)["id"] == cached.id + 1  # type: ignore[index]


def test_service_name_mapping() -> None:
    """The documented Cost Explorer names map to our service keys; unknown lines map to nothing."""
    assert map_service("Amazon DynamoDB") == "dynamodb"
    assert map_service("Amazon Simple Storage Service") == "s3"
    assert map_service("Amazon Simple Queue Service") == "sqs"
    assert map_service("AWS Lambda") == "lambda"
    assert map_service("Amazon Bedrock") == "bedrock"
    assert map_service("Claude 3 Haiku (Amazon Bedrock Edition)") == "bedrock"
    assert map_service("Tax") is None and map_service("AWS Data Transfer") is None


def _totals(db: Path | str) -> list[Any]:
    """Every money total the store answers (and, on SQLite, every table's own sum)."""
    store = open_store(db)
    try:
        out: list[Any] = [store.total(), store.aggregate_by_feature(), store.aggregate_by_service(),
                          store.get_feature_cost_breakdown()]
    finally:
        store.close()
    if isinstance(db, Path):
        conn = connect(db)
        try:
            tables = ("spans", "requests", "rollup_minute", "rollup_hour", "rollup_day", "loaded_minute",
                      "loaded_hour", "loaded_day")
            out += [int(conn.execute(f"SELECT coalesce(sum(cost_nano), 0) FROM {t}").fetchone()[0]) for t in tables]
        finally:
            conn.close()
    return out


def test_restatement_shows_in_the_report_and_undo_restores_everything(db_path: Path, tmp_path: Path) -> None:
    """The README's restatement moves the model onto the bill; its undo leaves every total exactly as before."""
    readme_model(db_path)
    actuals = tmp_path / "bill.json"
    actuals.write_text(json.dumps([page(FEB[:14], README_BILL_1, token="t"), page(FEB[14:], README_BILL_2)]))
    before = _totals(db_path)
    report = reconcile(db_path, "2026-02-01", "2026-03-01", actuals_file=actuals, now=AFTER)
    storage = open_store(db_path)
    try:
        rid = storage.restate_historical_costs(
            factor=report.global_calibration_factor, start_date="2026-02-01", end_date="2026-03-01",
            who="finops", why="calibrate to the February bill",
        )
        after = reconcile(db_path, "2026-02-01", "2026-03-01", actuals_file=actuals, now=AFTER)
        assert after.global_calibration_factor == pytest.approx(1.0, abs=1e-9)
        assert abs(after.modelled_total_nano - report.actual_total_nano) <= 5
        assert [(r["id"], r["who"], r["undone_ns"]) for r in after.restatements] == [(rid, "finops", None)]
        assert f"#{rid} 2026-02-01 → 2026-03-01 ×1.0466 by finops: calibrate to the February bill" in after.summary()
        assert _totals(db_path) != before
        storage.undo_restatement(rid)
        assert _totals(db_path) == before
        undone = reconcile(db_path, "2026-02-01", "2026-03-01", actuals_file=actuals, now=AFTER)
        assert undone.modelled_total_nano == report.modelled_total_nano
        assert undone.restatements[0]["undone_ns"] is not None and "(undone)" in undone.summary()
        # Per-service factors put each covered service exactly on its bill line (to rounding).
        storage.restate_historical_costs(factors=report.service_factors, start_date="2026-02-01",
                                         end_date="2026-03-01", who="finops", why="per service")
        per = reconcile(db_path, "2026-02-01", "2026-03-01", actuals_file=actuals, now=AFTER)
        for row in per.service_rows:
            assert abs(row.modelled_nano - row.actual_nano) <= 2, row
    finally:
        storage.close()


def test_cli_prints_the_summary_and_writes_json(db_path: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``spendtrace reconcile --actuals FILE --out`` prints the report and writes the same numbers as JSON."""
    from spendtrace.cli.main import main

    readme_model(db_path)
    bill = dict(README_BILL_2, Tax="1.5000")
    actuals = tmp_path / "bill.json"
    actuals.write_text(json.dumps([page(FEB[:14], README_BILL_1, token="t"), page(FEB[14:], bill)]))
    out = tmp_path / "reports" / "reconciliation.json"
    code = main(["--store", str(db_path), "reconcile", "--start", "2026-02-01", "--end", "2026-03-01",
                 "--tag-key", "feature", "--actuals", str(actuals), "--out", str(out), "--now", "2026-03-10"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "\n".join(README_SUMMARY.splitlines()[:8]) in printed
    assert "Tax" in printed and "residual" in printed
    data = json.loads(out.read_text())
    assert data["modelled_total_nano"] == 142_381_000_000 and data["actual_total_nano"] == 149_020_000_000
    assert data["unmodelled_actual_nano"] == 1_500_000_000
    assert data == latest_report(db_path)
    assert main(["--store", str(db_path), "reconcile", "--start", "2026-03-01", "--end", "2026-02-01",
                 "--actuals", str(actuals)]) == 2


def test_the_shipped_sample_bill_reconciles_offline(tmp_path: Path) -> None:
    """``docs/examples/cost-explorer-sample.json`` (README) runs through ``spendtrace reconcile --actuals`` as is:
    each service's actual is the sum of its lines, CloudWatch is on the bill but not in the model, and the
    day Cost Explorer marks ``Estimated`` is provisional."""
    import subprocess
    import sys

    sample = Path(__file__).resolve().parents[2] / "docs" / "examples" / "cost-explorer-sample.json"
    db = tmp_path / "cost_data.db"
    connect(db).close()
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "spendtrace", "reconcile", "--db", str(db), "--start", "2026-11-01",
         "--end", "2026-11-04", "--actuals", str(sample), "--out", str(out), "--now", "2026-12-01"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    actual = {r["service"]: Decimal(r["actual_nano"]) / NS for r in report["service_rows"]}
    assert actual == {
        "dynamodb": Decimal("4.125") + Decimal("3.875") + Decimal("2.0"),
        "s3": Decimal("1.08") + Decimal("1.12"),
        "bedrock": Decimal("12.5") + Decimal("9.75") + Decimal("6.25"),
        "lambda": Decimal("0.735") + Decimal("0.665"),
        "Amazon CloudWatch": Decimal("1.2") + Decimal("1.2") + Decimal("0.6"),
    }
    assert not any(r["covered"] for r in report["service_rows"])  # an empty store models nothing
    assert report["provisional_days"] == ["2026-11-03"]
    assert "Amazon CloudWatch" in proc.stdout
