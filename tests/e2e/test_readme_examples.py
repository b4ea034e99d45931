"""The original README's examples run as written, as a new user would run them, and print what they promise.

Every example runs in a fresh interpreter (``readme_examples.run_script``) in a temporary
directory, with no ``SPENDTRACE_*`` or AWS settings, so spans go to the default local store
``cost_data.db`` there and the readers find them in the same place. Names the README leaves
undefined come from ``readme_app.standins`` (real boto3 clients answered by botocore's Stubber).
Expected amounts are priced here from the static rate table, independently of the store.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from readme_app import standins as si
from readme_examples import (
    ALERT,
    ASYNC_TASK_IMPORT,
    ASYNC_TASK_LINE,
    ASYNC_TRACK,
    BREAKDOWN,
    BY_USER,
    INSTRUMENT_DECORATOR,
    INSTRUMENT_SETUP,
    MANUAL,
    OBSERVE,
    PER_CUSTOMER,
    PRICING,
    REQUEST_COST,
    RESTATE,
    RETENTION,
    SAMPLING,
    SUBTREE,
    TREND,
    VERIFY,
    clean_env,
    price_nano,
    run_cli,
    run_script,
    script,
    standins,
    usd,
)

from spendtrace import SQLiteStorage
from spendtrace.schema import UNATTRIBUTED
from spendtrace.server.alerts.rules import list_alerts

N_RECOMMEND = 5
MANUAL_QUERIES = ("lamp", "desk", "chair")
N_TENANTS = 12  # tenant-00 makes 1 request, tenant-01 makes 2, ... tenant-11 makes 12

# One ``recommend()`` call: a GetItem and an InvokeModel, as DynamoDB and Bedrock report them.
RECOMMEND_DDB = price_nano("dynamodb_read", count=si.DDB_READ_UNITS)
RECOMMEND_BEDROCK = price_nano(si.BEDROCK_PRICE_KEY, input_tokens=si.BEDROCK_INPUT_TOKENS,
                               output_tokens=si.BEDROCK_OUTPUT_TOKENS)  # fmt: skip
# One call of the README's manual ``search_products`` and of the stand-in used behind ``handle_request``.
MANUAL_DDB = price_nano("dynamodb_read", count=3)
MANUAL_BEDROCK = price_nano("bedrock_claude_3_haiku", input_tokens=512, output_tokens=128)
TENANT_SEARCH = price_nano("dynamodb_read", count=si.SEARCH_READS)
OUTSIDE_S3 = price_nano("s3_get", count=10)


@dataclass(frozen=True)
class AppRun:
    """A directory where the README's app ran (two processes), and what it recorded."""

    cwd: Path
    features: dict[str, dict[str, int]]  # feature -> {service: nano, "spans": n}
    tenants: dict[str, tuple[int, int]]  # tenant -> (nano, requests); "" = requests with no tenant


APP_INSTRUMENTED = script(
    INSTRUMENT_SETUP,
    standins("dynamo", "bedrock"),
    INSTRUMENT_DECORATOR,
    MANUAL,
    f"""
    for user in range({N_RECOMMEND}):
        recommend(f"user-{{user}}")
    for query in {MANUAL_QUERIES!r}:
        search_products(query)
    add_api_call("s3_get", count=10)   # outside any @cost_track scope
    """,
)

APP_TENANTS = script(
    "import contextvars",
    standins("search_products"),
    """
    _tenant = contextvars.ContextVar("tenant")

    def current_tenant_id():
        return _tenant.get()   # e.g. set by the auth middleware
    """,
    PER_CUSTOMER,
    f"""
    for i in range({N_TENANTS}):
        _tenant.set(f"tenant-{{i:02d}}")
        for _ in range(i + 1):
            handle_request("lamp")
    """,
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> AppRun:
    """The Instrument and Manual examples in one process, then the per-customer example (callable tenant) in another."""
    cwd = tmp_path_factory.mktemp("readme-app")
    run_script(cwd, APP_INSTRUMENTED)
    run_script(cwd, APP_TENANTS)
    n_tenant_requests = N_TENANTS * (N_TENANTS + 1) // 2
    features = {
        "ai_recommendations": {
            "dynamodb": N_RECOMMEND * RECOMMEND_DDB, "bedrock": N_RECOMMEND * RECOMMEND_BEDROCK, "spans": N_RECOMMEND,
        },
        "search": {
            "dynamodb": len(MANUAL_QUERIES) * MANUAL_DDB + n_tenant_requests * TENANT_SEARCH,
            "bedrock": len(MANUAL_QUERIES) * MANUAL_BEDROCK,
            "spans": len(MANUAL_QUERIES) + n_tenant_requests,
        },
        UNATTRIBUTED: {"s3": OUTSIDE_S3, "spans": 1},
    }  # fmt: skip
    tenants = {f"tenant-{i:02d}": ((i + 1) * TENANT_SEARCH, i + 1) for i in range(N_TENANTS)}
    no_tenant = sum(sum(v for k, v in f.items() if k != "spans") for n, f in features.items() if n != "search")
    tenants[""] = (
        no_tenant + len(MANUAL_QUERIES) * (MANUAL_DDB + MANUAL_BEDROCK),
        N_RECOMMEND + len(MANUAL_QUERIES) + 1,
    )
    return AppRun(cwd, features, tenants)


def _total(f: dict[str, int]) -> int:
    return sum(v for k, v in f.items() if k != "spans")


def _lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------- 1. Instrument, 2. Observe


def test_observe_prints_every_instrumented_feature_with_its_dynamodb_and_bedrock_cost(app: AppRun) -> None:
    """The Observe loop prints one line per feature, most expensive first, with the captured boto3 spend."""
    expected = []
    for feature, f in sorted(app.features.items(), key=lambda kv: -_total(kv[1])):
        expected.append(
            f"{feature:<25}  dynamodb=${usd(f.get('dynamodb', 0)):.4f}  bedrock=${usd(f.get('bedrock', 0)):.4f}"
            f"  total=${usd(_total(f)):.4f}  ({f['spans']} calls)"
        )
    assert _lines(run_script(app.cwd, OBSERVE).stdout) == expected


def test_auto_instrumented_boto3_calls_land_in_aggregate_by_feature_with_exact_service_costs(app: AppRun) -> None:
    """GetItem and InvokeModel made inside @cost_track are stored under the feature, priced per service, to the nano."""
    with SQLiteStorage(app.cwd / "cost_data.db") as storage:
        rows = {r["feature"]: r for r in storage.aggregate_by_feature()}
    rec = rows["ai_recommendations"]
    assert rec["service_costs_nano"] == {
        "bedrock": N_RECOMMEND * RECOMMEND_BEDROCK,
        "dynamodb": N_RECOMMEND * RECOMMEND_DDB,
    }
    assert rec["transaction_count"] == N_RECOMMEND and rec["error_count"] == 0 and rec["unpriced_count"] == 0
    assert rec["service_costs"]["dynamodb"] > 0 and rec["service_costs"]["bedrock"] > 0


def test_clients_created_before_auto_instrument_are_captured_too(tmp_path: Path) -> None:
    """An app that builds its boto3 clients at import, before auto_instrument(), still has their calls priced."""
    code = script(
        standins("dynamo", "bedrock", "make_clients"),
        "make_clients()   # e.g. module-level boto3.client(...) in the app's imports",
        INSTRUMENT_SETUP,
        INSTRUMENT_DECORATOR,
        'recommend("user-1")',
        "from spendtrace import SQLiteStorage",
        'print(SQLiteStorage("cost_data.db").aggregate_by_feature()[0]["cost_nano"])',
    )
    assert int(run_script(tmp_path, code).stdout) == RECOMMEND_DDB + RECOMMEND_BEDROCK


def test_manual_add_api_call_is_priced_in_scope_and_unattributed_outside_any_scope(app: AppRun) -> None:
    """add_api_call in @cost_track is priced under that feature; one outside any scope is kept as __unattributed__."""
    with SQLiteStorage(app.cwd / "cost_data.db") as storage:
        manual = storage.transactions(feature="search", user_id=None, limit=1000)
        outside = storage.aggregate_by_feature(feature=UNATTRIBUTED)
    manual = [t for t in manual if not t["user_id"]]  # the README's own search_products, not the tenants' one
    assert len(manual) == len(MANUAL_QUERIES)
    for t in manual:
        assert {u["key"]: u["cost_nano"] for u in t["usage"]} == {
            "dynamodb_read": MANUAL_DDB, "bedrock_claude_3_haiku": MANUAL_BEDROCK,
        }  # fmt: skip
    assert len(outside) == 1
    assert outside[0]["service_costs_nano"] == {"s3": OUTSIDE_S3} and outside[0]["transaction_count"] == 1


def test_trend_example_prints_thirty_zero_filled_days_ending_today(app: AppRun) -> None:
    """get_cost_trend(feature=..., days=30) prints 30 consecutive UTC days; only today carries the recorded spend."""
    before = dt.datetime.now(dt.UTC).date()
    lines = _lines(run_script(app.cwd, TREND).stdout)
    after = dt.datetime.now(dt.UTC).date()
    assert len(lines) == 30
    dates = [dt.date.fromisoformat(line.split()[0]) for line in lines]
    assert dates[-1] in (before, after)
    assert dates == [dates[-1] - dt.timedelta(days=29 - i) for i in range(30)]
    spend = _total(app.features["ai_recommendations"])
    assert lines[-1] == f"{dates[-1]} ${usd(spend):.4f}" and usd(spend) >= 0.0001
    assert all(line.endswith(" $0.0000") for line in lines[:-1])


# --------------------------------------------------------------------------- per-customer attribution


def test_per_customer_callable_tenant_attributes_every_nested_cost_and_counts_requests(app: AppRun) -> None:
    """With user_id=a callable, each request's nested search is billed to the tenant current at call time."""
    code = script('from spendtrace import SQLiteStorage\nstorage = SQLiteStorage("cost_data.db")', BY_USER)
    lines = _lines(run_script(app.cwd, code).stdout)
    ranked = sorted(app.tenants.items(), key=lambda kv: (-kv[1][0], kv[0]))
    assert lines == [f"{t:<20}  ${usd(nano):.4f}/month  ({n} requests)" for t, (nano, n) in ranked]


def test_per_customer_string_tenant(tmp_path: Path) -> None:
    """With user_id a plain string, every request and its nested spans belong to that tenant and its endpoint."""
    code = script(
        standins("search_products"),
        'current_tenant_id = "tenant-acme"',
        PER_CUSTOMER,
        'for q in ("a", "b", "c"):\n    handle_request(q)',
        'from spendtrace import SQLiteStorage\nstorage = SQLiteStorage("cost_data.db")',
        BY_USER,
    )
    assert _lines(run_script(tmp_path, code).stdout) == [
        f"{'tenant-acme':<20}  ${usd(3 * TENANT_SEARCH):.4f}/month  (3 requests)"
    ]
    with SQLiteStorage(tmp_path / "cost_data.db") as storage:
        [endpoint] = storage.aggregate_by_endpoint()
    assert endpoint["endpoint"] == "/api/search" and endpoint["cost_nano"] == 3 * TENANT_SEARCH


def test_per_customer_counts_each_request_once_when_the_handler_calls_two_features(tmp_path: Path) -> None:
    """A request whose handler runs two decorated features one after the other is still one request of its tenant."""
    code = script(
        "from spendtrace import add_api_call, cost_track",
        f"""
        @cost_track(feature="search")
        def lookup(query):
            add_api_call("dynamodb_read", count={si.SEARCH_READS})
            return [query]

        @cost_track(feature="ranking")
        def rank(items):
            add_api_call("dynamodb_read", count={si.SEARCH_READS})
            return items

        def search_products(query):   # no scope of its own: two features, one after the other
            return rank(lookup(query))
        """,
        'current_tenant_id = "tenant-acme"',
        PER_CUSTOMER,
        'for q in ("a", "b", "c"):\n    handle_request(q)',
        'from spendtrace import SQLiteStorage\nstorage = SQLiteStorage("cost_data.db")',
        BY_USER,
    )
    lines = _lines(run_script(tmp_path, code).stdout)
    assert lines == [f"{'tenant-acme':<20}  ${usd(6 * TENANT_SEARCH):.4f}/month  (3 requests)"]
    by_user = _lines(run_cli(tmp_path, "--db", "cost_data.db", "by-user"))
    assert by_user[2].split()[0] == "tenant-acme" and by_user[2].split()[-1] == "3", by_user


# --------------------------------------------------------------------------- CLI


def test_cli_total_by_feature_and_by_user_read_the_default_store(app: AppRun) -> None:
    """The README's three CLI commands (as `python -m spendtrace`) show the same spend as the query API."""
    grand = sum(_total(f) for f in app.features.values())
    total = run_cli(app.cwd, "--db", "cost_data.db", "total")
    shown = re.search(r"^total\s+\$([\d,]+\.(\d+))$", total, re.M)
    assert shown, total
    # four significant digits (the one money rule): off by at most half of the last digit shown
    assert abs(Decimal(shown[1].replace(",", "")) - Decimal(grand) / 10**9) <= Decimal(5) / 10 ** (len(shown[2]) + 1)
    exact = json.loads(run_cli(app.cwd, "--db", "cost_data.db", "total", "--json"))
    assert exact["cost_nano"] == grand
    spans = sum(f["spans"] for f in app.features.values())
    assert re.search(rf"^spans\s+{spans}$", total, re.M), total

    by_feature = _lines(run_cli(app.cwd, "--db", "cost_data.db", "by-feature"))[2:]  # after header and rule
    ranked = sorted(app.features, key=lambda name: -_total(app.features[name]))
    assert [line.split()[0] for line in by_feature] == ranked

    by_user = _lines(run_cli(app.cwd, "--db", "cost_data.db", "by-user", "--limit", "10"))[2:]
    top = sorted(app.tenants.items(), key=lambda kv: -kv[1][0])[:10]
    assert len(by_user) == 10
    assert [line.split()[0] for line in by_user] == [t or "(none)" for t, _ in top]
    assert by_user[0].split()[-1] == str(top[0][1][1])  # the requests column of tenant-11


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # a loopback URL built here
        return int(resp.status), resp.read()


def test_api_server_serves_every_readme_endpoint_from_the_default_store(app: AppRun) -> None:
    """`spendtrace api` (the README's API server) answers each listed endpoint with the spend the Python API reads."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "spendtrace", "api", "--db", "cost_data.db", "--port", str(port)],
        cwd=app.cwd, env=clean_env(app.cwd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert _get(base + "/health")[0] == 200
                break
            except urllib.error.HTTPError:
                raise
            except OSError:  # not listening yet
                assert server.poll() is None and time.monotonic() < deadline, "the API server did not come up"
                time.sleep(0.1)
        for path in ("/metrics", "/aggregate/user", "/api/services", "/v2/feature-breakdown", "/v2/request",
                     "/v2/endpoint", "/total", "/transactions"):  # fmt: skip
            status, body = _get(base + path)
            assert status == 200 and body, path
        features = {r["feature"]: r["cost_nano"] for r in json.loads(_get(base + "/aggregate/feature")[1])}
        assert features == {name: _total(f) for name, f in app.features.items()}
        users = {r["user_id"]: r["cost_nano"] for r in json.loads(_get(base + "/aggregate/user")[1])}
        assert users == {t: nano for t, (nano, _) in app.tenants.items()}
        metrics = _get(base + "/metrics")[1].decode()
        assert re.search(r'^\S*feature\S*\{feature="ai_recommendations"\} \S+$', metrics, re.M), metrics
    finally:
        server.terminate()
        server.wait(30)


# --------------------------------------------------------------------- request tree: breakdown, per request, drill-down

PD = price_nano("dynamodb_read", count=24000)  # product_details: $0.003
SEARCH = price_nano("dynamodb_read", count=40000)  # search: $0.005
CACHE = price_nano("s3_get", count=250)  # cache: $0.0001
API = price_nano("aws_lambda_request", count=5)  # api: $0.000001
RECOMMEND = price_nano("bedrock_claude_3_haiku", input_tokens=1200, output_tokens=400)
BATCH = price_nano("sqs_send", count=1)

APP_TREE = script(
    "from spendtrace import add_api_call, cost_track, track_request",
    """
    @cost_track(feature="product_details")
    def product_details(item):
        add_api_call("dynamodb_read", count=24000)

    @cost_track(feature="search")
    def search(query):
        add_api_call("dynamodb_read", count=40000)
        for item in range(3):
            product_details(item)

    @cost_track(feature="cache")
    def cache():
        add_api_call("s3_get", count=250)

    @cost_track(feature="api")
    def api():
        add_api_call("aws_lambda_request", count=5)
        search("lamp")
        cache()

    @cost_track(feature="recommend")
    def recommend():
        add_api_call("bedrock_claude_3_haiku", input_tokens=1200, output_tokens=400)
        product_details(1)
        product_details(2)

    @cost_track(feature="batch")
    def batch():
        add_api_call("sqs_send", count=1)
        cache()

    with track_request(endpoint="/api/search", request_id="req-abc-123"):   # e.g. the X-Request-Id header
        api()
    with track_request(endpoint="/api/recommend"):
        recommend()
    with track_request(endpoint="/api/batch"):
        batch()
    """,
)


@pytest.fixture(scope="module")
def tree_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where three requests ran: /api/search (id req-abc-123) api → search → 3× product_details, cache."""
    cwd = tmp_path_factory.mktemp("readme-tree")
    run_script(cwd, APP_TREE)
    return cwd


def test_feature_breakdown_direct_is_below_fully_loaded_for_parents_and_equal_for_leaves(tree_app: Path) -> None:
    """The breakdown prints direct and fully-loaded cost per feature; a parent's fully-loaded cost adds its callees'."""
    expected = {  # feature: (direct, fully loaded)
        "api": (API, API + SEARCH + 3 * PD + CACHE),
        "search": (SEARCH, SEARCH + 3 * PD),
        "product_details": (5 * PD, 5 * PD),
        "cache": (2 * CACHE, 2 * CACHE),
        "recommend": (RECOMMEND, RECOMMEND + 2 * PD),
        "batch": (BATCH, BATCH + CACHE),
    }
    lines = _lines(run_script(tree_app, BREAKDOWN).stdout)
    assert sorted(lines) == sorted(
        f"{f:<25}  direct=${usd(d):.6f}  fully_loaded=${usd(fl):.6f}" for f, (d, fl) in expected.items()
    )
    for feature in ("api", "search", "recommend", "batch"):
        assert expected[feature][0] < expected[feature][1]


def test_request_cost_prints_each_endpoint_call_with_its_span_count(tree_app: Path) -> None:
    """get_request_cost(limit=20) prints one line per request, newest first, with the end-to-end cost and span count."""
    lines = _lines(run_script(tree_app, REQUEST_COST).stdout)
    assert lines == [
        f"{'/api/batch':<30}  ${usd(BATCH + CACHE):.6f}/call  (2 spans)",
        f"{'/api/recommend':<30}  ${usd(RECOMMEND + 2 * PD):.6f}/call  (3 spans)",
        f"{'/api/search':<30}  ${usd(API + SEARCH + 3 * PD + CACHE):.6f}/call  (6 spans)",
    ]


def test_request_subtree_drills_into_the_request_id_given_to_track_request(tree_app: Path) -> None:
    """get_request_subtree("req-abc-123") prints the request's tree depth-first with each node's subtree cost."""
    lines = run_script(tree_app, SUBTREE).stdout.splitlines()
    assert lines == [
        f"{'api':<20}  subtree=${usd(API + SEARCH + 3 * PD + CACHE):.6f}",
        f"  {'search':<20}  subtree=${usd(SEARCH + 3 * PD):.6f}",
        *[f"    {'product_details':<20}  subtree=${usd(PD):.6f}"] * 3,
        f"  {'cache':<20}  subtree=${usd(CACHE):.6f}",
    ]


# --------------------------------------------------------------------------- 3. Verify (reconciliation) and restatement

FEB_DAY = "2026-02-10"
N_FEB = 20
CALIBRATION = Decimal("1.25")


def _cost_explorer_response(amounts: dict[str, int], tag: str | None = None) -> dict[str, object]:
    """A GetCostAndUsage response (daily, by SERVICE, and by the tag ``tag`` if given) with ``amounts`` on FEB_DAY."""
    keys = [] if tag is None else [tag]
    results = []
    day = dt.date(2026, 2, 1)
    while day < dt.date(2026, 3, 1):
        nxt = day + dt.timedelta(days=1)
        groups = [
            {"Keys": [name, *keys], "Metrics": {"UnblendedCost": {"Amount": str(Decimal(nano) / 10**9), "Unit": "USD"}}}
            for name, nano in amounts.items()
        ] if day.isoformat() == FEB_DAY else []  # fmt: skip
        results.append({"TimePeriod": {"Start": day.isoformat(), "End": nxt.isoformat()}, "Total": {},
                        "Groups": groups, "Estimated": False})  # fmt: skip
        day = nxt
    definitions = [{"Type": "DIMENSION", "Key": "SERVICE"}] + (
        [] if tag is None else [{"Type": "TAG", "Key": "feature"}]
    )
    return {"GroupDefinitions": definitions, "ResultsByTime": results, "DimensionValueAttributes": []}


def _february_app(cwd: Path) -> dict[str, int]:
    """Run the Instrument example as an app that served N_FEB recommendations on FEB_DAY; returns its modelled spend."""
    app = script(
        INSTRUMENT_SETUP,
        standins("dynamo", "bedrock", "run_as_of"),
        f"run_as_of({FEB_DAY!r})   # the app ran in February",
        INSTRUMENT_DECORATOR,
        f"for i in range({N_FEB}):\n    recommend(f'user-{{i}}')",
    )
    run_script(cwd, app)
    return {"dynamodb": N_FEB * RECOMMEND_DDB, "bedrock": N_FEB * RECOMMEND_BEDROCK}


def test_verify_reconciles_with_a_saved_cost_explorer_response_and_restates_history(tmp_path: Path) -> None:
    """The Verify call (plus actuals_file=) reports modelled vs billed spend; restating by its factor scales it."""
    modelled = _february_app(tmp_path)
    billed = {"Amazon DynamoDB": int(modelled["dynamodb"] * CALIBRATION),
              "Amazon Bedrock": int(modelled["bedrock"] * CALIBRATION), "Tax": 500_000_000}  # fmt: skip
    (tmp_path / "ce-feb-2026.json").write_text(json.dumps(_cost_explorer_response(billed)))
    verify = VERIFY.replace(
        '    end="2026-03-01",\n',
        '    end="2026-03-01",\n    actuals_file="ce-feb-2026.json",   # offline: a saved response\n',
    )
    assert verify != VERIFY
    code = script(
        verify,
        'from spendtrace import SQLiteStorage\nstorage = SQLiteStorage("cost_data.db")',
        "import json\nprint(json.dumps(storage.total()))",
        RESTATE,
        "print(json.dumps(storage.total()))",
    )
    out = run_script(tmp_path, code).stdout
    summary, before, after = out.rsplit("\n", 3)[0], json.loads(out.splitlines()[-2]), json.loads(out.splitlines()[-1])
    m_total, b_total = sum(modelled.values()), billed["Amazon DynamoDB"] + billed["Amazon Bedrock"]
    assert "  Reconciliation Report  2026-02-01 → 2026-03-01" in summary.splitlines()
    assert float(re.search(r"Modelled total :\s+\$([\d.]+)", summary)[1]) == round(usd(m_total), 4)  # type: ignore[index]
    assert float(re.search(r"Actual total   :\s+\$([\d.]+)", summary)[1]) == round(usd(b_total), 4)  # type: ignore[index]
    assert float(re.search(r"Calibration Δ  :\s+([\d.]+)×", summary)[1]) == float(CALIBRATION)  # type: ignore[index]
    feature = re.search(r"ai_recommendations\s+modelled \$([\d.]+)\s+actual \$([\d.]+)\s+gap\s+\+\$([\d.]+)", summary)
    assert feature is not None, summary
    assert [float(x) for x in feature.groups()] == [round(usd(v), 4) for v in (m_total, b_total, b_total - m_total)]
    assert re.search(r"^\s+Tax\s+\$0\.5000$", summary, re.M), summary  # on the bill, outside the model and the factor
    assert before["cost_nano"] == m_total
    assert after["cost_nano"] == int(m_total * CALIBRATION) and after["transaction_count"] == N_FEB


def test_reconcile_cli_with_the_readme_flags_writes_the_json_report(tmp_path: Path) -> None:
    """`spendtrace reconcile` with the README's flags (and --actuals) compares by feature tag and writes --out."""
    modelled = _february_app(tmp_path)
    billed = {"Amazon DynamoDB": int(modelled["dynamodb"] * CALIBRATION),
              "Amazon Bedrock": int(modelled["bedrock"] * CALIBRATION)}  # fmt: skip
    response = _cost_explorer_response(billed, tag="feature$ai_recommendations")
    (tmp_path / "ce-feb-2026.json").write_text(json.dumps(response))
    args = ["reconcile", "--db", "cost_data.db", "--start", "2026-02-01", "--end", "2026-03-01", "--tag-key", "feature",
            "--out", "reports/reconciliation.json", "--actuals", "ce-feb-2026.json"]  # fmt: skip
    out = run_cli(tmp_path, *args, stderr="report written to reports/reconciliation.json\n")
    assert "  Reconciliation Report  2026-02-01 → 2026-03-01" in out.splitlines()
    report = json.loads((tmp_path / "reports" / "reconciliation.json").read_text())
    assert (report["start"], report["end"]) == ("2026-02-01", "2026-03-01")
    assert report["global_calibration_factor"] == float(CALIBRATION)
    assert json.dumps(report).count("ai_recommendations") >= 1
    assert re.search(r"tag feature=ai_recommendations: on the bill \$0\.0200", out), out


def test_verify_as_written_without_aws_credentials_fails_with_a_clear_message(tmp_path: Path) -> None:
    """The README's exact reconcile() call without AWS credentials ends in one readable error naming what is missing."""
    proc = run_script(tmp_path, VERIFY, ok=False)
    assert proc.returncode == 1 and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("spendtrace.errors.ConfigError: ") and "credentials" in last and "actuals_file" in last, last
    assert "botocore" not in proc.stderr, proc.stderr  # no library internals to wade through
    assert "During handling of the above exception" not in proc.stderr


# ---------------------------------------------------------------------- alerts, async, sampling, retention, pricing


def test_set_alert_as_written_stores_a_rule_the_cli_lists(tmp_path: Path) -> None:
    """set_alert(...) as written stores a 24-hour $10 rule on ai_recommendations, its webhook and a 1-hour cooldown."""
    run_script(tmp_path, ALERT)
    [rule] = list_alerts(tmp_path / "cost_data.db")
    assert (rule.kind, rule.scope, rule.scope_value) == ("threshold", "feature", "ai_recommendations")
    assert rule.threshold == 10.0 and rule.window_minutes == 24 * 60 and rule.cooldown_minutes == 60
    assert rule.webhook == "https://hooks.slack.com/services/..." and rule.enabled
    listed = run_cli(tmp_path, "--db", "cost_data.db", "alerts", "list")
    assert "ai_recommendations" in listed and "hooks.slack.com" in listed


def test_async_track_and_create_task_with_context_attribute_awaited_work(tmp_path: Path) -> None:
    """`async with track` prices awaited work under its feature; a task from create_task_with_context joins it."""
    code = script(
        "import asyncio",
        standins("embed_documents", "child_coroutine"),
        ASYNC_TRACK,
        ASYNC_TASK_IMPORT,
        f"""
        async def main():
            await process()
            async with track(feature="ingest"):
                {ASYNC_TASK_LINE}
                await task

        asyncio.run(main())
        """,
    )
    run_script(tmp_path, code)
    with SQLiteStorage(tmp_path / "cost_data.db") as storage:
        rows = {r["feature"]: r for r in storage.aggregate_by_feature()}
        [embed] = storage.transactions(feature="embeddings")
    assert set(rows) == {"embeddings", "ingest"}  # nothing unattributed
    assert rows["embeddings"]["service_costs_nano"] == {
        "bedrock": price_nano(si.EMBED_KEY, input_tokens=si.EMBED_TOKENS)
    }
    assert embed["operation"] == "batch"
    assert rows["ingest"]["service_costs_nano"] == {"dynamodb": price_nano("dynamodb_write", count=si.CHILD_WRITES)}


def test_sampling_and_circuit_breaker_as_written(tmp_path: Path) -> None:
    """The global 10% and per-decorator 5% rates keep about that share of spans, weighted up to estimate the rest."""
    n = 4000
    code = script(
        "from spendtrace import add_api_call, cost_track, get_stats",
        SAMPLING,
        f"""
        @cost_track(feature="checkout")
        def checkout():
            add_api_call("dynamodb_read", count=8)

        for _ in range({n}):
            search()
            checkout()
        print(get_stats().breaker_state)
        """,
    )
    assert run_script(tmp_path, code).stdout == "closed\n"
    with SQLiteStorage(tmp_path / "cost_data.db") as storage:
        rows = {r["feature"]: r for r in storage.aggregate_by_feature()}
    kept_search, kept_checkout = rows["search"]["span_count"], rows["checkout"]["span_count"]
    # Binomial(4000, p) kept spans; the bounds are more than six standard deviations wide.
    assert 110 <= kept_search <= 290, kept_search
    assert 280 <= kept_checkout <= 520, kept_checkout
    assert rows["search"]["calls"] == pytest.approx(20 * kept_search)
    assert rows["checkout"]["calls"] == pytest.approx(10 * kept_checkout)
    assert rows["checkout"]["cost_nano"] == 10 * kept_checkout * price_nano("dynamodb_read", count=8)
    assert rows["checkout"]["stderr"] is not None and rows["checkout"]["stderr"] > 0


def test_storage_retention_as_written_is_stored(tmp_path: Path) -> None:
    """set_retention(...) as written stores the three retention periods in the database for the workers."""
    run_script(tmp_path, RETENTION)
    conn = sqlite3.connect(tmp_path / "cost_data.db")
    try:
        stored = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'retention.%'").fetchall())
    finally:
        conn.close()
    assert sorted(int(v) for k, v in stored.items() if "minute" not in k) == [30, 365, 1825]
    assert len(stored) >= 3


def test_pricing_override_prices_locally_recorded_reads_at_the_negotiated_rate(tmp_path: Path) -> None:
    """After the override example, 1,000 DynamoDB reads are stored at $0.000000275 each, not the default rate."""
    code = script(
        PRICING,
        """
        from spendtrace import add_api_call, cost_track

        @cost_track(feature="search")
        def lookup():
            add_api_call("dynamodb_read", count=1000)

        lookup()
        """,
    )
    run_script(tmp_path, code)
    with SQLiteStorage(tmp_path / "cost_data.db") as storage:
        [row] = storage.aggregate_by_feature()
        [tx] = storage.transactions()
    assert row["cost_nano"] == 275_000 != price_nano("dynamodb_read", count=1000)
    assert tx["usage"][0]["price_version"].endswith(":user")
