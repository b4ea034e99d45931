"""``spendtrace demo``: broker, workers and a synthetic instrumented app, watched in the TUI (one command).

The demo lives in the ``tui`` application (``spendtrace-tui --demo``); ``spendtrace`` never imports
``tui`` or ``consumers``, so this plugin runs it as a child process attached to the same terminal.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from typing import Any

from spendtrace.cli._args import float_in, int_in


def _run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("tui") is None or importlib.util.find_spec("textual") is None:
        print("spendtrace demo needs the TUI: pip install 'spendtrace[all]'", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "tui.cli", "--demo", "--refresh", str(args.refresh), "--demo-rate", str(args.rate),
           "--spike-after", str(args.spike_after), "--history-days", str(args.history_days)]  # fmt: skip
    if args.demo_db:
        cmd += ["--db", args.demo_db]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:  # the child got the same SIGINT and cleans up after itself
        return 130


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser("demo", help="start a broker, a worker and a demo app, and watch them in the TUI")
    p.add_argument("--demo-db", default=None, metavar="PATH",
                   help="keep the demo's data in this file (default: a temporary file, removed on exit)")  # fmt: skip
    p.add_argument("--rate", type=float_in(0, 100_000, above=True), default=20.0,
                   help="demo requests per second (default 20)")
    p.add_argument("--spike-after", type=float_in(0, 86_400), default=20.0,
                   help="seconds until the cost spike (default 20)")
    p.add_argument("--history-days", type=int_in(0, 29), default=28,
                   help="days of past traffic to backfill first, so Trends has weeks to show (default 28; 0: none; "
                        "at most 29: the workers refuse spans older than the 30-day raw retention)")
    p.add_argument("--refresh", type=float_in(0, 3600, above=True), default=0.25,
                   help="TUI change-check interval in seconds")
    p.set_defaults(handler=_run, needs_db=False)
