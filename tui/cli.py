"""``spendtrace-tui``: open the terminal UI on a spendtrace database (or on a self-contained demo)."""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _history_days(text: str) -> int:
    """0..29: the workers dead-letter spans older than the 30-day raw retention (minus an hour)."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if not 0 <= days <= 29:
        raise argparse.ArgumentTypeError("must be in 0..29 (the workers keep raw spans 30 days)")
    return days


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of ``spendtrace-tui``."""
    from spendtrace.settings import default_db_path
    from tui.serve import DEFAULT_MAX_SESSIONS

    p = argparse.ArgumentParser(
        prog="spendtrace-tui", description="Live cloud and LLM spend per feature, in the terminal."
    )
    p.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="store URL: sqlite:///path/cost_data.db, chdb:///dir, clickhouse://user:pw@host:8123/db "
        "(default: $SPENDTRACE_STORE)",
    )
    p.add_argument("--db", default=None, metavar="PATH", help=f"SQLite store to read (default: {default_db_path()})")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers, for live alerts (host:port)")
    p.add_argument("--alerts-topic", default="spendtrace.alerts", help="topic the alert evaluator publishes to")
    p.add_argument("--refresh", type=float, default=0.25, help="seconds between change checks (default 0.25)")
    p.add_argument("--export-dir", default=None, help="where ctrl+s writes CSV files (default: current directory)")
    p.add_argument("--demo", action="store_true", help="start a broker, workers and a synthetic app, and watch them")
    p.add_argument("--demo-rate", type=float, default=20.0, help="demo requests per second (default 20)")
    p.add_argument("--spike-after", type=float, default=20.0, help="seconds until the demo's cost spike (default 20)")
    p.add_argument("--history-days", type=_history_days, default=28,
                   help="days of past demo traffic to backfill first (default 28; 0: none)")  # fmt: skip
    web = p.add_argument_group("browser view (textual-serve)")
    web.add_argument("--serve", action="store_true", help="serve the UI to web browsers instead of this terminal")
    web.add_argument("--host", default="127.0.0.1", help="address --serve binds to (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8080, help="port --serve listens on (default 8080)")
    web.add_argument("--public-url", default=None, help="URL browsers reach the server at (default http://HOST:PORT)")
    web.add_argument("--max-sessions", type=_positive_int, default=DEFAULT_MAX_SESSIONS, metavar="N",
                     help=f"browser sessions (one app process each) served at once (default {DEFAULT_MAX_SESSIONS})")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the TUI until the user quits."""
    args = build_parser().parse_args(argv)
    try:
        from tui.app import SpendtraceApp
    except ImportError as exc:  # pragma: no cover - depends on the install
        print(f"spendtrace-tui needs the tui extra: pip install 'spendtrace[tui]' ({exc})", file=sys.stderr)
        return 2
    if args.demo:
        from tui.demo import run_demo

        return run_demo(args.db, refresh=args.refresh, rate=args.demo_rate, spike_after=args.spike_after,
                        history_days=args.history_days)
    from pathlib import Path

    from spendtrace.errors import SpendtraceError
    from spendtrace.server.store.base import parse_store_url, resolve_store_url

    try:
        url = parse_store_url(resolve_store_url(args.store, args.db))
    except SpendtraceError as exc:
        print(f"spendtrace-tui: {exc}", file=sys.stderr)
        return 2
    if url.scheme != "sqlite":
        if url.scheme == "chdb" and not Path(url.path).is_dir():
            print(f"spendtrace-tui: no chDB data directory at {url.path} (the consumers create it)", file=sys.stderr)
            return 2
        if url.scheme == "chdb" and args.serve:  # each browser session is an app process of its own
            print("spendtrace-tui: --serve needs a store several processes can open; chdb:// allows one",
                  file=sys.stderr)  # fmt: skip
            return 2
        db = url.raw
    else:
        db = url.path
    if url.scheme == "sqlite" and not Path(db).is_file():  # a typo would open a new, empty store that looks healthy
        print(
            f"spendtrace-tui: no database at {db} (pass --store URL or --db PATH, or set SPENDTRACE_STORE; "
            "the consumers create it when they store spans; --demo makes one)",
            file=sys.stderr,
        )
        return 2
    if args.serve:
        return _serve(args, db)
    app = SpendtraceApp(
        db,
        bootstrap=args.bootstrap,
        alerts_topic=args.alerts_topic,
        refresh_interval=args.refresh,
        export_dir=args.export_dir,
    )
    app.run()
    return 0


def _serve(args: argparse.Namespace, db: str) -> int:
    """Run the browser view; each browser session gets an app process with this command line's options."""
    from tui.serve import serve

    app_args = ["--refresh", str(args.refresh), "--alerts-topic", args.alerts_topic]
    if args.bootstrap:
        app_args += ["--bootstrap", args.bootstrap]
    if args.export_dir:
        app_args += ["--export-dir", args.export_dir]
    serve(db, host=args.host, port=args.port, public_url=args.public_url, app_args=app_args,
          max_sessions=args.max_sessions)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
