"""``spendtrace reconcile``: compare modelled spend with the AWS bill (Cost Explorer or a saved response)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from spendtrace.cli._args import int_in
from spendtrace.cli._text import terminal_safe
from spendtrace.cli.main import add_store_options


def _run(args: argparse.Namespace) -> int:
    from spendtrace.server.reconcile.report import reconcile

    report = reconcile(
        args.store, args.start, args.end, args.tag_key, actuals_file=args.actuals, now=args.now,
        settle_days=args.settle_days,
    )
    print(terminal_safe(report.summary(top=args.top), keep_newlines=True))
    if args.services:
        print()
        print(terminal_safe(report.service_table(), keep_newlines=True))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"report written to {out}", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``reconcile`` subcommand."""
    p = subparsers.add_parser("reconcile", help="modelled spend vs the AWS bill, per service and feature")
    add_store_options(p)
    p.add_argument("--start", help="first UTC day, YYYY-MM-DD (default: first day of last month)")
    p.add_argument("--end", help="day after the last, YYYY-MM-DD (default: first day of this month)")
    p.add_argument("--tag-key", help="also group the bill by this cost-allocation tag (e.g. feature)")
    p.add_argument("--actuals", metavar="FILE", help="a saved GetCostAndUsage JSON response instead of the API")
    p.add_argument("--out", metavar="FILE", help="write the report as JSON here")
    p.add_argument("--top", type=int_in(0, 1_000_000), default=10, help="features to list (default 10)")
    p.add_argument("--no-services", dest="services", action="store_false", help="omit the per-service table")
    p.add_argument("--settle-days", type=int_in(0, 366), default=2,
                   help="days Cost Explorer takes to settle (default 2)")
    p.add_argument("--now", default=None, help=argparse.SUPPRESS)  # a fixed 'now' for reproducible reports
    p.set_defaults(handler=_run, needs_db=True)
