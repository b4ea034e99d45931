"""Planted bugs the tests must catch (issue #12): each one is applied to a copy of the checkout and
the test files named for it are run there; a mutant the tests leave green is a hole in the suite.

    python tests/mutants.py                 # the unmutated copy must pass, then every mutant must fail
    python tests/mutants.py NAME [NAME ...] # only these mutants (the baseline still runs their tests)
    python tests/mutants.py --list          # names and what each plants

Each mutation is an exact text replacement; the script stops with an error when a text is not
found exactly once, so a refactoring that moves the code makes the table fail loudly instead of
testing nothing. Paths are relative to the repository root: update MUTANTS when modules move.

pytest does not collect this file (it is not named test_*.py). Exit status: 0 when the baseline
passes and every mutant is caught, 1 when a mutant is missed, 2 on any other problem.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mutant:
    """One planted bug: where (path, old text, new text; each old text exactly once) and which tests must fail."""

    name: str
    plants: str
    edits: tuple[tuple[str, str, str], ...]
    tests: tuple[str, ...]


# ----------------------------------------------------------------------------------------------------- the table
MUTANTS: tuple[Mutant, ...] = (
    # (a) a wrong number in the static price table, which tests pricing with the table's own rates cannot see
    Mutant(
        "static-cache-read-x10",
        "every cache-read rate of static_prices.json read ten times too high",
        (
            (
                "spendtrace/server/pricing/_static.py",
                'return tuple(PriceEntry.from_dict(e, source="static") for e in raw)',
                'return tuple(PriceEntry.from_dict({k: (str(__import__("decimal").Decimal(v) * 10)'
                ' if k == "per_1m_cache_read_tokens" else v) for k, v in e.items()}, source="static") for e in raw)',
            ),
        ),
        ("tests/sdk/test_published_llm_prices.py",),
    ),
    # (b) the bearer-token guard dropped from three routes the old auth test never called
    Mutant(
        "api-auth-dropped",
        "/transactions, /alerts and /v2/request/{id}/tree answer without the token",
        (
            (
                "spendtrace/api/app.py",
                '@app.get("/v2/request/{request_id}/tree", dependencies=guarded, tags=["requests"])',
                '@app.get("/v2/request/{request_id}/tree", tags=["requests"])',
            ),
            (
                "spendtrace/api/app.py",
                '@app.get("/transactions", dependencies=guarded, tags=["requests"])',
                '@app.get("/transactions", tags=["requests"])',
            ),
            (
                "spendtrace/api/app.py",
                '@app.get("/alerts", dependencies=guarded, tags=["alerts"])',
                '@app.get("/alerts", tags=["alerts"])',
            ),
        ),
        ("tests/api/test_api_auth.py",),
    ),
    Mutant(
        "api-openapi-open",
        "/openapi.json, /docs and /redoc answer without the token again",
        (
            (
                "spendtrace/api/app.py",
                '@app.get("/openapi.json", dependencies=guarded, include_in_schema=False)',
                '@app.get("/openapi.json", include_in_schema=False)',
            ),
            (
                "spendtrace/api/app.py",
                '@app.get("/docs", dependencies=guarded, include_in_schema=False)',
                '@app.get("/docs", include_in_schema=False)',
            ),
            (
                "spendtrace/api/app.py",
                '@app.get("/redoc", dependencies=guarded, include_in_schema=False)',
                '@app.get("/redoc", include_in_schema=False)',
            ),
        ),
        ("tests/api/test_api_auth.py",),
    ),
    Mutant(
        "api-health-shows-db",
        "/health shows the database path with a token set",
        (
            (
                "spendtrace/api/app.py",
                "        if token is not None:  # the one open route says nothing about the host\n"
                '            return {"status": "ok", "data_version": storage.change_token()}\n',
                "",
            ),
        ),
        ("tests/api/test_api_auth.py",),
    ),
    # (c) the TUI restates by 1.0 whatever the report says
    Mutant(
        "tui-restate-factor-1",
        "the Reconciliation screen's Restate always applies factor 1.0",
        (("tui/screens/reconcile.py", "self._restate(factor, start, end)", "self._restate(1.0, start, end)"),),
        ("tests/tui/test_tui_reconcile_keys.py",),
    ),
    # (d) the CSV export keeps the name and Direct columns and writes 0 everywhere after them
    Mutant(
        "csv-zeros-after-direct",
        "ctrl+s writes 0 in every column after Direct",
        (
            (
                "tui/widgets/keyed_table.py",
                "w.writerow(self.export_values(key))",
                'w.writerow([v if i < 2 else "0" for i, v in enumerate(self.export_values(key))])',
            ),
        ),
        ("tests/tui/test_tui_export_values.py",),
    ),
    # (e) keyboard focus on the Reconciliation screen (not planted by the issue; two ways to break it)
    Mutant(
        "reconcile-focus-in-date-field",
        "the Reconciliation screen opens with a date field focused, so digits no longer switch screens",
        (("tui/screens/reconcile.py", 'AUTO_FOCUS = "KeyedTable"', 'AUTO_FOCUS = "#start"'),),
        ("tests/tui/test_tui_reconcile_keys.py",),
    ),
    Mutant(
        "reconcile-restate-button-stays-disabled",
        "the Restate button is never enabled, so Tab cannot reach it",
        (
            (
                "tui/screens/reconcile.py",
                'self.query_one("#restate", Button).disabled = factor is None',
                'self.query_one("#restate", Button).disabled = True',
            ),
        ),
        ("tests/tui/test_tui_reconcile_keys.py",),
    ),
    # already caught before issue #12's work: kept here so they stay caught
    Mutant(
        "pricing-drops-cache-read",
        "item_cost_femto leaves out the cache-read tokens",
        (("spendtrace/server/pricing/_book.py", "        (item.cache_read_tokens, r.cache_read_token),\n", ""),),
        ("tests/sdk/test_pricing.py",),
    ),
    Mutant(
        "rollups-counted-twice",
        "every rollup / requests / dashboard delta of a batch is applied twice",
        (
            (
                "spendtrace/server/store/sqlite/_ingest.py",
                "            yield from _many(sql, rows)\n",
                "            yield from _many(sql, rows)\n            yield from _many(sql, rows)\n",
            ),
        ),
        ("tests/sdk/test_ingest.py",),
    ),
    Mutant(
        "seek-one-past-stored-offset",
        "on assignment a worker seeks one past the offset stored in the database",
        (
            (
                "consumers/checkpoint.py",
                "            else:\n                starts[tp] = stored.get(tp.partition)\n",
                "            else:\n"
                "                starts[tp] = stored[tp.partition] + 1 if tp.partition in stored else None\n",
            ),
        ),
        ("tests/consumers/test_worker.py",),
    ),
    Mutant(
        "clickhouse-batches-not-re-formed",
        "after a crash a worker on ClickHouse forms new batches from the stored offsets, not the unconfirmed range",
        (("consumers/checkpoint.py", "        if self.store.atomic_batches:\n            return {}\n",
          "        if True:\n            return {}\n"),),
        ("tests/e2e/test_pipeline_clickhouse.py",),
    ),
    Mutant(
        "clickhouse-token-per-attempt",
        "a ClickHouse insert is deduplicated by a token of its own attempt, not of its batch: a replay counts again",
        (("spendtrace/server/store/clickhouse/_ingest.py",
          '    settings = {**_INSERT_SETTINGS, "insert_deduplication_token": token}\n',
          '    settings = {**_INSERT_SETTINGS, "insert_deduplication_token": token + str(time.time_ns())}\n'),),
        ("tests/e2e/test_pipeline_clickhouse.py", "tests/e2e/test_pipeline_faults_chdb.py"),
    ),
    Mutant(
        "topic-restart-not-detected",
        "a partition Kafka has forgotten (broker restarted empty) is sought to the stored offset, skipping new records",
        (("consumers/checkpoint.py", "        forgotten = {tp for tp, c in in_kafka.items() if c is None}\n",
          "        forgotten: set[TopicPartition] = set()\n"),),
        ("tests/consumers/test_topic_restart.py",),
    ),
    Mutant(
        "reprice-forgets-fully-loaded",
        "a reprice changes spans and rollups but leaves the fully-loaded rollups as they were",
        (("spendtrace/server/ingest/reprice.py", "                _acc(loaded, (b, f), (d_cost, d_var))",
          "                pass"),),
        ("tests/store/test_reprice.py",),
    ),
    Mutant(
        "restate-factor-scales-every-service",
        "restate_historical_costs(factor=...) multiplies OpenAI and Anthropic spend by the AWS factor",
        (("spendtrace/server/store/sqlite/_restate.py",
          "return per_service.get(service, default if service in AWS_SERVICES else _ONE)",
          "return per_service.get(service, default)"),),
        ("tests/store/test_restate_scope.py",),
    ),
    Mutant(
        "otlp-full-batch-dropped",
        "the OTLP receiver's shared batcher forgets a batch that filled up (its records never sent)",
        (("spendtrace/server/otlp/receiver.py",
          "                out.append((batch, owners))\n"
          "                batch, owners = producer.create_batch(), [part]",
          "                batch, owners = producer.create_batch(), [part]"),),
        ("tests/otlp/test_concurrent_exporters.py",),
    ),
    Mutant(
        "otlp-200-before-acks",
        "the OTLP receiver answers once its batches are submitted, not once the broker acknowledged them",
        (("spendtrace/server/otlp/receiver.py",
          "        for result in await asyncio.gather(*acks, return_exceptions=True):",
          "        for result in ():"),),
        ("tests/otlp/test_concurrent_exporters.py",),
    ),
    Mutant(
        "reprice-id-reused-after-failure",
        "a ClickHouse reprice takes the id of a failed attempt, so the engine drops its delta rows as duplicates",
        (("spendtrace/server/store/clickhouse/_reprice.py", "    return int(row[0][0] or 0) + 1\n",
          "    return int(conn.tuples('SELECT max(id) FROM restatements')[0][0] or 0) + 1\n"),),
        ("tests/store/test_reprice.py",),
    ),
    Mutant(
        "otlp-unstorable-units-accepted",
        "the OTLP receiver passes a token count above MAX_UNITS on instead of refusing that span",
        (("spendtrace/server/otlp/_usage.py", "    if max(inp, out, read, write) > MAX_UNITS:\n",
          "    if False:\n"),),
        ("tests/otlp/test_receiver.py", "tests/otlp/test_fast_paths.py"),
    ),
    Mutant(
        "static-dynamodb-read-rate-off",
        "the current DynamoDB on-demand read rate 4% high: the worker and store tests must see it in their totals",
        (("spendtrace/server/pricing/static_prices.json", '"per_request": "0.000000125"',
          '"per_request": "0.00000013"'),),
        ("tests/consumers/test_worker.py", "tests/store/test_ingest_store.py"),
    ),
    Mutant(
        "ch-alert-claim-always-won",
        "a ClickHouse alert claim reports a win without reading back whose nonce landed",
        (("spendtrace/server/store/clickhouse/_alerts.py", "        return bool(got) and str(got[0][0]) == nonce\n",
          "        return True\n"),),
        ("tests/server/test_alert_store_contract.py", "tests/store/test_clickhouse_alerts.py"),
    ),
    Mutant(
        "ch-firing-claim-ignores-last-firing",
        "a ClickHouse firing claim is named by its own time, not by the firing it follows, so a stale read wins",
        (("spendtrace/server/store/clickhouse/_alerts.py",
          'nonce, tok = new_nonce(), token("fire", rule_id, key, prev)',
          'nonce, tok = new_nonce(), token("fire", rule_id, key, fired_ns)'),),
        ("tests/store/test_clickhouse_alerts.py",),
    ),
    Mutant(
        "dash-block-update-off-by-one",
        "the trigger that adds a dash_day update to its week and 28-day blocks adds one nano-dollar too many",
        (("spendtrace/server/store/sqlite/_ddl.py", "NEW.cost_nano - OLD.cost_nano WHERE dim = NEW.dim",
          "NEW.cost_nano - OLD.cost_nano + 1 WHERE dim = NEW.dim"),),
        ("tests/store/test_dash_block.py",),
    ),
    Mutant(
        "day-window-misses-its-first-day-of-this-week",
        "a window of days ranks this week's days from the day after the last whole week: one day left out",
        (("spendtrace/server/store/sqlite/_dashboard.py", "[col, e7]))  # this week",
          "[col, e7 + DAY]))  # this week"),),
        ("tests/store/test_dash_block.py",),
    ),
    Mutant(
        "dim-days-first-day-retention-is-deleting",
        "ClickHouse's first day of a value read from dim_days includes days the day rollups no longer hold",
        (("spendtrace/server/store/clickhouse/_reads.py",
          " AND bucket >= (SELECT min(bucket) FROM rollup_day) GROUP BY k", " GROUP BY k"),),
        ("tests/store/test_clickhouse_dim_all.py",),
    ),
)
# ---------------------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
#: The packages a copy must import from itself, not from the editable install of the original checkout.
PACKAGES = ("spendtrace", "consumers", "tui")
_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "venv", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    "cost_data.db*", "*.pyc",
)  # fmt: skip
RUN_TIMEOUT_S = 1800


class TableError(Exception):
    """The mutant table no longer matches the code (a text not found exactly once, a test file missing)."""


def copy_repo(into: Path) -> Path:
    """A copy of the checkout (no .git, no virtualenv, no caches) under ``into``."""
    dest = into / "repo"
    shutil.copytree(ROOT, dest, ignore=_IGNORE, symlinks=True)
    return dest


def apply(mutant: Mutant, repo: Path) -> None:
    """Apply every edit of ``mutant`` in ``repo``; each old text must occur exactly once and differ from the new."""
    for rel, old, new in mutant.edits:
        path = repo / rel
        if not path.is_file():
            raise TableError(f"{mutant.name}: {rel} does not exist (moved? update MUTANTS)")
        text = path.read_text(encoding="utf-8")
        found = text.count(old)
        if found != 1 or old == new:
            raise TableError(f"{mutant.name}: {rel}: the text to replace occurs {found} times (want 1):\n{old!r}")
        path.write_text(text.replace(old, new), encoding="utf-8")


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_from(repo: Path, modules: list[str]) -> None:
    """Import ``modules`` in a fresh interpreter set up like the test run; every one must come from ``repo``."""
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    print(name, importlib.import_module(name).__file__)\n"
    out = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=repo,
        env=_env(repo),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise TableError(f"importing {modules} from the copy failed:\n{out.stderr[-2000:]}")
    for line in out.stdout.splitlines():
        name, _, file = line.partition(" ")
        if not Path(file).resolve().is_relative_to(repo.resolve()):
            raise TableError(
                f"{name} was imported from {file}, not from the copy {repo}: the run would test the original"
            )


def module_of(rel: str) -> str:
    """``spendtrace/server/pricing/_book.py`` -> ``spendtrace.server.pricing._book``."""
    return rel.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


@dataclass
class Outcome:
    name: str
    result: str  # passed / failed / error / timeout
    seconds: float
    first_failure: str
    #: pytest's short failure lines (``E ...``) and summary, to say why a baseline run failed
    detail: str = ""


def run_tests(repo: Path, tests: tuple[str, ...], name: str) -> Outcome:
    """``python -m pytest -x -q -p no:cacheprovider <tests>`` in ``repo``, the copy's code first on the path."""
    for t in tests:
        if not (repo / t).is_file():
            raise TableError(f"{name}: test file {t} does not exist")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.monotonic()
    try:
        out = subprocess.run(
            cmd, cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return Outcome(name, "timeout", time.monotonic() - t0, "")
    seconds = time.monotonic() - t0
    failure = next((m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (\S+)", out.stdout, re.M)), "")
    if out.returncode == 0:
        return Outcome(name, "passed", seconds, "")
    lines = (out.stdout + out.stderr).splitlines()
    detail = "\n".join([ln for ln in lines if ln.startswith("E ")][-30:] + lines[-5:])
    if out.returncode == 1:
        return Outcome(name, "failed", seconds, failure, detail)
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
    return Outcome(name, "error", seconds, f"pytest exit {out.returncode}: {failure or tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated copy")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:42} {m.plants}")
        return 0
    by_name = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        parser.error(f"unknown mutant(s): {', '.join(unknown)}")
    chosen = [by_name[n] for n in args.names] if args.names else list(MUTANTS)

    rows: list[tuple[Mutant | None, Outcome]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="spendtrace-mutants-") as tmp:
            if not args.no_baseline:
                # the same tests on the unmutated copy: a failure there would make every "caught" meaningless
                repo = copy_repo(Path(tmp) / "baseline")
                check_imports_from(repo, list(PACKAGES))
                tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
                print(f"baseline: {len(tests)} test files on the unmutated copy ...", flush=True)
                base = run_tests(repo, tests, "(unmutated)")
                rows.append((None, base))
                print(f"  {base.result} in {base.seconds:.0f} s {base.first_failure}", flush=True)
                if base.result != "passed":
                    print(base.detail, flush=True)
                    _report(rows)
                    print("the unmutated copy does not pass: fix that first", file=sys.stderr)
                    return 2
                shutil.rmtree(repo.parent)
            for m in chosen:
                repo = copy_repo(Path(tmp) / m.name)
                apply(m, repo)
                edited = dict.fromkeys(module_of(rel) for rel, _, _ in m.edits if rel.endswith(".py"))  # not data
                check_imports_from(repo, [*PACKAGES, *edited])
                print(f"{m.name}: {m.plants} ...", flush=True)
                outcome = run_tests(repo, m.tests, m.name)
                rows.append((m, outcome))
                print(f"  {_verdict(outcome)} in {outcome.seconds:.0f} s {outcome.first_failure}", flush=True)
                shutil.rmtree(repo.parent)
    except TableError as exc:
        print(f"mutants.py: {exc}", file=sys.stderr)
        return 2
    _report(rows)
    verdicts = [_verdict(o) for m, o in rows if m is not None]
    if any(v == "error" for v in verdicts):
        return 2
    return 1 if "MISSED" in verdicts else 0


def _verdict(o: Outcome) -> str:
    return {"failed": "caught", "passed": "MISSED"}.get(o.result, "error")


def _report(rows: list[tuple[Mutant | None, Outcome]]) -> None:
    print()
    print(f"{'mutant':42} {'result':8} {'secs':>5}  tests / first failing test")
    print("-" * 120)
    for m, o in rows:
        name = "(unmutated baseline)" if m is None else m.name
        verdict = o.result if m is None else _verdict(o)
        detail = o.first_failure or ("" if m is None else ", ".join(m.tests))
        print(f"{name:42} {verdict:8} {o.seconds:5.0f}  {detail}")


if __name__ == "__main__":
    sys.exit(main())
