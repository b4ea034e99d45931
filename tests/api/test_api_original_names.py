"""The original README's way to serve the API, ``uvicorn spendtrace.api.app:app``, works as typed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from spendtrace.server.broker import free_port


def test_uvicorn_serves_the_module_level_app(api_db: Path, tmp_path: Path) -> None:
    """The real uvicorn CLI imports ``spendtrace.api.app:app`` and serves the store named by SPENDTRACE_DB."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDTRACE_")}
    env["SPENDTRACE_DB"] = str(api_db)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "spendtrace.api.app:app", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                total = httpx.get(f"http://127.0.0.1:{port}/total", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "uvicorn did not answer within 60 s"
                time.sleep(0.1)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert total["transaction_count"] > 0 and total["cost_nano"] > 0
    assert health["db"] == str(api_db)
