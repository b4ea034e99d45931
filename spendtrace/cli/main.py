"""The ``spendtrace`` command (also ``python -m spendtrace``): spend tables from a spendtrace database.

``--store URL`` (or ``--db PATH``, the SQLite shorthand) may come before or after the subcommand
(default: ``SPENDTRACE_STORE``, else ``SPENDTRACE_DB`` or ``cost_data.db``); every report prints an
aligned table, or JSON with ``--json``.

Subcommands are pluggable: every other module of ``spendtrace.cli`` (alerts, reconcile, api,
demo ...) defines ``register(subparsers)``, adds its parsers there and gives each a ``handler``
default, a function ``(args) -> int`` called with ``args.store`` (a URL) and, for a SQLite store,
``args.db`` (its path) already resolved. A plugin module that is not installed simply offers no
subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spendtrace.cli._args import int_in
from spendtrace.cli._text import terminal_safe
from spendtrace.errors import SpendtraceError

__all__ = ["add_store_options", "build_parser", "main", "plugins", "render_table"]


def plugins() -> list[str]:
    """Names of the ``spendtrace.cli`` modules other than ``main`` present, sorted: each adds subcommands."""
    import spendtrace.cli

    names = (m.name for m in pkgutil.iter_modules(spendtrace.cli.__path__))
    return sorted(n for n in names if n != "main" and not n.startswith("_"))


Handler = Callable[[argparse.Namespace], int]


# --- output --------------------------------------------------------------------------------------
def money(usd: float | None, unpriced: int = 0, stderr: float | None = None) -> str:
    """``$0.001234`` (the one rule of ``usd_text``), with ``± stderr`` for sampled estimates and
    ``+N unpriced`` when items had no price; ``--json`` has the exact nano-dollars."""
    from spendtrace.server.model.money import usd_text

    text = "—" if usd is None else usd_text(round(usd * 1_000_000_000))
    if stderr is not None:
        text += f" ± {usd_text(round(stderr * 1_000_000_000))}"
    if unpriced:
        text += f" +{unpriced} unpriced"
    return text


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] = ()) -> str:
    """Columns padded to their widest cell; ``right[i]`` right-aligns column i (numbers).

    Control and bidi characters in cells (stored names) are shown escaped, never sent to the terminal.
    """
    cells = [[str(h) for h in headers], *[["" if c is None else terminal_safe(str(c)) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    aligns = list(right) + [False] * (len(headers) - len(right))
    lines = []
    for n, r in enumerate(cells):
        parts = [c.rjust(w) if a else c.ljust(w) for c, w, a in zip(r, widths, aligns, strict=True)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def _emit(args: argparse.Namespace, data: object, table: Callable[[], str]) -> int:
    if args.json:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    else:
        print(table())
    return 0


def _name(value: object) -> str:
    return "(none)" if value in ("", None) else str(value)


# --- report handlers -----------------------------------------------------------------------------
def _filters(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    out: dict[str, Any] = {"start": args.start, "end": args.end}
    for name in names:
        out[name] = getattr(args, name)
    return out


def _storage(args: argparse.Namespace) -> Any:
    from spendtrace.server.store.base import open_store

    return open_store(args.store)


def _cmd_total(args: argparse.Namespace) -> int:
    with _storage(args) as s:
        t = s.total(**_filters(args, "feature", "user_id", "endpoint", "service"))
    rows = [
        ("total", money(t["total_cost"], 0, t["stderr"])),
        ("spans", f"{t['transaction_count']:,}"),
        ("requests", f"{t['request_count']:,}"),
        ("errors", f"{t['error_count']:,}"),
        ("unpriced items", f"{t['unpriced_count']:,}"),
    ]
    return _emit(args, t, lambda: render_table(("", "value"), rows, (False, True)))


def _aggregate_table(rows: list[dict[str, Any]], dim: str, title: str, count: str) -> str:
    services = sorted({s for r in rows for s in r["service_costs"]})
    headers = [title, *services, "total", count, "unpriced"]
    body = [
        [
            _name(r[dim]),
            *(money(r["service_costs"][s]) if s in r["service_costs"] else "—" for s in services),
            money(r["total_cost"], 0, r["stderr"]),
            f"{r['transaction_count']:,}",
            f"{r['unpriced_count']:,}" if r["unpriced_count"] else "",
        ]
        for r in rows
    ]
    return render_table(headers, body, [False] + [True] * (len(headers) - 1))


def _aggregate(method: str, dim: str, title: str, count: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        with _storage(args) as s:
            rows = getattr(s, method)(limit=args.limit, **_filters(args, "feature", "user_id", "endpoint", "service"))
        return _emit(args, rows, lambda: _aggregate_table(rows, dim, title, count))

    return run


def _cmd_breakdown(args: argparse.Namespace) -> int:
    with _storage(args) as s:
        rows = s.get_feature_cost_breakdown(limit=args.limit, **_filters(args, "feature", "user_id", "endpoint"))
    body = [(r["feature"], money(r["direct_cost"], r["unpriced_count"]), money(r["fully_loaded_cost"])) for r in rows]
    return _emit(args, rows, lambda: render_table(("feature", "direct", "fully loaded"), body, (False, True, True)))


def _cmd_requests(args: argparse.Namespace) -> int:
    with _storage(args) as s:
        rows = s.get_request_cost(args.limit, args.order, **_filters(args, "feature", "user_id", "endpoint"))
    body = [
        (
            r["request_id"],
            _name(r["endpoint"]),
            _name(r["user_id"]),
            _name(r["root_feature"]),
            money(r["total_cost"], r["unpriced_count"], r["stderr"]),
            r["tx_count"],
            r["start"],
        )
        for r in rows
    ]
    headers = ("request", "endpoint", "user", "root feature", "cost", "spans", "start (UTC)")
    return _emit(args, rows, lambda: render_table(headers, body, (False, False, False, False, True, True)))


def _cmd_tree(args: argparse.Namespace) -> int:
    with _storage(args) as s:
        nodes = s.get_request_subtree(args.request_id)
    if not nodes:
        print(f"spendtrace: no spans stored for request {args.request_id!r}", file=sys.stderr)
        return 1
    body = [
        (
            "  " * n["depth"] + n["feature"],
            n["operation"] or "",
            money(n["subtree_cost"], n["subtree_unpriced"]),
            money(n["direct_cost"], n["unpriced_count"]),
            ", ".join(sorted({u.get("key", "?") for u in n["usage"]})),
            f"{n['duration_ms']:.1f}",
            "error" if n["error"] else "",
        )
        for n in nodes
    ]
    headers = ("feature", "operation", "subtree", "direct", "usage", "ms", "")
    return _emit(args, nodes, lambda: render_table(headers, body, (False, False, True, True, False, True)))


def _cmd_trend(args: argparse.Namespace) -> int:
    with _storage(args) as s:
        rows = s.get_cost_trend(args.feature, args.days, user_id=args.user_id, endpoint=args.endpoint)
    top = max((r["cost_nano"] for r in rows), default=0) or 1
    body = [
        (
            r["date"],
            money(r["total_cost"], r["unpriced_count"]),
            f"{r['calls']:,.0f}",
            "#" * round(30 * r["cost_nano"] / top),
        )
        for r in rows
    ]
    return _emit(args, rows, lambda: render_table(("date", "cost", "calls", ""), body, (False, True, True)))


def _cmd_broker(args: argparse.Namespace) -> int:
    try:
        from spendtrace.server.broker import EmbeddedBroker, serve
    except ImportError:
        print("spendtrace: the broker needs the consumers package: pip install 'spendtrace[consumer]'", file=sys.stderr)
        return 2
    return serve(EmbeddedBroker(host=args.host, port=args.port or None))


# --- parser --------------------------------------------------------------------------------------
def add_store_options(parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    """``--store URL`` and ``--db PATH`` on ``parser`` (a subcommand's: SUPPRESS keeps the top-level value)."""
    parser.add_argument(
        "--store",
        default=default,
        metavar="URL",
        help="store URL, e.g. sqlite:///path/cost_data.db (default: $SPENDTRACE_STORE, else --db's default)",
    )
    parser.add_argument(
        "--db", default=default, metavar="PATH", help="SQLite database file (default: $SPENDTRACE_DB or cost_data.db)"
    )


def _report(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    help_text: str,
    *,
    names: Sequence[str] = ("feature", "user_id", "endpoint", "service"),
    limit: int | bool | None = None,
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text)
    add_store_options(p, argparse.SUPPRESS)  # after the subcommand too; the top-level value otherwise
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--start", help="from this date / ISO time (UTC, inclusive)")
    p.add_argument("--end", help="until this date / ISO time (UTC, exclusive)")
    flags = {"feature": "--feature", "user_id": "--user", "endpoint": "--endpoint", "service": "--service"}
    for n in names:
        p.add_argument(flags[n], dest=n, help=f"only this {flags[n][2:]}")
    if limit is not False:
        p.add_argument("--limit", type=int_in(1, 1_000_000_000), default=limit, help="show at most this many rows")
    p.set_defaults(handler=handler, needs_db=True)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The whole argparse tree, plugins included."""
    parser = argparse.ArgumentParser(prog="spendtrace", description="Which features, tenants and requests spend money.")
    add_store_options(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _report(sub, "total", _cmd_total, "total spend, with optional filters", limit=False)
    _report(sub, "by-feature", _aggregate("aggregate_by_feature", "feature", "feature", "spans"), "spend per feature")
    _report(sub, "by-user", _aggregate("aggregate_by_user", "user_id", "user", "requests"), "spend per user / tenant")
    _report(
        sub,
        "by-endpoint",
        _aggregate("aggregate_by_endpoint", "endpoint", "endpoint", "requests"),
        "spend per endpoint",
    )
    _report(
        sub,
        "breakdown",
        _cmd_breakdown,
        "direct vs fully-loaded cost per feature",
        names=("feature", "user_id", "endpoint"),
    )
    req = _report(
        sub, "requests", _cmd_requests, "cost per request", names=("feature", "user_id", "endpoint"), limit=20
    )
    req.add_argument("--order", choices=("recent", "cost"), default="recent", help="newest or most expensive first")
    tree = _report(sub, "tree", _cmd_tree, "one request as a tree of spans with their costs", names=(), limit=False)
    tree.add_argument("request_id", metavar="REQUEST_ID")
    trend = _report(
        sub, "trend", _cmd_trend, "cost per UTC day, oldest first", names=("feature", "user_id", "endpoint")
    )
    trend.add_argument("--days", type=int_in(1, 36_600), default=30, help="how many days, today included (default 30)")
    broker = sub.add_parser("broker", help="run an embedded Kafka-protocol broker on loopback until Ctrl-C")
    add_store_options(broker, argparse.SUPPRESS)
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int_in(0, 65_535), default=0, help="port (default: a free one)")
    broker.set_defaults(handler=_cmd_broker, needs_db=False)
    for plugin in plugins():
        try:
            module = importlib.import_module(f"spendtrace.cli.{plugin}")
        except ModuleNotFoundError as exc:
            if exc.name == f"spendtrace.cli.{plugin}":
                continue  # vanished since listing: no subcommand
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    from spendtrace.server.store.base import parse_store_url, resolve_store_url

    try:
        args.store = resolve_store_url(getattr(args, "store", None), getattr(args, "db", None))
        url = parse_store_url(args.store)
    except SpendtraceError as exc:
        print(f"spendtrace: {exc}", file=sys.stderr)
        return 2
    args.db = url.path if url.scheme == "sqlite" else None
    if getattr(args, "needs_db", False) and args.db is not None and not Path(args.db).is_file():
        print(
            f"spendtrace: no database at {args.db} (pass --store URL or --db PATH, or set SPENDTRACE_STORE; "
            "the consumers create it when they store spans)",
            file=sys.stderr,
        )
        return 2
    try:
        return handler(args)
    except SpendtraceError as exc:
        print(f"spendtrace: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `spendtrace by-user | head`
        return 0


if __name__ == "__main__":  # python -m spendtrace.cli.main, as the original README runs it
    raise SystemExit(main())
