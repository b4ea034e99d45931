"""What does auto-instrumentation add to an SDK call? Instrumented vs plain calls, in the same run.

Run: ``python benchmarks/bench_instrument.py [--calls N] [--repeats R]``

Each case is a real SDK call answered locally (botocore's Stubber for DynamoDB GetItem, an httpx
MockTransport for an OpenAI chat completion), made inside a ``track`` scope, with and without
``auto_instrument()``. Rounds are interleaved and the best round of each case is kept (the least
disturbed by other processes). Printed: µs per call, the added µs, and the ratio to the plain call.
Also printed: what ``auto_instrument()`` itself costs with the process's current heap (the one-time
scan for boto3 clients made before it).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import boto3
import httpx2
import openai
from botocore.stub import Stubber

import spendtrace
from spendtrace.sdk import pipeline as _pipeline
from spendtrace.sdk.instrument import auto_instrument, uninstrument

CHAT = {
    "id": "c",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}


def dynamodb_case(calls: int) -> Callable[[], float]:
    """GetItem through a real client and Stubber, ``calls`` times per round."""
    ddb = boto3.client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )  # fmt: skip
    response = {"Item": {"pk": {"S": "a"}}, "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 0.5}}

    def run() -> float:
        with Stubber(ddb) as stub:
            for _ in range(calls):
                stub.add_response("get_item", response)
            t0 = time.perf_counter_ns()
            with spendtrace.track(feature="bench"):
                for _ in range(calls):
                    ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
            return (time.perf_counter_ns() - t0) / calls / 1000

    return run


def openai_case(calls: int) -> Callable[[], float]:
    """chat.completions.create through a real client and an httpx MockTransport."""
    client = openai.OpenAI(
        api_key="x",
        http_client=httpx2.Client(transport=httpx2.MockTransport(lambda r: httpx2.Response(200, json=CHAT))),
    )

    def run() -> float:
        t0 = time.perf_counter_ns()
        with spendtrace.track(feature="bench"):
            for _ in range(calls):
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        return (time.perf_counter_ns() - t0) / calls / 1000

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    kept: list[Any] = []
    _pipeline.set_sink(lambda span: kept.clear())  # discard spans: we measure recording, not export

    t0 = time.perf_counter()
    auto_instrument()
    first = time.perf_counter() - t0
    uninstrument()
    t0 = time.perf_counter()
    auto_instrument()
    again = time.perf_counter() - t0
    uninstrument()
    print(f"auto_instrument(): first call {first * 1000:.1f} ms (imports botocore), later {again * 1000:.1f} ms "
          f"with {len(gc.get_objects()):,} objects on the heap")  # fmt: skip

    cases = {"dynamodb get_item": dynamodb_case(args.calls), "openai chat.create": openai_case(args.calls)}
    best: dict[tuple[str, bool], float] = {}
    for run in cases.values():
        run()  # warm up
    for _ in range(args.repeats):
        for on in (False, True):
            if on:
                auto_instrument()
            for name, run in cases.items():
                us = run()
                best[(name, on)] = min(best.get((name, on), us), us)
            if on:
                uninstrument()
    print(f"{'case':<22}{'plain µs':>10}{'instr. µs':>11}{'added µs':>10}{'ratio':>8}")
    for name in cases:
        plain, inst = best[(name, False)], best[(name, True)]
        print(f"{name:<22}{plain:>10.1f}{inst:>11.1f}{inst - plain:>10.1f}{inst / plain:>8.3f}")


if __name__ == "__main__":
    main()
