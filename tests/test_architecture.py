"""The layers of DESIGN.md hold: import-linter's contracts, no import cycles, and a light app in Kafka mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grimp

from spendtrace.server.broker import EmbeddedBroker

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spendtrace", "consumers", "tui")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    adjacency = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so a deep graph cannot hit the recursion limit
        work = [(start, iter(adjacency[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(adjacency[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in adjacency:
        if module not in index:
            visit(module)
    return found


def test_import_linter_contracts_are_kept() -> None:
    """``lint-imports`` (contracts in pyproject.toml: layers, server uses only sdk.context, drivers in backends)."""
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout or "broken" not in result.stdout


def test_the_sdk_modules_the_server_may_import_are_pure() -> None:
    """The two SDK modules pyproject lets the OTLP receiver import reach nothing of ours but the schema, even
    through imports inside functions, and importing the receiver loads no recording machinery (scope, export)."""
    graph = grimp.build_graph("spendtrace", include_external_packages=False, cache_dir=None)  # no cache: see _graph
    for module in ("spendtrace.sdk.instrument._models", "spendtrace.sdk.instrument._dynamodb"):
        reached = graph.find_upstream_modules(module)
        assert reached <= {"spendtrace.schema", "spendtrace.errors"}, (module, sorted(reached))
    code = "import sys, spendtrace.server.otlp.receiver; print(sorted(m for m in sys.modules if '.sdk' in m))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       timeout=120).stdout.replace("'", '"'))  # fmt: skip
    allowed = {"spendtrace.sdk", "spendtrace.sdk.context", "spendtrace.sdk.instrument",
               "spendtrace.sdk.instrument._models", "spendtrace.sdk.instrument._dynamodb"}  # fmt: skip
    assert set(loaded) <= allowed, loaded


def _graph() -> grimp.ImportGraph:
    """Every import of our packages, read afresh: grimp's on-disk cache (``.grimp_cache``) once kept a
    cycle a merge had added out of a local run (the clean-clone CI found it)."""
    return grimp.build_graph(*PACKAGES, include_external_packages=False, exclude_type_checking_imports=True,
                             cache_dir=None)  # fmt: skip


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    """No two of our modules depend on each other, imports inside functions included (TYPE_CHECKING excepted)."""
    graph = _graph()
    assert len(graph.modules) > 100  # the whole tree was read
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_planted_cycle() -> None:
    """The check above can fail: a cycle added to the real graph is reported."""
    graph = _graph()
    graph.add_import(importer="spendtrace.schema", imported="spendtrace.sdk.scope")
    assert any("spendtrace.schema" in c and "spendtrace.sdk.scope" in c for c in _cycles(graph))


APP = """
import json, sys
import spendtrace

@spendtrace.cost_track(feature="f")
def f():
    spendtrace.add_api_call("dynamodb_read", count=1)

with spendtrace.track_request(endpoint="/x", user_id="t"):
    f()
result = spendtrace.flush(30)
print(json.dumps({"delivered": result.delivered,
                  "server": sorted(m for m in sys.modules if m.startswith("spendtrace.server")),
                  "drivers": sorted(m for m in sys.modules if m.split(".")[0] in ("sqlite3", "aiosqlite"))}))
"""


def test_an_app_recording_to_kafka_loads_no_server_module(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """An app in Kafka mode records and exports a span through the real broker without loading server code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDTRACE_")}
    env.update(
        SPENDTRACE_KAFKA_BOOTSTRAP=broker.bootstrap, SPENDTRACE_TOPIC="arch-light", SPENDTRACE_SPILL_DIR=str(tmp_path)
    )
    result = subprocess.run(
        [sys.executable, "-c", APP], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"delivered": 1, "server": [], "drivers": []}
