"""``spendtrace api``: serve the read-only HTTP API (needs the ``[api]`` extra)."""

from __future__ import annotations

import argparse
from typing import Any

from spendtrace.cli._args import int_in
from spendtrace.cli.main import add_store_options


def _run(args: argparse.Namespace) -> int:
    try:
        from spendtrace.api import serve
    except ImportError as exc:
        print(f"spendtrace api needs the [api] extra (pip install 'spendtrace[api]'): {exc}")
        return 2
    serve(host=args.host, port=args.port, store=args.store)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``api`` subcommand."""
    p = subparsers.add_parser("api", help="serve the HTTP API and /metrics (SPENDTRACE_API_TOKEN enables auth)")
    add_store_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int_in(0, 65_535), default=8000)
    p.set_defaults(handler=_run)
