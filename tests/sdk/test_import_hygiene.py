"""Importing and using the recording API stays light: no UI, database driver, AWS SDK, Kafka client or price data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ["textual", "aiosqlite", "boto3", "botocore", "aiokafka", "genai_prices", "google", "starlette", "uvicorn"]

SCRIPT = """
import json, sys
import spendtrace
loaded_on_import = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)

@spendtrace.cost_track(feature="f")
def f():
    spendtrace.add_api_call("dynamodb_read", count=1)

with spendtrace.track_request(endpoint="/x", user_id="t"):
    with spendtrace.track(feature="g"):
        f()
spendtrace.set_global_sample_rate(1.0)
loaded_after_use = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print(json.dumps({"import": loaded_on_import, "use": loaded_after_use,
                  "scope_loaded": "spendtrace.sdk.scope" in sys.modules}))
"""


def test_recording_api_loads_no_heavy_dependency(tmp_path: Path) -> None:
    """In a fresh interpreter, importing and recording a request loads none of the heavy dependencies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDTRACE_")}
    env["SPENDTRACE_DB"] = str(tmp_path / "cost_data.db")  # the default local export, kept out of the checkout
    code = f"HEAVY = {HEAVY!r}\n{SCRIPT}"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout)
    assert report == {"import": [], "use": [], "scope_loaded": True}
