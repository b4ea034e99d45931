"""The original README's Python examples, copied verbatim, and a runner that executes them as a new user would.

Each block below is the README's code exactly as printed there (only the module name
``spendtrace`` replaces ``cost_attribution``, as the README itself already does). A test
builds a script from blocks plus the stand-ins of ``readme_app.standins`` and runs it with
``run_script``: a fresh interpreter, the test's temporary directory as the working directory
and no ``SPENDTRACE_*`` / ``AWS_*`` variables, so the default store ``cost_data.db`` in that
directory is used and no AWS credentials exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

INSTRUMENT_SETUP = """
import spendtrace as cost_attribution
cost_attribution.auto_instrument()   # patches boto3, openai, anthropic SDKs
"""

INSTRUMENT_DECORATOR = """
from spendtrace import cost_track

@cost_track(feature="ai_recommendations")
def recommend(user_id: str):
    items = dynamo.get_item(...)          # captured automatically
    response = bedrock.invoke_model(...)  # captured automatically
    return response
"""

OBSERVE = """
from spendtrace import SQLiteStorage

storage = SQLiteStorage("cost_data.db")
for row in storage.aggregate_by_feature():
    svc = row["service_costs"]
    print(
        f"{row['feature']:<25}"
        f"  dynamodb=${svc.get('dynamodb', 0):.4f}"
        f"  bedrock=${svc.get('bedrock', 0):.4f}"
        f"  total=${row['total_cost']:.4f}"
        f"  ({row['transaction_count']} calls)"
    )
"""

VERIFY = """
from spendtrace import reconcile

report = reconcile(
    db_path="cost_data.db",
    start="2026-02-01",
    end="2026-03-01",
)
print(report.summary())
"""

RESTATE = """
storage.restate_historical_costs(
    factor=report.global_calibration_factor,
    start_date="2026-02-01",
    end_date="2026-03-01",
)
"""

PER_CUSTOMER = """
from spendtrace import track_request

@track_request(endpoint="/api/search", user_id=current_tenant_id)
def handle_request(query):
    return search_products(query)   # all nested costs attributed to this tenant
"""

BY_USER = """
for row in storage.aggregate_by_user():
    print(f"{row['user_id']:<20}  ${row['total_cost']:.4f}/month  ({row['transaction_count']} requests)")
"""

BREAKDOWN = """
from spendtrace import get_feature_cost_breakdown

for row in get_feature_cost_breakdown(db_path="cost_data.db"):
    print(
        f"{row['feature']:<25}"
        f"  direct=${row['direct_cost']:.6f}"
        f"  fully_loaded=${row['fully_loaded_cost']:.6f}"
    )
"""

REQUEST_COST = """
from spendtrace import get_request_cost

for req in get_request_cost(db_path="cost_data.db", limit=20):
    print(f"{req['endpoint']:<30}  ${req['total_cost']:.6f}/call  ({req['tx_count']} spans)")
"""

SUBTREE = """
from spendtrace import get_request_subtree

tree = get_request_subtree("req-abc-123", db_path="cost_data.db")
for node in tree:
    indent = "  " * node["depth"]
    print(f"{indent}{node['feature']:<20}  subtree=${node['subtree_cost']:.6f}")
"""

ALERT = """
from spendtrace import set_alert

set_alert(
    feature="ai_recommendations",
    threshold=10.00,          # USD
    window_hours=24,
    webhook="https://hooks.slack.com/services/...",   # Slack, PagerDuty, or any HTTP POST
)
"""

TREND = """
from spendtrace import get_cost_trend

for day in get_cost_trend(feature="ai_recommendations", days=30):
    print(day["date"], f"${day['total_cost']:.4f}")
"""

MANUAL = """
from spendtrace import cost_track, add_api_call

@cost_track(feature="search")
def search_products(query):
    add_api_call("dynamodb_read", count=3)
    add_api_call("bedrock_claude_3_haiku", input_tokens=512, output_tokens=128)
"""

ASYNC_TRACK = """
from spendtrace import track

async def process():
    async with track(feature="embeddings", operation="batch"):
        await embed_documents(...)
"""

ASYNC_TASK_IMPORT = """
from spendtrace import create_task_with_context
"""

#: The README's one-liner; it needs a running event loop, so tests put it inside a coroutine.
ASYNC_TASK_LINE = "task = create_task_with_context(child_coroutine())"

SAMPLING = """
from spendtrace import set_global_sample_rate, set_circuit_breaker, CircuitBreaker

# Sample 10% of calls in high-traffic paths
set_global_sample_rate(0.10)

# Per-decorator override
@cost_track(feature="search", sample_rate=0.05)
def search(): ...

# Protect your app if the storage layer struggles
set_circuit_breaker(CircuitBreaker(error_threshold=10, recovery_timeout_sec=300))
"""

RETENTION = """
from spendtrace import SQLiteStorage

storage = SQLiteStorage("cost_data.db")
storage.set_retention(raw_data_days=30, hourly_rollups_days=365, daily_rollups_days=1825)
"""

PRICING = """
from spendtrace import AWSCostModel, get_tracker

model = AWSCostModel()
model.api_costs["dynamodb_read"] = 0.000000275   # your negotiated rate
get_tracker().cost_model = model
"""


_HERE = Path(__file__).resolve().parent


def standins(*names: str) -> str:
    """The import line that brings in stand-ins (``dynamo``, ``bedrock`` ...) for names the README leaves undefined."""
    return f"from readme_app.standins import {', '.join(names)}"


def script(*blocks: str) -> str:
    """One program from README blocks and glue code, each dedented, in order."""
    return "\n".join(textwrap.dedent(b).strip("\n") for b in blocks) + "\n"


def clean_env(cwd: Path) -> dict[str, str]:
    """The environment of a new user: no spendtrace settings, no AWS credentials or config, no metadata service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPENDTRACE_", "AWS_", "PYTHON"))}
    env.update(
        PYTHONPATH=str(_HERE),  # only for ``readme_app.standins``; spendtrace itself is installed
        AWS_EC2_METADATA_DISABLED="true",  # never ask 169.254.169.254 for credentials
        AWS_CONFIG_FILE=str(cwd / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(cwd / "no-aws-credentials"),
    )
    return env


def run_script(cwd: Path, code: str, *, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter in ``cwd``; with ``ok``, require exit 0 and nothing on stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=clean_env(cwd), capture_output=True, text=True, timeout=timeout
    )
    if ok:
        assert proc.returncode == 0, f"exit {proc.returncode}\n--- script\n{code}\n--- stderr\n{proc.stderr}"
        assert proc.stderr == "", f"unexpected output on stderr:\n{proc.stderr}"
    return proc


def run_cli(cwd: Path, *args: str, stderr: str = "") -> str:
    """``python -m spendtrace ARGS`` in ``cwd`` as a new user; stdout (exit 0 and exactly ``stderr`` required)."""
    proc = subprocess.run(
        [sys.executable, "-m", "spendtrace", *args], cwd=cwd, env=clean_env(cwd), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"spendtrace {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}"
    assert proc.stderr == stderr, proc.stderr
    return proc.stdout


_M = Decimal(1_000_000)

#: (USD per request, per 1M input tokens, per 1M output tokens) of every key the README examples use,
#: from the providers' pages (us-east-1, on-demand). The scripts run now, after DynamoDB's 2024-11-01 cut.
_RATES: dict[str, tuple[Decimal, Decimal, Decimal]] = {
    # https://aws.amazon.com/dynamodb/pricing/on-demand/ : $0.125 / $0.625 per million read / write request units
    "dynamodb_read": (Decimal("0.125") / _M, Decimal(0), Decimal(0)),
    "dynamodb_write": (Decimal("0.625") / _M, Decimal(0), Decimal(0)),
    # https://aws.amazon.com/s3/pricing/ : S3 Standard, $0.0004 per 1,000 GET requests
    "s3_get": (Decimal("0.0004") / 1000, Decimal(0), Decimal(0)),
    # https://aws.amazon.com/lambda/pricing/ : $0.20 per 1M requests
    "aws_lambda_request": (Decimal("0.20") / _M, Decimal(0), Decimal(0)),
    # https://aws.amazon.com/sqs/pricing/ : standard queues, $0.40 per million requests (64 KB chunks)
    "sqs_send": (Decimal("0.40") / _M, Decimal(0), Decimal(0)),
    # https://aws.amazon.com/bedrock/pricing/ : Claude 3 Haiku $0.25 / $1.25 per 1M input / output tokens;
    # Titan Text Embeddings V2 $0.02 per 1M input tokens
    "bedrock_claude_3_haiku": (Decimal(0), Decimal("0.25"), Decimal("1.25")),
    "bedrock_titan_embed_text_v2": (Decimal(0), Decimal("0.02"), Decimal(0)),
}


def price_nano(key: str, count: float = 0, input_tokens: int = 0, output_tokens: int = 0) -> int:
    """Nano-dollars for one usage item at the rates written above (no call into spendtrace's pricing)."""
    per_request, per_1m_input, per_1m_output = _RATES[key]
    usd = per_request * Decimal(str(count)) + (per_1m_input * input_tokens + per_1m_output * output_tokens) / _M
    nano = usd * 1_000_000_000
    assert nano == nano.to_integral_value(), f"{key}: pick amounts with a whole nano-dollar cost, got {nano}"
    return int(nano)


def usd(nano: int) -> float:
    """Nano-dollars as the float dollars the query API returns."""
    return nano / 1_000_000_000
