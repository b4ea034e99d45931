"""Synthetic traffic through the real SDK: a toy shop's requests, recorded and exported to Kafka.

``python -m consumers.demo_traffic --bootstrap HOST:PORT [--rate R] [--requests N]`` records
requests from three tenants across nested features (``api`` → ``search`` → ``product_details``,
``ai_recommendations`` with Bedrock tokens, ``checkout`` with DynamoDB writes and S3 PUTs) and
publishes the spans with the Kafka exporter. ``compose.yaml`` runs it beside the workers.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from collections.abc import Sequence

import spendtrace
from spendtrace import add_api_call, cost_track, track_request

__all__ = ["TENANTS", "build_parser", "main", "one_request"]

TENANTS = ("tenant-acme", "tenant-globex", "tenant-initech")


@cost_track(feature="product_details")
def _product_details(rng: random.Random) -> None:
    add_api_call("dynamodb_read", count=rng.randint(1, 4))
    if rng.random() < 0.3:
        add_api_call("s3_get", count=1)


@cost_track(feature="search")
def _search(rng: random.Random) -> None:
    add_api_call("dynamodb_read", count=rng.randint(2, 6))
    for _ in range(rng.randint(1, 3)):
        _product_details(rng)


@cost_track(feature="ai_recommendations")
def _recommend(rng: random.Random) -> None:
    add_api_call("dynamodb_read", count=1)
    add_api_call("bedrock_claude_3_haiku", input_tokens=rng.randint(200, 2000), output_tokens=rng.randint(50, 400))


@cost_track(feature="checkout")
def _checkout(rng: random.Random) -> None:
    add_api_call("dynamodb_write", count=rng.randint(1, 3))
    add_api_call("s3_put", count=1)


def one_request(rng: random.Random) -> None:
    """Record one request of a random tenant on a random endpoint."""
    tenant = rng.choice(TENANTS)
    endpoint, body = rng.choice(
        (("/api/search", _search), ("/api/recommend", _recommend), ("/api/checkout", _checkout))
    )

    @track_request(endpoint=endpoint, user_id=tenant)
    @cost_track(feature="api")
    def handle() -> None:
        body(rng)

    handle()


def build_parser() -> argparse.ArgumentParser:
    """The command line of the demo traffic generator."""
    p = argparse.ArgumentParser(
        prog="python -m consumers.demo_traffic", description="Record synthetic requests with the SDK."
    )
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka HOST:PORT")
    p.add_argument("--topic", default="spendtrace.spans")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second (default: 50)")
    p.add_argument("--requests", type=int, default=0, help="stop after this many (default: run until stopped)")
    p.add_argument("--seed", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Record requests at ``--rate`` per second (``--requests`` of them, or until SIGINT / SIGTERM)."""
    args = build_parser().parse_args(argv)
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    spendtrace.configure(kafka_bootstrap=args.bootstrap, topic=args.topic)
    rng = random.Random(args.seed)
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    sent = 0
    next_at = time.monotonic()
    try:
        while not stop and (args.requests <= 0 or sent < args.requests):
            one_request(rng)
            sent += 1
            if sent % 1000 == 0:
                print(f"demo traffic: {sent} requests recorded", file=sys.stderr, flush=True)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        spendtrace.flush()
        spendtrace.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"demo traffic: {sent} requests recorded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
