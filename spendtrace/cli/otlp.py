"""``spendtrace otlp``: the OpenTelemetry OTLP/HTTP (and gRPC) trace receiver (needs the ``[otlp]`` extra)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from spendtrace.cli._args import int_in
from spendtrace.cli.main import add_store_options
from spendtrace.errors import ConfigError


def _run(args: argparse.Namespace) -> int:
    try:
        from spendtrace.server.otlp import load_rules
        from spendtrace.server.otlp._grpc import GrpcBindError
        from spendtrace.server.otlp.receiver import serve
    except ImportError as exc:
        print(f"spendtrace otlp needs the [otlp] extra (pip install 'spendtrace[otlp]'): {exc}", file=sys.stderr)
        return 2
    bootstrap = args.bootstrap if args.bootstrap is not None else os.environ.get("SPENDTRACE_KAFKA_BOOTSTRAP", "")
    bootstrap = bootstrap.strip()
    topic = args.topic or os.environ.get("SPENDTRACE_TOPIC", "").strip() or "spendtrace.spans"
    if not bootstrap and args.db is None:
        print(f"spendtrace otlp: without a broker it writes a SQLite store; {args.store} is not one "
              "(pass --bootstrap host:port, or --db PATH)", file=sys.stderr)  # fmt: skip
        return 2
    if args.workers > 1 and args.grpc_port == 0:
        print("spendtrace otlp: --workers share one gRPC port; give --grpc-port a number, not 0", file=sys.stderr)
        return 2
    if args.workers > 1 and not bootstrap:
        print("spendtrace otlp: --workers needs a broker (--bootstrap); one process writes a store",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        rules = load_rules(args.rules)
    except ConfigError as exc:
        print(f"spendtrace otlp: {exc}", file=sys.stderr)
        return 2
    try:
        return serve(host=args.host, port=args.port, bootstrap=bootstrap or None, topic=topic, db_path=args.db,
                     rules=rules, partitions=args.partitions, max_pending=args.max_pending, workers=args.workers,
                     compression=None if args.compression == "none" else args.compression,
                     grpc_port=args.grpc_port)  # fmt: skip
    except GrpcBindError as exc:
        print(f"spendtrace otlp: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"spendtrace otlp: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def register(subparsers: Any) -> None:
    """Add the ``otlp`` subcommand."""
    p = subparsers.add_parser(
        "otlp",
        help="receive OpenTelemetry traces (OTLP/HTTP /v1/traces, OTLP/gRPC) and turn them into spend",
        description="Receive OTLP/HTTP trace exports (protobuf or JSON, gzip) on /v1/traces, and OTLP/gRPC with "
        "--grpc-port; publish the spans to "
        "the spans topic (--bootstrap / SPENDTRACE_KAFKA_BOOTSTRAP) or, without a broker, price and write them "
        "into the SQLite store.",
    )
    add_store_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int_in(0, 65_535), default=4318, help="port (default: 4318, OTLP/HTTP's)")
    p.add_argument("--grpc-port", type=int_in(0, 65_535), default=None, metavar="PORT",
                   help="also receive OTLP/gRPC on this port (4317 is OTLP/gRPC's; default: HTTP only)")  # fmt: skip
    p.add_argument(
        "--bootstrap",
        default=None,
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: $SPENDTRACE_KAFKA_BOOTSTRAP; none: write the store)",
    )
    p.add_argument("--topic", default=None, help="spans topic (default: $SPENDTRACE_TOPIC or spendtrace.spans)")
    p.add_argument("--partitions", type=int_in(1, 10_000), default=3, help="partitions when creating the topic")
    p.add_argument("--rules", default=None, metavar="FILE", help="TOML attribution rule file (docs/DEPLOYMENT.md)")
    p.add_argument("--max-pending", type=int_in(1, 10_000_000), default=50_000,
                   help="spans being delivered at once before answering 429 (default: 50000)")  # fmt: skip
    p.add_argument("--workers", type=int_in(1, 256), default=1,
                   help="processes serving the port, each with its own producer (needs --bootstrap; default: 1)")
    p.add_argument("--compression", choices=("zstd", "gzip", "none"), default="zstd",
                   help="record batch compression on the topic (default: zstd, level 1; gzip is level 1)")
    p.set_defaults(handler=_run)
