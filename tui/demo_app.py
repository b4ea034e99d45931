"""The demo's synthetic shop: the real SDK, auto-instrumented real clients, answered offline.

boto3 DynamoDB, S3 and Bedrock clients are answered by botocore's ``Stubber`` (so the real
botocore event path, and our instrumentation hooks, run); OpenAI and Anthropic clients (when
installed) are answered by an in-process HTTP ``MockTransport``. Three tenants, nested features,
some failing calls, and after ``--spike-after`` seconds a burst of large Bedrock calls on one
tenant, which trips the demo's alert rule. Run as ``python -m tui.demo_app --bootstrap HOST:PORT``.

With ``--history-days N`` it first records N days of past traffic the same way (see ``record_history``),
so Trends, the daily rollups and reconciliation have weeks to show rather than one afternoon.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spendtrace import InMemoryExporter
    from spendtrace.schema import Span

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


#: Each recorded history request stands for this many (its spans' ``weight``, as a 1/1000 sample would):
#: a few thousand recorded requests make weeks of a shop doing ~1-2 requests a second.
HISTORY_WEIGHT = 1000.0
#: Recorded history requests in the busiest hour of a weekday; quieter hours and weekends get fewer.
HISTORY_PEAK_PER_HOUR = 8
HOUR_S = 3600
#: The past spike: this many recorded spiking requests in each of two hours, each standing for 100
#: (a spike day comes out at a few times a normal day rather than dwarfing the whole chart).
SPIKE_PER_HOUR = 4
SPIKE_WEIGHT = 100.0


def hourly_factor(hour_start_s: int) -> float:
    """Traffic of the hour starting at ``hour_start_s`` (UTC) relative to a weekday's busiest hour.

    A working-day curve (quiet at night, peaking mid-afternoon UTC) and weekends at 40%.
    """
    import math

    day, hour = divmod(hour_start_s // HOUR_S, 24)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    diurnal = 0.15 + 0.85 * max(0.0, math.sin(math.pi * (hour - 5) / 18)) if 5 <= hour <= 23 else 0.15
    return diurnal * (0.4 if weekday >= 5 else 1.0)


def record_history(
    shop: Shop, exporter: InMemoryExporter, days: int, *, now_s: int, spike_days_ago: int | None = None
) -> list[Span]:
    """Record ``days`` of past shop traffic with the real SDK, dated into the past; the spans, oldest first.

    The SDK must be configured with ``exporter``, read and cleared after each hour. Each hour from ``days`` ago up
    to an hour before ``now_s`` gets ``HISTORY_PEAK_PER_HOUR x hourly_factor`` requests (the weekly
    pattern); each request's spans keep their relative timing and are moved to a random moment of that
    hour, with ``HISTORY_WEIGHT``. ``spike_days_ago`` (default: 9, or the oldest day) has the live
    demo's Bedrock spike on one tenant for two afternoon hours. History stops an hour before now so the
    live demo's hourly alert rule is tripped by the live spike, not by the past.
    """
    rng = shop.rng
    spike_day = (min(9, days - 1) if spike_days_ago is None else spike_days_ago) if days > 0 else -1
    today = now_s - now_s % 86_400
    spans: list[Span] = []
    for hour_start in range(today - days * 86_400, now_s - 2 * HOUR_S + 1, HOUR_S):  # every hour ends >= 1 h ago
        n = round(HISTORY_PEAK_PER_HOUR * hourly_factor(hour_start) * rng.uniform(0.7, 1.3))
        spans += _record_hour(shop, exporter, hour_start, [False] * n, HISTORY_WEIGHT)
        days_ago = (today - (hour_start - hour_start % 86_400)) // 86_400
        if days_ago == spike_day and (hour_start % 86_400) // HOUR_S in (14, 15):
            spans += _record_hour(shop, exporter, hour_start, [True] * SPIKE_PER_HOUR, SPIKE_WEIGHT)
    spans.sort(key=lambda s: s.start_ns)
    return spans


def _record_hour(
    shop: Shop, exporter: InMemoryExporter, hour_start: int, spiking: list[bool], weight: float
) -> list[Span]:
    """Record one request per entry of ``spiking`` now, then move each request's spans into that hour."""
    import msgspec

    import spendtrace

    for spike in spiking:
        make_request(shop, spike)()
    spendtrace.flush()
    by_request: dict[str, list[Span]] = defaultdict(list)
    for span in exporter.spans:
        by_request[span.request_id].append(span)
    exporter.clear()
    out: list[Span] = []
    for tree in by_request.values():
        at_ns = int((hour_start + shop.rng.uniform(0, HOUR_S - 60)) * 1_000_000_000)
        shift = min(s.start_ns for s in tree) - at_ns
        out += [msgspec.structs.replace(s, start_ns=s.start_ns - shift, weight=weight) for s in tree]
    return out


#: How the demo's AWS bill differs from the model, per service: what a real bill adds that usage
#: records cannot see (DynamoDB storage and backups, S3 storage). Bedrock tokens are billed as modelled.
BILL_FACTORS = {"dynamodb": "1.08", "s3": "1.15", "bedrock": "1.00"}
#: Daily charges of services the demo app never records (the report lists them as not modelled).
UNMODELLED_DAILY = {"Amazon CloudWatch": "1.20"}


def history_bill(spans: Sequence[Span], *, now_s: int) -> dict[str, Any]:
    """A Cost Explorer ``GetCostAndUsage`` response (DAILY, grouped by SERVICE) for the AWS part of ``spans``.

    Each day's modelled AWS spend per service (priced by the workers' price book) times
    ``BILL_FACTORS``, plus ``UNMODELLED_DAILY``; today is marked ``Estimated`` as Cost Explorer does.
    The demo's Reconciliation screen then shows a real gap to explain (``spendtrace demo``).
    """
    import datetime as dt
    from decimal import Decimal

    from spendtrace.server.ingest.prepare import prepare_batch
    from spendtrace.server.pricing import current_book
    from spendtrace.server.reconcile.costexplorer import CE_SERVICE_MAP

    ce_name = {ours: theirs for theirs, ours in CE_SERVICE_MAP.items()}
    per_day: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for (bucket, _f, _u, _e, service), values in prepare_batch(spans, current_book()).rollups["day"].items():
        if service in BILL_FACTORS:
            day = dt.datetime.fromtimestamp(bucket, dt.UTC).date().isoformat()
            per_day[day][ce_name[service]] += Decimal(values[0]) / 10**9 * Decimal(BILL_FACTORS[service])
    today = dt.datetime.fromtimestamp(now_s, dt.UTC).date()
    results = []
    for day in sorted(per_day):
        amounts = dict(per_day[day]) | {name: Decimal(v) for name, v in UNMODELLED_DAILY.items()}
        end = dt.date.fromisoformat(day) + dt.timedelta(days=1)
        results.append({
            "TimePeriod": {"Start": day, "End": end.isoformat()},
            "Total": {},
            "Groups": [{"Keys": [name], "Metrics": {"UnblendedCost": {"Amount": f"{amount:.10f}", "Unit": "USD"}}}
                       for name, amount in sorted(amounts.items())],
            "Estimated": day == today.isoformat(),
        })  # fmt: skip
    return {"GroupDefinitions": [{"Type": "DIMENSION", "Key": "SERVICE"}], "ResultsByTime": results,
            "DimensionValueAttributes": []}  # fmt: skip


def send_history(spans: Sequence[Span], bootstrap: str, topic: str, *, chunk: int = 500) -> None:
    """Publish history spans to the spans topic with the SDK's Kafka exporter (each chunk acknowledged)."""
    from spendtrace import KafkaExporter

    exporter = KafkaExporter(bootstrap, topic)
    try:
        for i in range(0, len(spans), chunk):
            exporter.export(spans[i : i + chunk])
    finally:
        exporter.shutdown()


def build_parser() -> argparse.ArgumentParser:
    """Command line of the demo app."""
    p = argparse.ArgumentParser(prog="python -m tui.demo_app", description="Synthetic instrumented shop traffic.")
    p.add_argument("--bootstrap", required=True, help="Kafka HOST:PORT")
    p.add_argument("--topic", default="spendtrace.spans")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    p.add_argument("--spike-after", type=float, default=20.0, help="seconds before the cost spike (default 20)")
    p.add_argument("--spike-for", type=float, default=15.0, help="how long the spike lasts (default 15)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--history-days", type=int, default=0,
                   help="first record this many days of past traffic (weekly pattern, one past spike)")
    p.add_argument("--bill-out", default=None, metavar="PATH",
                   help="write a Cost Explorer response for the history's AWS spend here (for Reconciliation)")
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
    spendtrace.auto_instrument()
    shop = Shop(random.Random(args.seed))
    if args.history_days > 0:
        memory = spendtrace.InMemoryExporter()
        spendtrace.configure(exporter=memory)
        history = record_history(shop, memory, args.history_days, now_s=int(time.time()))
        send_history(history, args.bootstrap, args.topic)
        if args.bill_out:
            bill = history_bill(history, now_s=int(time.time()))
            tmp = f"{args.bill_out}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(bill, fh, indent=1)
            os.replace(tmp, args.bill_out)  # the TUI never reads half a file
        print(f"demo app: {len(history)} history spans over {args.history_days} days sent", file=sys.stderr)
    spendtrace.configure(kafka_bootstrap=args.bootstrap, topic=args.topic)
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
