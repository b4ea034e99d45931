"""``spendtrace reprice``: price the stored usage of a date range again from the current price book."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from spendtrace.cli._text import terminal_safe
from spendtrace.cli.main import add_store_options, render_table


def _usd(nano: int) -> str:
    from spendtrace.server.model.money import usd_text

    return usd_text(nano)


def _signed(nano: int) -> str:
    return ("-" if nano < 0 else "+") + _usd(abs(nano))


def _run(args: argparse.Namespace) -> int:
    from spendtrace.server.repricing import reprice, undo_reprice

    if args.undo is not None:
        restored = undo_reprice(args.undo, store=args.store)
        print(f"reprice #{args.undo} undone ({restored} rows restored)")
        return 0
    if not args.start or not args.end:
        print("spendtrace: reprice needs --start and --end (or --undo ID)", file=sys.stderr)
        return 2
    result = reprice(
        args.start, args.end, args.feature or None, store=args.store, prices=args.prices, dry_run=args.dry_run,
        why=args.why,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    rows = [
        (s.service, _usd(s.before_nano), _usd(s.after_nano), _signed(s.delta_nano), s.unpriced_before, s.unpriced_after)
        for s in result.services
    ]
    rows.append(("total", _usd(result.before_nano), _usd(result.after_nano), _signed(result.delta_nano),
                 result.unpriced_before, result.unpriced_after))  # fmt: skip
    head = "dry run, nothing changed" if result.dry_run else f"recorded as restatement #{result.id}"
    feats = ", ".join(result.features) or "all features"
    print(terminal_safe(f"reprice {result.start_date} -> {result.end_date} ({feats}): {result.spans_changed:,} of "
                        f"{result.spans_seen:,} spans changed; {head}"))  # fmt: skip
    print(render_table(("service", "before", "after", "change", "unpriced before", "unpriced after"), rows,
                       (False, True, True, True, True, True)))  # fmt: skip
    if not result.dry_run:
        print(f"undo with: spendtrace reprice --undo {result.id}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``reprice`` subcommand."""
    p = subparsers.add_parser(
        "reprice",
        help="price stored usage of a date range again from the current price book (undoable)",
        description="Price the stored usage of the UTC days [--start, --end) again from the current price book "
        "(the default book, with --prices FILE's overrides), in one transaction; recorded and undoable.",
    )
    add_store_options(p)
    p.add_argument("--start", help="first UTC day, YYYY-MM-DD")
    p.add_argument("--end", help="day after the last, YYYY-MM-DD (exclusive)")
    p.add_argument("--feature", action="append", metavar="F", help="only spans of this feature (repeatable)")
    p.add_argument("--prices", metavar="FILE", help="price overrides (JSON or TOML), as spendtrace-consumer --prices")
    p.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    p.add_argument("--why", default="", help="reason, stored with the record")
    p.add_argument("--undo", type=int, metavar="ID", help="take back reprice ID instead")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_run, needs_db=True)
