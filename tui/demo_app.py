"""The demo's synthetic shop: the real SDK, auto-instrumented real clients, answered offline.

boto3 DynamoDB, S3 and Bedrock clients are answered by botocore's ``Stubber`` (so the real
botocore event path, and our instrumentation hooks, run); OpenAI and Anthropic clients (when
installed) are answered by an in-process HTTP ``MockTransport``. Three tenants, nested features,
some failing calls, and after ``--spike-after`` seconds a burst of large Bedrock calls on one
tenant, which trips the demo's alert rule. Run as ``python -m tui.demo_app --bootstrap HOST:PORT``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

TENANTS = ("tenant-acme", "tenant-globex", "tenant-initech")
SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


class Shop:
    """Instrumented clients plus the features of a small shop that call them."""

    def __init__(self, rng: random.Random) -> None:
        import boto3
        from botocore.stub import Stubber

        self.rng = rng
        session = boto3.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name="us-east-1")
        self.ddb = session.client("dynamodb")
        self.s3 = session.client("s3")
        self.brt = session.client("bedrock-runtime")
        self.stubs = {c: Stubber(c) for c in (self.ddb, self.s3, self.brt)}
        for stub in self.stubs.values():
            stub.activate()
        self.openai = _openai_client(rng)
        self.anthropic = _anthropic_client(rng)

    def _answer(self, client: Any, method: str, response: dict[str, Any]) -> None:
        self.stubs[client].add_response(method, response)

    def _fail(self, client: Any, method: str, code: str) -> None:
        self.stubs[client].add_client_error(method, service_error_code=code, http_status_code=400)

    def get_item(self) -> None:
        units = self.rng.choice((0.5, 1.0, 2.0))
        self._answer(self.ddb, "get_item", {"Item": {"pk": {"S": "p"}}, "ConsumedCapacity": {"TableName": "products",
                                                                                              "CapacityUnits": units}})
        self.ddb.get_item(TableName="products", Key={"pk": {"S": "p"}})

    def put_item(self) -> None:
        self._answer(self.ddb, "put_item", {"ConsumedCapacity": {"TableName": "orders", "CapacityUnits": 2.0}})
        self.ddb.put_item(TableName="orders", Item={"pk": {"S": "o"}})

    def s3_get(self) -> None:
        self._answer(self.s3, "get_object", {"Body": _body(b"x" * 64), "ContentLength": 64})
        self.s3.get_object(Bucket="assets", Key="k")["Body"].read()

    def s3_put(self) -> None:
        self._answer(self.s3, "put_object", {"ETag": '"e"'})
        self.s3.put_object(Bucket="receipts", Key="r", Body=b"receipt")

    def bedrock(self, model: str, tokens_in: int, tokens_out: int, fail: bool = False) -> None:
        if fail:
            self._fail(self.brt, "invoke_model", "ThrottlingException")
        else:
            doc = {"type": "message", "content": [{"type": "text", "text": "ok"}],
                   "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}
            self._answer(self.brt, "invoke_model", {"body": _body(json.dumps(doc).encode()),
                                                    "contentType": "application/json"})
        self.brt.invoke_model(modelId=model, body=b"{}")


def _body(data: bytes) -> Any:
    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


def _transport_module() -> Any:
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx  # type: ignore[no-redef]
    return httpx


def _openai_client(rng: random.Random) -> Any | None:
    try:
        import openai
    except ImportError:
        return None
    httpx = _transport_module()

    def answer(request: Any) -> Any:
        usage = {"prompt_tokens": rng.randint(300, 1500), "completion_tokens": rng.randint(20, 200)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return httpx.Response(200, json={
            "id": "chatcmpl-demo", "object": "chat.completion", "created": 1_760_000_000, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop",
                         "logprobs": None}], "usage": usage})

    try:
        return openai.OpenAI(api_key="demo", http_client=httpx.Client(transport=httpx.MockTransport(answer)))
    except Exception:  # a client version this demo does not know how to fake: leave OpenAI out
        return None


def _anthropic_client(rng: random.Random) -> Any | None:
    try:
        import anthropic
    except ImportError:
        return None
    httpx = _transport_module()

    def answer(request: Any) -> Any:
        return httpx.Response(200, json={
            "id": "msg_demo", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": rng.randint(200, 1200), "output_tokens": rng.randint(20, 300)}})

    try:
        return anthropic.Anthropic(api_key="demo", http_client=httpx.Client(transport=httpx.MockTransport(answer)))
    except Exception:
        return None


def make_request(shop: Shop, spiking: bool) -> Callable[[], None]:
    """One request of a random tenant on a random endpoint, as nested tracked features."""
    import spendtrace
    from spendtrace import cost_track, track_request

    rng = shop.rng
    tenant = "tenant-globex" if spiking and rng.random() < 0.7 else rng.choice(TENANTS)

    @cost_track(feature="product_details")
    def product_details() -> None:
        shop.get_item()
        if rng.random() < 0.3:
            shop.s3_get()

    @cost_track(feature="search")
    def search() -> None:
        shop.get_item()
        for _ in range(rng.randint(1, 3)):
            product_details()

    @cost_track(feature="ai_recommendations")
    def recommend() -> None:
        shop.get_item()
        if spiking:
            shop.bedrock(SONNET, rng.randint(20_000, 60_000), rng.randint(2_000, 6_000))
        else:
            shop.bedrock(HAIKU, rng.randint(200, 2000), rng.randint(50, 400), fail=rng.random() < 0.05)

    @cost_track(feature="support_chat")
    def support() -> None:
        if shop.openai is not None:
            shop.openai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        if shop.anthropic is not None:
            shop.anthropic.messages.create(model="claude-3-5-haiku-20241022", max_tokens=100,
                                           messages=[{"role": "user", "content": "hi"}])

    @cost_track(feature="checkout")
    def checkout() -> None:
        shop.put_item()
        shop.s3_put()
        if rng.random() < 0.08:
            raise RuntimeError("payment declined")

    endpoint, body = rng.choice((("/api/search", search), ("/api/search", search), ("/api/recommend", recommend),
                                 ("/api/support", support), ("/api/checkout", checkout)))
    if spiking and rng.random() < 0.6:
        endpoint, body = "/api/recommend", recommend

    @track_request(endpoint=endpoint, user_id=tenant)
    @cost_track(feature="api")
    def handle() -> None:
        with contextlib.suppress(Exception):  # the app handles its errors; the span recorded the failure
            body()

    del spendtrace
    return handle


def build_parser() -> argparse.ArgumentParser:
    """Command line of the demo app."""
    p = argparse.ArgumentParser(prog="python -m tui.demo_app", description="Synthetic instrumented shop traffic.")
    p.add_argument("--bootstrap", required=True, help="Kafka HOST:PORT")
    p.add_argument("--topic", default="spendtrace.spans")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    p.add_argument("--spike-after", type=float, default=20.0, help="seconds before the cost spike (default 20)")
    p.add_argument("--spike-for", type=float, default=15.0, help="how long the spike lasts (default 15)")
    p.add_argument("--seed", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Record requests until SIGINT / SIGTERM."""
    import spendtrace

    args = build_parser().parse_args(argv)
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    spendtrace.configure(kafka_bootstrap=args.bootstrap, topic=args.topic)
    spendtrace.auto_instrument()
    shop = Shop(random.Random(args.seed))
    started = time.monotonic()
    next_at = started
    sent = 0
    try:
        while not stop:
            age = time.monotonic() - started
            spiking = args.spike_after <= age < args.spike_after + args.spike_for
            make_request(shop, spiking)()
            sent += 1
            next_at += 1.0 / args.rate
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        spendtrace.flush()
        spendtrace.shutdown()
    print(f"demo app: {sent} requests recorded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
