"""Helpers for the OTLP tests: literal-rate arithmetic, real instrumented clients, raw HTTP posts."""

from __future__ import annotations

import asyncio
import glob
import gzip
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import boto3
import httpx2
import openai
from botocore.stub import Stubber
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from spendtrace.schema import Span, decode_span
from spendtrace.server.otlp.receiver import StoreSink

#: Rates per 1M tokens / per request, from the providers' public pages, never from the price book.
OPENAI_PRICING = "https://platform.openai.com/docs/pricing"  # gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out
GPT_4O_MINI = {"input": "0.15", "cache_read": "0.075", "output": "0.60"}
DYNAMODB_PRICING = "https://aws.amazon.com/dynamodb/pricing/on-demand/"  # since 2024-11-01
DYNAMODB_RRU, DYNAMODB_WRU = "0.125", "0.625"  # USD per million read / write request units
S3_PRICING = "https://aws.amazon.com/s3/pricing/"  # S3 Standard, us-east-1
S3_PUT_PER_1000 = "0.005"
SQS_PRICING = "https://aws.amazon.com/sqs/pricing/"  # standard queues
SQS_PER_MILLION = "0.40"


def nano(*pairs: tuple[float | int, str], per: int = 1_000_000) -> int:
    """Nano-dollars of (units, USD per ``per`` units) pairs, rounded once, half to even (one usage item)."""
    usd_e9 = sum((Decimal(str(n)) * Decimal(rate) / per * 10**9 for n, rate in pairs), Decimal(0))
    return int(usd_e9.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@contextmanager
def instrumented(provider: TracerProvider) -> Iterator[None]:
    """The real botocore and openai-v2 OpenTelemetry instrumentations, exporting through ``provider``."""
    BotocoreInstrumentor().instrument(tracer_provider=provider)
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    try:
        yield
    finally:
        OpenAIInstrumentor().uninstrument()
        BotocoreInstrumentor().uninstrument()


def openai_client(model: str, prompt: int, completion: int) -> openai.OpenAI:
    """An OpenAI client whose HTTP transport answers every chat completion with this usage."""
    doc = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion}}  # fmt: skip
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=doc))
    return openai.OpenAI(api_key="test", http_client=httpx2.Client(transport=transport))


def aws(service: str) -> Any:
    """A real boto3 client (fake credentials; Stubber answers it)."""
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")


def shop_calls(provider: TracerProvider, tenant: str, i: int = 0, *, baggage: bool = True) -> int:
    """One request of a small shop under ``provider``: a chat completion, DynamoDB, S3 and SQS calls.

    With ``baggage`` the tenant and feature travel as OTel baggage (so every span carries them);
    without, they are attributes of the request's root and feature spans only. Returns the
    nano-dollars the request costs at the providers' published rates (see conftest), computed here.
    """
    from opentelemetry import baggage as otel_baggage
    from opentelemetry import context

    tracer = provider.get_tracer("shop")
    prompt, completion = 1200 + i, 80 + i % 7
    rcu, wcu = 0.5 * (1 + i % 3), 2.0
    ddb, s3, sqs = aws("dynamodb"), aws("s3"), aws("sqs")
    root_attrs = {"http.route": "/recommend", "enduser.id": tenant}
    token = None
    if baggage:
        ctx = otel_baggage.set_baggage("enduser.id", tenant)
        ctx = otel_baggage.set_baggage("spendtrace.feature", "recommendations", ctx)
        token = context.attach(ctx)
    try:
        _calls(tracer, root_attrs, prompt, completion, rcu, wcu, ddb, s3, sqs)
    finally:
        if token is not None:
            context.detach(token)
    return (
        nano((prompt, GPT_4O_MINI["input"]), (completion, GPT_4O_MINI["output"]))
        + nano((rcu, DYNAMODB_RRU)) + nano((wcu, DYNAMODB_WRU))
        + nano((1, S3_PUT_PER_1000), per=1000) + nano((1, SQS_PER_MILLION))
    )  # fmt: skip


def _calls(tracer: Any, root_attrs: dict[str, str], prompt: int, completion: int, rcu: float, wcu: float,
           ddb: Any, s3: Any, sqs: Any) -> None:  # fmt: skip
    with (
        Stubber(ddb) as ddb_stub, Stubber(s3) as s3_stub, Stubber(sqs) as sqs_stub,
        tracer.start_as_current_span("GET /recommend", attributes=root_attrs),
        tracer.start_as_current_span("recommend", attributes={"spendtrace.feature": "recommendations"}),
    ):  # fmt: skip
        openai_client("gpt-4o-mini-2024-07-18", prompt, completion).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        consumed = {"TableName": "products", "CapacityUnits": rcu}
        ddb_stub.add_response("get_item", {"Item": {"id": {"S": "1"}}, "ConsumedCapacity": consumed})
        ddb.get_item(TableName="products", Key={"id": {"S": "1"}}, ReturnConsumedCapacity="TOTAL")
        ddb_stub.add_response("put_item", {"ConsumedCapacity": {"TableName": "carts", "CapacityUnits": wcu}})
        ddb.put_item(TableName="carts", Item={"id": {"S": "1"}}, ReturnConsumedCapacity="TOTAL")
        s3_stub.add_response("put_object", {"ETag": '"x"'})
        s3.put_object(Bucket="b", Key="k", Body=b"data")
        sqs_stub.add_response("send_message", {"MessageId": "m", "MD5OfMessageBody": "x"})
        sqs.send_message(QueueUrl="https://sqs.us-east-1.amazonaws.com/1/q", MessageBody="hello")


def post(url: str, body: bytes, content_type: str, *, gzip_it: bool = False) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` and return (status, headers, body), error statuses included."""
    headers = {"Content-Type": content_type}
    if gzip_it:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def json_export(spans: list[dict[str, Any]], service: str = "svc") -> bytes:
    """An OTLP/JSON export of ``spans`` from one resource."""
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}).encode()


def topic_span_ids(bootstrap: str, topic: str, partitions: int = 3) -> list[str]:
    """Every span id on the topic, read up to the end offsets (the topic is complete once every export had its 200)."""

    async def run() -> list[str]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            ids: list[str] = []
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    ids.extend(decode_span(m.value).span_id for m in msgs)
            return ids
        finally:
            await consumer.stop()

    return asyncio.run(run())


@contextmanager
def frozen(pid: int, timeout: float = 10.0) -> Iterator[None]:
    """Process ``pid`` stopped (SIGSTOP) for the block, every one of its threads, then continued.

    ``kill`` returns before the stop has reached every thread: one thread takes the signal and then
    stops the others, and on a loaded machine the broker's other threads went on serving for up to
    100 ms (200 tries at nice 19 beside two suites: some thread still running right after ``kill`` in
    64, the last one stopped after 0.6 ms median, 103 ms at most). So wait until ``/proc`` shows every
    thread stopped; an export sent before that could still be acknowledged.
    """
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for stat in glob.glob(f"/proc/{pid}/task/*/stat"):
                try:
                    with open(stat) as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except OSError:  # a thread that ended meanwhile
                    continue
            if states and all(state in "Tt" for state in states):
                break
            assert time.monotonic() < deadline, f"process {pid} not stopped after {timeout} s: {states}"
            time.sleep(0.001)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


class GatedSink:
    """A real StoreSink that waits for the test's go-ahead before each delivery (to hold spans in flight)."""

    def __init__(self, db_path: Path) -> None:
        self.inner = StoreSink(db_path)
        self.entered = threading.Event()
        self.go = threading.Event()

    async def publish(self, spans: Sequence[Span]) -> None:
        self.entered.set()
        await asyncio.to_thread(self.go.wait)
        await self.inner.publish(spans)

    async def close(self) -> None:
        await self.inner.close()


def dead_broker() -> str:
    """A loopback address nobody listens on (a port bound and released), for a broker that is down."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"
