"""The operator's documents say only what works: their commands, environment variables and metric names.

Every shell command in a fenced ``bash`` / ``sh`` block (and every ``ExecStart=`` line of a unit
file) of ``docs/*.md``, ``CHANGELOG.md`` and ``README.md`` is split into simple commands. Those that
invoke our tools are parsed with the tool's real argparse parser; cheap read commands of the
``spendtrace`` CLI are also run against a small database written by the real ingest path.
Commands of other programs must match a rule in ``EXTERNAL`` / ``SKIPPED_MODULES``, so a new tool
or a typo in a tool's name is noticed rather than silently passed over.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from source_ast import parse_source

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("spendtrace", "consumers", "tui")

#: Other programs the documents may show; their lines are not ours to check.
EXTERNAL = frozenset(
    {
        "aws", "cat", "cd", "chmod", "chown", "cp", "curl", "docker", "docker-compose", "echo", "export", "find",
        "git", "grep", "head", "install", "jq", "journalctl", "kafka-consumer-groups.sh", "kafka-console-consumer.sh",
        "kafka-topics.sh", "kcat", "ls", "mkdir", "mv", "mypy", "pip", "pip3", "promtool", "rm", "rpk", "ruff",
        "sqlite3", "systemctl", "tail", "tar", "uvicorn", "useradd", "watch", ".", "source", "apt-get", "du",
        "kill", "open", "sleep", "xdg-open",
    }
)  # fmt: skip
#: ``python -m X`` modules that are not our tools (the test runner, pip, venv).
SKIPPED_MODULES = frozenset({"pytest", "pip", "venv", "json.tool"})
#: Words that run the rest of the line as a command.
WRAPPERS = frozenset({"exec", "nohup", "time", "env"})
#: Placeholders the documents use, and what they stand for in the test database.
PLACEHOLDERS = {"REQUEST_ID": "req-7-000000001", "NAME_OR_ID": "1"}
#: ``spendtrace`` subcommands cheap enough to run here (the long-running ones are only parsed).
RUNNABLE = frozenset({"total", "by-feature", "by-user", "by-endpoint", "breakdown", "requests", "tree", "trend"})
#: SPENDTRACE_* names the code reads that operators never set (test hooks, internal hand-offs).
INTERNAL_ENV = frozenset({"SPENDTRACE_CRASH_AT", "SPENDTRACE_CONSUMER_SUPERVISOR", "SPENDTRACE_BENCH_CACHE"})


def documents() -> list[Path]:
    """The files checked: every docs/*.md, CHANGELOG.md and README.md that exist."""
    found = sorted((ROOT / "docs").glob("*.md"))
    return found + [p for p in (ROOT / "CHANGELOG.md", ROOT / "README.md") if p.is_file()]


@dataclass(frozen=True)
class Command:
    """One simple command from a document: where it is and its words."""

    where: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def _blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start, body = m.group(2), m.group(3).lower(), i + 2, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        yield lang, start, body


def _logical_lines(body: list[str], start: int) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, numbered by their first physical line."""
    buf, first = "", start
    for n, line in enumerate(body, start):
        if not buf:
            first = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield first, buf + line
        buf = ""
    if buf:
        yield first, buf


_ANGLED = re.compile(r"<([A-Za-z][\w-]*)>")


def _simple_commands(line: str) -> list[list[str]]:
    """Split one shell line at ``&&``, ``||``, ``;`` and ``|``, dropping comments and redirections.

    ``<request-id>``-style placeholders become words (``REQUEST_ID``), not redirections.
    """
    line = _ANGLED.sub(lambda m: m.group(1).upper().replace("-", "_"), line)
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out: list[list[str]] = [[]]
    skip_next = False
    for tok in lex:
        if skip_next:
            skip_next = False
        elif tok in {"&&", "||", ";", "|", "&"}:
            out.append([])
        elif tok in {">", ">>", "<", ">&", "&>"}:
            skip_next = True
        else:
            out[-1].append(tok)
    return [c for c in out if c]


def _unwrap(argv: list[str]) -> list[str]:
    """The command a line really runs: without ``VAR=value`` prefixes, sudo/env/exec, ``docker compose exec S``."""
    while argv:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]) or argv[0] in WRAPPERS:
            argv = argv[1:]
        elif argv[0] == "sudo":
            argv = argv[1:]
            while argv and argv[0].startswith("-"):
                argv = argv[2:] if argv[0] in {"-u", "-g"} else argv[1:]
        elif argv[:2] == ["docker", "compose"] and len(argv) > 2 and argv[2] in {"exec", "run"}:
            rest = argv[3:]
            while rest and rest[0].startswith("-"):
                rest = rest[2:] if rest[0] in {"-e", "--env", "-u", "--user", "-w", "--workdir"} else rest[1:]
            argv = rest[1:]  # after the service name
            if not argv:
                return []
        else:
            return argv
    return argv


def commands(path: Path) -> list[Command]:
    """Every simple command of the shell blocks, and of ``ExecStart=`` lines in any block, of ``path``."""
    out: list[Command] = []
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for lang, start, body in _blocks(path.read_text(encoding="utf-8")):
        if lang in {"bash", "sh", "shell"} and any(b.startswith("$ ") for b in body):
            # a transcript: the commands are the prompted lines, the rest is their output
            body = [b[2:] if b.startswith("$ ") else "" for b in body]
        for n, line in _logical_lines(body, start):
            if lang in {"bash", "sh", "shell"}:
                text = line
            elif line.strip().startswith("ExecStart="):
                text = line.strip().removeprefix("ExecStart=").lstrip("-+!@")
            else:
                continue
            for argv in _simple_commands(text):
                unwrapped = _unwrap(argv)
                if unwrapped:
                    out.append(Command(f"{rel}:{n}", tuple(unwrapped)))
    return out


# --- the tools ------------------------------------------------------------------------------------
def _spendtrace_parser() -> argparse.ArgumentParser:
    from spendtrace.cli.main import build_parser

    return build_parser()


def _consumer_parser() -> argparse.ArgumentParser:
    from consumers.cli import build_parser

    return build_parser()


def _tui_parser() -> argparse.ArgumentParser:
    from tui.cli import build_parser

    return build_parser()


def _demo_parser() -> argparse.ArgumentParser:
    from consumers.demo_traffic import build_parser

    return build_parser()


TOOLS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "spendtrace": _spendtrace_parser,
    "spendtrace-consumer": _consumer_parser,
    "spendtrace-tui": _tui_parser,
}
MODULES: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "spendtrace": _spendtrace_parser,
    "consumers": _consumer_parser,
    "tui.cli": _tui_parser,
    "consumers.demo_traffic": _demo_parser,
}
_OURS = ("spendtrace", "consumers", "tui")


def classify(cmd: Command) -> tuple[str, list[str] | None, str]:
    """(tool name or '', its arguments or None when not ours, why it is not checked; '' when nobody knows)."""
    argv = list(cmd.argv)
    prog = os.path.basename(argv[0])
    if prog in TOOLS:
        return prog, argv[1:], ""
    if re.fullmatch(r"python(3(\.\d+)?)?", prog):
        if len(argv) >= 3 and argv[1] == "-m":
            module = argv[2]
            if module in MODULES:
                return module, argv[3:], ""
            if module in SKIPPED_MODULES:
                return "", None, f"python -m {module} is not one of our tools"
            if module.split(".")[0] in _OURS:
                return "", None, ""  # ours, but no parser known: add it to MODULES
        return "", None, "python scripts (an app, a benchmark) and one-liners are not CLI commands"
    if prog in EXTERNAL:
        return "", None, f"{prog} is an external program"
    return "", None, ""  # neither one of our tools nor listed in EXTERNAL


def _substitute(args: list[str]) -> list[str]:
    return [PLACEHOLDERS.get(a, a) for a in args]


def parse(tool: str, args: list[str]) -> argparse.Namespace:
    """Parse ``args`` with ``tool``'s real parser; an argparse error fails the test with its message."""
    parser = {**TOOLS, **MODULES}[tool]()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            ns = parser.parse_args(args)
            if tool in {"spendtrace-consumer", "consumers"}:
                from consumers.cli import config_from_args

                config_from_args(ns)
    except SystemExit as exc:
        raise AssertionError(f"{tool} {shlex.join(args)}: rejected ({exc.code}): {err.getvalue().strip()}") from None
    return ns


def all_commands() -> list[Command]:
    """Every command of every document."""
    return [c for doc in documents() for c in commands(doc)]


def ours() -> list[Command]:
    """The commands that invoke one of our tools."""
    return [c for c in all_commands() if classify(c)[1] is not None]


# --- the test database ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed database holding 60 spans (20 requests, with an unpriced item) written by the real ingest path."""
    from consumers.testing import make_spans
    from spendtrace.schema import Span, UsageItem
    from spendtrace.server.pricing import PriceBook
    from spendtrace.server.store.sqlite._db import connect
    from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync

    spans = make_spans(60)
    assert spans[0].request_id == PLACEHOLDERS["REQUEST_ID"]
    last = spans[-1]
    odd = Span(
        "unpriced-1", last.span_id, last.request_id, "search", "op", last.endpoint, last.user_id,
        last.start_ns + 10, 1_000, usage=(UsageItem("no_such_price_key", "custom", count=2.0),),
        path=(*last.path, "search"),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("docs") / "store.db"
    conn = connect(path)
    try:
        result = write_batch_sync(conn, prepare_batch([*spans, odd], PriceBook.default()))
    finally:
        conn.close()  # the last connection checkpoints the WAL: a plain file copy is a complete database
    assert result is not None
    return path


def _run_spendtrace(args: list[str], db: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """Run the CLI in this process on ``db`` (any --db in ``args`` is pointed at it)."""
    from spendtrace.cli.main import main

    fixed: list[str] = []
    it = iter(args)
    for a in it:
        if a == "--db":
            next(it, None)
            fixed += ["--db", str(db)]
        elif a.startswith("--db="):
            fixed.append(f"--db={db}")
        else:
            fixed.append(a)
    monkeypatch.setenv("SPENDTRACE_DB", str(db))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(fixed)
    return code, out.getvalue(), err.getvalue()


def _runnable(ns: argparse.Namespace) -> bool:
    if ns.command in RUNNABLE:
        return True
    if ns.command == "alerts":
        sub = getattr(ns, "alerts_command", None)
        return sub in {"list", "add"} or (sub == "tail" and not ns.follow and not ns.bootstrap)
    return False


# --- tests ----------------------------------------------------------------------------------------
def test_documents_exist_and_have_commands() -> None:
    """The operator's documents are present and show commands of each of our three tools."""
    names = {p.name for p in documents()}
    assert {"DEPLOYMENT.md", "RUNBOOK.md", "MIGRATIONS.md", "CHANGELOG.md"} <= names
    tools = {classify(c)[0] for c in ours()}
    assert {"spendtrace", "spendtrace-consumer", "spendtrace-tui"} <= tools


def test_extraction_handles_shell_syntax() -> None:
    """Continuations, pipes, chains, comments, env prefixes and wrappers reduce to the commands they run."""
    body = [
        "SPENDTRACE_DB=/x.db spendtrace total --json | jq . && echo ok  # a comment",
        "sudo -u spendtrace spendtrace-consumer \\",
        "    --workers 2",
        "docker compose exec -T consumer spendtrace by-feature > out.txt",
        "spendtrace tree <request-id>",
    ]
    got = [argv for _, line in _logical_lines(body, 1) for argv in map(_unwrap, _simple_commands(line))]
    assert got == [
        ["spendtrace", "total", "--json"],
        ["jq", "."],
        ["echo", "ok"],
        ["spendtrace-consumer", "--workers", "2"],
        ["spendtrace", "by-feature"],
        ["spendtrace", "tree", "REQUEST_ID"],
    ]


def test_extraction_of_blocks(tmp_path: Path) -> None:
    """Transcripts keep only their prompted lines, unit files give their ExecStart, other blocks give nothing."""
    doc = tmp_path / "x.md"
    doc.write_text(
        "```bash\n$ spendtrace total\ntotal  $1.00\n```\n"
        "```ini\n[Service]\nExecStart=/opt/v/bin/spendtrace-consumer --workers 2\n```\n"
        "```python\nspendtrace = 1\n```\n",
        encoding="utf-8",
    )
    assert [c.argv for c in commands(doc)] == [
        ("spendtrace", "total"),
        ("/opt/v/bin/spendtrace-consumer", "--workers", "2"),
    ]


@pytest.mark.parametrize("cmd", ours(), ids=str)
def test_command_parses(cmd: Command) -> None:
    """A documented command of one of our tools is accepted by that tool's real parser."""
    tool, args, _ = classify(cmd)
    assert args is not None
    ns = parse(tool, _substitute(args))
    if tool in {"spendtrace"}:
        assert getattr(ns, "handler", None) is not None, f"{cmd}: names no subcommand"


def test_every_other_command_is_a_listed_program() -> None:
    """Each command that is not ours matches a rule saying why it is not checked."""
    unknown = [str(c) for c in all_commands() if classify(c)[1] is None and not classify(c)[2]]
    assert not unknown, f"commands of unknown programs (add a parser to TOOLS/MODULES or a rule): {unknown}"


def test_read_commands_run(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented read commands of ``spendtrace`` run on a real database and print something."""
    ran = 0
    for cmd in ours():
        tool, args, _ = classify(cmd)
        if tool != "spendtrace" or args is None:
            continue
        args = _substitute(args)
        ns = parse(tool, args)
        if not _runnable(ns):
            continue
        db = tmp_path / f"copy-{ran}.db"
        shutil.copy(store, db)
        code, out, err = _run_spendtrace(args, db, monkeypatch)
        if ns.command == "tree" and ns.request_id not in PLACEHOLDERS.values():
            assert code == 1 and "no spans stored" in err, f"{cmd}: {code} {err}"
        else:
            assert code == 0, f"{cmd}: exit {code}: {err}"
            quiet_ok = ns.command == "alerts" and ns.alerts_command == "tail"  # no events in the test store
            assert out.strip() or quiet_ok, f"{cmd}: printed nothing"
        ran += 1
    assert ran >= 5, "the documents should show the everyday read commands"


def _string_constants(dirs: tuple[str, ...] = SOURCE_DIRS) -> set[str]:
    """Every string literal in the source tree (so a name only in a comment does not count)."""
    found: set[str] = set()
    for top in dirs:
        for py in (ROOT / top).rglob("*.py"):
            tree = parse_source(py.read_text(encoding="utf-8"))
            found |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return found


def _env_read_in_code() -> set[str]:
    """SPENDTRACE_* names the product and the benchmark scripts read (a benchmark's is internal: INTERNAL_ENV)."""
    return {s for s in _string_constants((*SOURCE_DIRS, "benchmarks")) if re.fullmatch(r"SPENDTRACE_[A-Z0-9_]+", s)}


def _doc_names(pattern: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for doc in documents():
        for m in re.finditer(pattern, doc.read_text(encoding="utf-8")):
            names.setdefault(m.group(0), doc.name)
    return names


def test_documented_env_vars_are_read() -> None:
    """Every SPENDTRACE_* variable the documents mention is a string the code really uses."""
    mentioned = _doc_names(r"\bSPENDTRACE_[A-Z0-9_]*[A-Z0-9]\b")
    assert mentioned, "the documents name no environment variables"
    read = _env_read_in_code()
    unknown = {name: doc for name, doc in mentioned.items() if name not in read}
    assert not unknown, f"documented but never read: {unknown}"


def test_deployment_lists_every_env_var() -> None:
    """The configuration reference in DEPLOYMENT.md names every SPENDTRACE_* variable an operator can set."""
    text = (ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
    missing = sorted(v for v in _env_read_in_code() - INTERNAL_ENV if v not in text)
    assert not missing, f"read by the code but not in docs/DEPLOYMENT.md: {missing}"


def _metric_names(store: Path) -> set[str]:
    """Metric families the workers, the API and the SDK really expose."""
    from consumers.config import WorkerConfig
    from consumers.metrics import render_metrics
    from consumers.worker import Worker
    from spendtrace.sdk.metrics import SDK_COUNTERS
    from spendtrace.server.metrics import render_store_metrics
    from spendtrace.server.store.base import open_store

    reader = open_store(store, readonly=True)
    try:
        text = render_store_metrics(reader)
    finally:
        reader.close()
    text += render_metrics([Worker(WorkerConfig(bootstrap="127.0.0.1:1", db_path=str(store)))])
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    names |= {f"{n}_total" for n in SDK_COUNTERS.values()} | {"spendtrace_exporter_queued"}
    # families rendered only with a live consumer (lag) are declared in the source
    names |= {m for s in _string_constants() for m in re.findall(r"# TYPE (spendtrace_[a-z_]+)", s)}
    return names


def test_documented_metrics_exist(store: Path) -> None:
    """Every spendtrace_* metric name in the documents is one that some /metrics endpoint serves."""
    real = _metric_names(store)
    assert "spendtrace_cost_usd_total" in real and "spendtrace_consumer_stored_total" in real
    mentioned = _doc_names(r"\bspendtrace_[a-z_]*[a-z]\b")
    unknown = {
        name: doc
        for name, doc in mentioned.items()
        if re.sub(r"_(bucket|sum|count)$", "", name) not in real and name not in real
    }
    assert not unknown, f"documented metrics nobody serves: {unknown}"


# --- SQL, Python and price files shown in the documents ------------------------------------------
DOC_DB = "/var/lib/spendtrace/cost_data.db"


def _sql_statements() -> list[tuple[Command, str]]:
    """The SELECT / PRAGMA statements given to ``sqlite3`` on the command line."""
    found = []
    for cmd in all_commands():
        if os.path.basename(cmd.argv[0]) != "sqlite3":
            continue
        args = [a for a in cmd.argv[1:] if not a.startswith("-")]
        if len(args) >= 2 and re.match(r"\s*(SELECT|PRAGMA)\b", args[1], re.IGNORECASE):
            found.append((cmd, args[1]))
    return found


def test_documented_sql_runs(store: Path) -> None:
    """Every query the documents hand to sqlite3 runs on the real schema."""
    import sqlite3

    statements = _sql_statements()
    assert len(statements) >= 5
    conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    try:
        for cmd, sql in statements:
            try:
                conn.execute(sql).fetchall()
            except sqlite3.Error as exc:
                raise AssertionError(f"{cmd}: {exc}") from None
    finally:
        conn.close()


def _python_blocks(doc: Path) -> list[tuple[int, str]]:
    return [(n, "\n".join(body)) for lang, n, body in _blocks(doc.read_text(encoding="utf-8")) if lang == "python"]


def test_python_blocks_compile() -> None:
    """Every Python example in docs/ is valid Python."""
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for n, code in _python_blocks(doc):
            compile(code, f"{doc.name}:{n}", "exec")


def test_runbook_python_runs_in_order(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The runbook's Python examples (dead letters, restate, undo) run one after another on a real database."""
    db = tmp_path / "runbook.db"
    shutil.copy(store, db)
    blocks = [(n, c) for n, c in _python_blocks(ROOT / "docs" / "RUNBOOK.md") if DOC_DB in c]
    assert len(blocks) >= 3
    namespace: dict[str, object] = {"__name__": "runbook"}
    for n, code in blocks:
        exec(compile(code.replace(DOC_DB, str(db)), f"RUNBOOK.md:{n}", "exec"), namespace)
    from spendtrace.server.store.sqlite._db import connect

    conn = connect(db, readonly=True)
    try:
        undone = conn.execute("SELECT count(*) FROM restatements WHERE undone_ns IS NOT NULL").fetchone()[0]
    finally:
        conn.close()
    assert undone == 1, "the runbook restates and then undoes exactly one restatement"


def test_prices_file_example_loads(tmp_path: Path) -> None:
    """The prices file shown in the runbook is accepted by the loader the workers use, with every key in it."""
    from spendtrace.server.pricing import PriceBook
    from spendtrace.server.pricing._overrides import load_overrides

    tomls = [c for lang, _, body in _blocks((ROOT / "docs" / "RUNBOOK.md").read_text()) if lang == "toml"
             for c in ["\n".join(body)]]  # fmt: skip
    assert tomls, "the runbook shows a prices file"
    for i, text in enumerate(tomls):
        path = tmp_path / f"prices-{i}.toml"
        path.write_text(text, encoding="utf-8")
        keys = set(re.findall(r"^\[\[?([\w.-]+)\]\]?", text, re.MULTILINE))
        assert {e.key for e in load_overrides(path)} == keys
        book = PriceBook.load(prices_file=path, aws_pricing=False)
        assert keys <= set(book.keys())


def test_alert_rules_example_is_valid_yaml() -> None:
    """The runbook's Prometheus rules parse as YAML, and every rule has a name and an expression."""
    import yaml

    blocks = [b for lang, _, b in _blocks((ROOT / "docs" / "RUNBOOK.md").read_text()) if lang in {"yaml", "yml"}]
    assert blocks, "the runbook shows alert rules"
    for body in blocks:
        doc = yaml.safe_load("\n".join(body))
        rules = [r for g in doc["groups"] for r in g["rules"]]
        assert rules and all(r.get("alert") and r.get("expr") for r in rules)


def test_deployment_names_every_compose_service_and_port() -> None:
    """DEPLOYMENT.md's compose section names each service compose.yaml defines and each port it publishes."""
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    text = (ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
    for name, service in compose["services"].items():
        assert f"`{name}`" in text, f"compose service {name} is not described"
        for port in service.get("ports", []):
            published = str(port).rsplit(":", 1)[0].split("-")[0].split(":")[-1]
            assert published in text, f"port {port} of {name} is not mentioned"


def test_deployment_configure_example_runs(tmp_path: Path) -> None:
    """DEPLOYMENT.md's configure() example is accepted by the SDK (in a fresh process, nothing recorded)."""
    import subprocess
    import sys

    blocks = [c for _, c in _python_blocks(ROOT / "docs" / "DEPLOYMENT.md") if "configure(" in c]
    assert blocks
    for code in blocks:
        check = code + "\nstats = spendtrace.get_stats()\nprint(stats.exporter)\n"
        env = {**os.environ, "SPENDTRACE_SPILL_DIR": str(tmp_path / "spill"), "SPENDTRACE_DB": str(tmp_path / "x.db")}
        proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("KafkaExporter("), proc.stdout


def _flag_table(text: str, heading: str) -> list[tuple[list[str], str]]:
    """(flags, documented default) of each row of the table under ``heading``."""
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`--"):
            flags = re.findall(r"`(--[\w-]+)", cells[0])
            rows.append((flags, cells[1]))
    return rows


def _same_default(documented: str, actual: object) -> bool:
    doc = documented.strip("`").replace(",", "")
    if doc.startswith("$") or " or " in doc or "directory" in doc or "HOST" in doc:
        return True  # an environment-dependent default, described in words
    if actual is None or actual is False:
        return doc in {"none", "off"}
    if isinstance(actual, (int, float)):
        return float(doc) == float(actual)
    return doc == str(actual)


@pytest.mark.parametrize(
    ("heading", "factory"), [("### `spendtrace-consumer`", _consumer_parser), ("### `spendtrace-tui`", _tui_parser)]
)
def test_flag_tables_match_the_parsers(heading: str, factory: Callable[[], argparse.ArgumentParser]) -> None:
    """Each flag in DEPLOYMENT.md's reference tables exists, with the default the parser really has."""
    rows = _flag_table((ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8"), heading)
    assert len(rows) >= 5
    actions = {opt: a for a in factory()._actions for opt in a.option_strings}
    for flags, documented in rows:
        for flag in flags:
            assert flag in actions, f"{heading}: {flag} does not exist"
        defaults = [documented] if len(flags) == 1 else [d.strip() for d in documented.split(", ")]
        assert len(defaults) == len(flags), f"{heading}: {flags} need one default each, got {documented}"
        for flag, doc in zip(flags, defaults, strict=True):
            actual = actions[flag].default
            assert _same_default(doc, actual), f"{heading}: {flag} documented {doc}, is {actual!r}"


def test_consumer_table_lists_every_flag() -> None:
    """Every option of spendtrace-consumer appears in DEPLOYMENT.md's reference table."""
    rows = _flag_table((ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8"), "### `spendtrace-consumer`")
    documented = {f for flags, _ in rows for f in flags}
    real = {o for a in _consumer_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    assert real <= documented, f"undocumented: {sorted(real - documented)}"
