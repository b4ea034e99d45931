"""OTLP in: spans/s through ``spendtrace otlp`` to the spans topic, beside a bare decode of the same payloads.

Payloads are real OTLP/HTTP protobuf bodies: spans made by the OpenTelemetry SDK (a request root with
``http.route`` / ``enduser.id``, a feature span, a GenAI chat span and two DynamoDB spans with consumed
capacity), encoded by the OTLP exporter's own encoder, 500 spans per export (the SDK's batch size is 512).

References, same run, same payloads: ``ExportTraceServiceRequest.ParseFromString`` alone, and the same
plus reading every span's attributes into Python values (the least any reader of the spans must do;
a plain loop kept here, so making the receiver's own reading faster does not move the reference).
The target ratio divides by the second. It reads the attributes only, not each span's ids, name,
times and status, which a converter must also read: ``parse + read every field`` adds those (about
0.4 µs/span more), printed beside it so the stricter reference is in view; the ratio keeps its
denominator so figures compare with earlier runs.

Where the receiver's time goes: the CPU time per span of each stage, run alone in this process on
the same payloads (parse, convert as the receiver does it, with the C reader on the body, and beside
it from upb's objects; encode + partition hash, record batches + zstd at the sink's level, and
beside them aiokafka's builder, gzip at level 1 and at aiokafka's 9), and the rest of the receiver
process's CPU per span (HTTP, the event loop, the producer's sends) as the difference. The
reference reads upb's objects from Python, as any Python reader of the decoded export does; the
receiver's own reader is C (``spendtrace/server/otlp/_c/wire.c``) and still has upb parse, so check,
each body first. The reference's CPU time
per span over the receiver's is the ratio per core: on a shared machine, steadier than the spans/s one.
The receiver path is ``spendtrace otlp`` in its own process, as deployed: HTTP + gzip-less protobuf
decode + conversion + msgpack + zstd record batches + aiokafka produce with ``acks=all`` to a real
broker (Tansu), posted by ``--clients`` concurrent keep-alive connections from this process (the
three processes share the machine's two cores). Its CPU time per span is read from /proc, a steadier
figure than spans/s.
``--compare DIR`` runs the receiver of another checkout (e.g. ``git worktree add DIR main``) on the
same broker and payloads, alternating with this one, for before/after figures from one run.

End-to-end latency: one request (5 spans) posted at a time, timed until a consumer worker has
committed its spans to SQLite (``--latency-rounds`` times; median and p95).

    python benchmarks/bench_otlp.py [--spans 20000] [--clients 4] [--latency-rounds 30] [--compare DIR]
        [--variant '--workers 2'] [--variant grpc]      # 'grpc': the same exports over OTLP/gRPC
    python benchmarks/bench_otlp.py --latency-only --fetch-wait 500 --fetch-wait 100 [--rounds 2] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendtrace.server.broker import EmbeddedBroker, free_port
from spendtrace.server.otlp import convert
from spendtrace.server.otlp.receiver import KafkaSink, Receiver
from spendtrace.server.store.base import open_store

PER_EXPORT = 500


def make_payloads(n_spans: int) -> list[bytes]:
    """Protobuf export bodies of about ``n_spans`` spans, 5 per request, ``PER_EXPORT`` per body."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bench")
    chat = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.output_tokens": 80}  # fmt: skip
    for i in range(n_spans // 5):
        root = {"http.route": "/recommend", "enduser.id": f"tenant-{i % 50}"}
        with (
            tracer.start_as_current_span("GET /recommend", attributes=root),
            tracer.start_as_current_span("recommend", attributes={"spendtrace.feature": "recommendations"}),
        ):
            usage = {**chat, "gen_ai.usage.input_tokens": 1200 + i % 100}
            with tracer.start_as_current_span("chat gpt-4o-mini", attributes=usage):
                pass
            for op in ("GetItem", "Query"):
                ddb = {"rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": op,
                       "aws.dynamodb.consumed_capacity": ('{"TableName": "t", "CapacityUnits": 1.5}',)}  # fmt: skip
                with tracer.start_as_current_span(f"DynamoDB.{op}", attributes=ddb):
                    pass
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return [encode_spans(spans[i : i + PER_EXPORT]).SerializeToString() for i in range(0, len(spans), PER_EXPORT)]


def bare_parse(payloads: list[bytes]) -> float:
    t = time.perf_counter()
    n = 0
    for body in payloads:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        n += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    return n / (time.perf_counter() - t)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    """Every attribute as a Python value: the reference reader (the receiver's first version of it)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        out[kv.key] = getattr(v, kind) if kind == "string_value" or kind == "int_value" else _value(v)
    return out


def bare_read(payloads: list[bytes]) -> float:
    t = time.perf_counter()
    n = 0
    for body in payloads:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attributes(span.attributes)
                    n += 1
    return n / (time.perf_counter() - t)


def bare_read_all(payloads: list[bytes]) -> float:
    """Parse + every attribute + each span's ids, name, times and status (what any converter reads)."""
    t = time.perf_counter()
    n = 0
    for body in payloads:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attributes(span.attributes)
                    span.trace_id, span.span_id, span.parent_span_id, span.name  # noqa: B018
                    span.start_time_unix_nano, span.end_time_unix_nano, span.status.code  # noqa: B018
                    n += 1
    return n / (time.perf_counter() - t)


def stages(payloads: list[bytes], rounds: int = 5) -> dict[str, float]:
    """CPU µs per span of each stage of the receiver's work, alone, best of ``rounds`` (process time, steadier
    than wall time on a shared machine)."""
    from aiokafka.producer.message_accumulator import BatchBuilder

    from spendtrace.schema import encode_span
    from spendtrace.server.otlp.receiver import _HEADER, _murmur2, _wire, compress_batch, record_batch

    n = sum(len(ExportTraceServiceRequest.FromString(p).resource_spans[0].scope_spans[0].spans) for p in payloads)
    requests = [ExportTraceServiceRequest.FromString(p) for p in payloads]
    spans = [convert(r).spans for r in requests]
    records = [[(s.request_id.encode(), encode_span(s)) for s in batch] for batch in spans]

    def parse() -> None:
        for p in payloads:
            ExportTraceServiceRequest.FromString(p)

    def conv() -> None:  # as the receiver does: parsed (so checked) by upb, read from the bytes by the C reader
        for p in payloads:
            convert(ExportTraceServiceRequest.FromString(p), body=p)

    def conv_upb() -> None:  # reading upb's objects (JSON bodies; an install without the C reader)
        for r in [ExportTraceServiceRequest.FromString(p) for p in payloads]:  # fresh: upb caches what was read
            convert(r)

    def encode() -> None:
        hashes: dict[bytes, int] = {}
        for batch in spans:
            for s in batch:
                key = s.request_id.encode()
                if key not in hashes:
                    hashes[key] = _murmur2(key)
                encode_span(s)

    def batches(codec: str, level: int) -> None:  # as the sink does: records in C, header and compression here
        if _wire is None:
            return aiokafka_batches(codec, level)
        for recs in records:
            for body, count in _wire.records(recs, 512 * 1024 - _HEADER.size):
                record_batch(body, count, 0, codec, level)

    def aiokafka_batches(codec: str, level: int) -> None:  # without the C part: aiokafka's builder, a call a record
        for recs in records:
            b = BatchBuilder(512 * 1024, 0)
            for k, v in recs:
                b.append(timestamp=None, key=k, value=v)
            compress_batch(b._build(), codec, level)

    def best(f: Any) -> float:
        out = float("inf")
        for _ in range(rounds):
            t = time.process_time()
            f()
            out = min(out, time.process_time() - t)
        return out / n * 1e6

    def read() -> None:
        bare_read(payloads)

    parsed = best(parse)
    return {"(reference: parse + read)": best(read), "parse": parsed, "convert": best(conv) - parsed,
            "(convert from upb's objects)": best(conv_upb) - parsed,
            "encode + partition hash": best(encode),
            "batches + zstd level 1": best(lambda: batches("zstd", 1)),
            "(aiokafka batches + zstd)": best(lambda: aiokafka_batches("zstd", 1)),
            "(batches + gzip level 1)": best(lambda: batches("gzip", 1)),
            "(batches + gzip level 9)": best(lambda: batches("gzip", 9))}  # fmt: skip


def convert_only(payloads: list[bytes]) -> float:
    t = time.perf_counter()
    n = 0
    for body in payloads:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        n += len(convert(req, body=body).spans)
    return n / (time.perf_counter() - t)


def bare_produce(bootstrap: str, payloads: list[bytes]) -> float:
    """A bare aiokafka producer (same acks, zstd, linger) sending the already encoded spans, one batch per export."""
    from aiokafka import AIOKafkaProducer

    from spendtrace.schema import encode_span
    from spendtrace.server.topics import ensure_topics

    batches = [[(s.request_id.encode(), encode_span(s)) for s in convert(ExportTraceServiceRequest.FromString(b)).spans]
               for b in payloads]  # fmt: skip

    async def run() -> float:
        topic = f"bench-otlp-bare-{time.time_ns()}"
        await ensure_topics(bootstrap, [topic], partitions=3)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, compression_type="zstd")
        await producer.start()
        try:
            t = time.perf_counter()
            for batch in batches:
                futures = [await producer.send(topic, v, key=k) for k, v in batch]
                await asyncio.gather(*futures)
            return sum(map(len, batches)) / (time.perf_counter() - t)
        finally:
            await producer.stop()

    return asyncio.run(run())


def publish_only(bootstrap: str, payloads: list[bytes]) -> float:
    """Parse + convert + KafkaSink.publish (acks=all), no HTTP: the receiver's work minus the server."""

    async def run() -> float:
        sink = KafkaSink(bootstrap, f"bench-otlp-direct-{time.time_ns()}", partitions=3)
        first = payloads[0]
        await sink.publish(convert(ExportTraceServiceRequest.FromString(first), body=first).spans)  # warm-up
        t = time.perf_counter()
        n = 0
        for body in payloads:
            spans = convert(ExportTraceServiceRequest.FromString(body), body=body).spans
            await sink.publish(spans)
            n += len(spans)
        elapsed = time.perf_counter() - t
        await sink.close()
        return n / elapsed

    return asyncio.run(run())


def _clients(run: Any, chunks: list[list[bytes]], errors: list[str], payloads: list[bytes]) -> float:
    """Run ``run`` over each chunk in a thread of its own; spans/s from the first send to the last answer."""
    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise SystemExit(f"receiver answered {errors[:5]}")
    return sum(len(ExportTraceServiceRequest.FromString(p).resource_spans[0].scope_spans[0].spans)
               for p in payloads) / elapsed  # fmt: skip


def post_all(url_port: int, payloads: list[bytes], clients: int) -> float:
    """Post every payload over ``clients`` keep-alive connections; spans/s from first send to last 200."""
    chunks = [payloads[i::clients] for i in range(clients)]
    errors: list[str] = []

    def run(chunk: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=120)
        for body in chunk:
            while True:
                conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    break
                if resp.status not in (429, 503):
                    errors.append(f"{resp.status}")
                    return
                time.sleep(float(resp.getheader("Retry-After") or 1) / 10)  # a benchmark: retry sooner
        conn.close()

    return _clients(run, chunks, errors, payloads)


def post_all_grpc(port: int, payloads: list[bytes], clients: int) -> float:
    """``post_all`` over OTLP/gRPC: ``clients`` channels, one unary ``Export`` at a time each."""
    import grpc

    from spendtrace.server.otlp._grpc import SERVICE

    chunks = [payloads[i::clients] for i in range(clients)]
    errors: list[str] = []
    retry = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)

    def run(chunk: list[bytes]) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(f"/{SERVICE}/Export")
            for body in chunk:
                while True:
                    try:
                        call(body, timeout=120)
                        break
                    except grpc.RpcError as exc:
                        if exc.code() not in retry:  # type: ignore[attr-defined]
                            errors.append(str(exc.code()))  # type: ignore[attr-defined]
                            return
                        time.sleep(0.2)  # a benchmark: retry sooner than the RetryInfo asks

    return _clients(run, chunks, errors, payloads)


class ReceiverProcess:
    """``spendtrace otlp`` in its own process, from this checkout or from ``src`` (another checkout's tree)."""

    def __init__(self, bootstrap: str, topic: str, src: str | None = None, extra: Sequence[str] = ()) -> None:
        self.port = free_port()
        # the variant ``grpc``: serve OTLP/gRPC too, and the clients send through it
        self.grpc_port = free_port() if "grpc" in extra else None
        extra = [a for a in extra if a != "grpc"] + (["--grpc-port", str(self.grpc_port)] if self.grpc_port else [])
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = os.path.abspath(src)
        cmd = [sys.executable, "-m", "spendtrace", "otlp", "--port", str(self.port), "--bootstrap", bootstrap,
               "--topic", topic, "--max-pending", "1000000", *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, cwd=src or None)
        deadline = time.monotonic() + 60
        while True:  # up once it answers /health
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the receiver ({src or 'this checkout'}) did not start")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time of the receiver and its worker processes, every thread of each, in nanoseconds from
        /proc/<pid>/task/*/schedstat (``stat``'s clock ticks are 10 ms: 0.5 µs a span over 20,000 spans)."""
        total = 0.0
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    total += int((task / "schedstat").read_text().split()[0]) / 1e9
                except (OSError, IndexError, ValueError):  # a thread that just ended
                    continue
        return total

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def through_receiver(bootstrap: str, payloads: list[bytes], clients: int, run: tuple[str | None, tuple[str, ...]]
                     ) -> tuple[float, float]:  # fmt: skip
    """(spans/s, receiver CPU µs per span) posting every payload to a fresh receiver process."""
    src, extra = run
    receiver = ReceiverProcess(bootstrap, f"bench-otlp-{time.time_ns()}", src, extra)
    port, send = (receiver.port, post_all) if receiver.grpc_port is None else (receiver.grpc_port, post_all_grpc)
    try:
        for _ in range(2 * len(extra) + 1):  # warm-up: topic, each worker's producer connection
            send(port, payloads[:clients], clients)
        cpu = receiver.cpu_seconds()
        rate = send(port, payloads, clients)
        n = sum(len(ExportTraceServiceRequest.FromString(p).resource_spans[0].scope_spans[0].spans) for p in payloads)
        return rate, (receiver.cpu_seconds() - cpu) / n * 1e6
    finally:
        receiver.close()


def latency(
    broker: EmbeddedBroker, rounds: int, acked: list[float], fetch_wait_ms: int, idle_s: float
) -> tuple[list[float], float]:
    """Seconds from posting one request's spans to their commit in SQLite by a worker (``acked``: to the 200),
    and the CPU seconds per second this process (the worker, an idle receiver) spent afterwards with no traffic."""
    from consumers.config import WorkerConfig
    from consumers.worker import Worker

    one = make_payloads(5 * rounds)
    single = []
    for body in one:
        req = ExportTraceServiceRequest.FromString(body)
        spans = list(req.resource_spans[0].scope_spans[0].spans)
        for i in range(0, len(spans), 5):
            r = ExportTraceServiceRequest()
            r.resource_spans.add().CopyFrom(req.resource_spans[0])
            del r.resource_spans[0].scope_spans[0].spans[:]
            r.resource_spans[0].scope_spans[0].spans.extend(spans[i : i + 5])
            single.append(r.SerializeToString())
    topic = f"bench-otlp-latency-{time.time_ns()}"
    out: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "cost.db"
        cfg = WorkerConfig(bootstrap=broker.bootstrap, db_path=str(db), group_id=topic, topic=topic,
                           dlq_topic=f"{topic}.dlq", alerts_topic=f"{topic}.alerts", partitions=3,
                           poll_timeout_ms=20, batch_size=1000, fetch_max_wait_ms=fetch_wait_ms)  # fmt: skip
        worker = Worker(cfg)
        loop = asyncio.new_event_loop()
        th = threading.Thread(target=lambda: loop.run_until_complete(worker.run()), daemon=True)
        with Receiver(KafkaSink(broker.bootstrap, topic, partitions=3), port=0) as receiver:
            conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=60)
            conn.request("POST", "/v1/traces", single[0], {"Content-Type": "application/x-protobuf"})
            conn.getresponse().read()  # creates the topic and connects the producer before the worker starts
            th.start()

            def stored() -> int:
                if not db.exists():
                    return 0
                with open_store(db) as s:
                    return int(s.total()["transaction_count"])

            deadline = time.monotonic() + 120
            while stored() < 5:
                if time.monotonic() > deadline:
                    raise SystemExit("the worker stored nothing in 120 s")
                time.sleep(0.01)
            conn.close()
            for k, body in enumerate(single[1:], start=2):
                t = time.perf_counter()
                conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=60)
                conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                conn.getresponse().read()
                acked.append(time.perf_counter() - t)
                conn.close()
                while stored() < 5 * k:
                    time.sleep(0.002)
                out.append(time.perf_counter() - t)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            time.sleep(idle_s)
            idle = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        loop.call_soon_threadsafe(worker.request_stop)
        th.join(60)
    return out, idle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spans", type=int, default=20_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--latency-rounds", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2, help="runs through each receiver (best is reported)")
    p.add_argument("--compare", metavar="DIR", help="also run the receiver of this checkout, alternating")
    p.add_argument("--fetch-wait", action="append", type=int, metavar="MS",
                   help="the worker's fetch_max_wait_ms in the latency part (repeatable, alternated; default: 100)")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured after each latency run")
    p.add_argument("--latency-only", action="store_true", help="skip the throughput part")
    p.add_argument("--variant", action="append", default=["--workers 2", "--compression gzip", "grpc"],
                   help="also run this tree's receiver with these options (repeatable; 'grpc': send over OTLP/gRPC)")
    args = p.parse_args()
    if args.latency_only:
        with tempfile.TemporaryDirectory() as d, EmbeddedBroker(log_path=Path(d) / "tansu.log") as broker:
            report_latency(broker, args)
        return
    payloads = make_payloads(args.spans)
    print(f"{sum(map(len, payloads)) / 1e6:.1f} MB in {len(payloads)} protobuf exports of up to {PER_EXPORT} spans")
    parse = max(bare_parse(payloads) for _ in range(3))
    read = max(bare_read(payloads) for _ in range(3))
    conv = max(convert_only(payloads) for _ in range(3))
    print(f"bare ParseFromString:                 {parse:12,.0f} spans/s")
    print(f"bare parse + read every attribute:    {read:12,.0f} spans/s")
    full = max(bare_read_all(payloads) for _ in range(3))
    print(f"bare parse + read every field:        {full:12,.0f} spans/s = {full / read:.2f}x parse+read")
    print(f"parse + convert (no I/O):             {conv:12,.0f} spans/s = {conv / read:.2f}x parse+read")
    with tempfile.TemporaryDirectory() as d, EmbeddedBroker(log_path=Path(d) / "tansu.log") as broker:
        bare = bare_produce(broker.bootstrap, payloads)
        print(f"bare aiokafka produce, encoded spans: {bare:12,.0f} spans/s (one export at a time, acks=all)")
        direct = publish_only(broker.bootstrap, payloads)
        print(f"parse + convert + publish, no HTTP:   {direct:12,.0f} spans/s = {direct / bare:.2f}x bare produce")
        this: tuple[str | None, tuple[str, ...]] = (None, ())
        setups = [this]
        if args.compare:
            setups.insert(0, (args.compare, ()))
        setups += [(None, tuple(a.split())) for a in args.variant]
        runs: dict[tuple[str | None, tuple[str, ...]], list[tuple[float, float]]] = {s: [] for s in setups}
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits every setup alike
            for setup in setups:
                read = max(read, bare_read(payloads))  # the reference again: the fastest seen divides
                full = max(full, bare_read_all(payloads))
                runs[setup].append(through_receiver(broker.bootstrap, payloads, args.clients, setup))
        print(f"bare parse + read, fastest of the run: {read:11,.0f} spans/s; + every field {full:,.0f}")
        for (src, extra), results in runs.items():
            rate = max(r for r, _ in results)
            cpu = min(c for _, c in results)
            label = f"receiver of {src}" if src else f"receiver {' '.join(extra) or '(this tree)'}"
            vs = ""
            if args.compare and src is None:
                vs = f" = {rate / max(r for r, _ in runs[(args.compare, ())]):.2f}x {args.compare}"
            procs = next((int(extra[i + 1]) for i, a in enumerate(extra[:-1]) if a == "--workers"), 1)
            who = f" ({procs} receiver processes vs the one-thread reference)" if procs > 1 else ""
            print(f"{label} -> topic, {args.clients} clients: {rate:9,.0f} spans/s{vs} = "
                  f"{rate / read:.2f}x parse+read (target >= 0.5x){who}, {rate / full:.2f}x parse+read every field, "
                  f"{rate / parse:.3f}x ParseFromString; "
                  f"receiver CPU {cpu:.2f} us/span (best of {len(results)})")  # fmt: skip
        per_stage = stages(payloads)
        own_cpu = min(c for _, c in runs[this])
        print("receiver CPU per span by stage (each stage alone in this process, best of 5):")
        for name, us in per_stage.items():
            print(f"  {name:28s} {us:5.2f} us")
        counted = sum(us for name, us in per_stage.items() if not name.startswith("("))
        rest = own_cpu - counted
        print(f"  {'HTTP, event loop, sends':28s} {rest:5.2f} us (the receiver's {own_cpu:.2f} minus the above)")
        ref_cpu = per_stage["(reference: parse + read)"]
        print(f"per core: the reference's {ref_cpu:.2f} us of CPU per span / the receiver's {own_cpu:.2f} = "
              f"{ref_cpu / own_cpu:.2f}x (the spans/s ratio with a free core each; steadier than wall)")  # fmt: skip
        report_latency(broker, args)
    print("(a shared 2-core machine: absolute numbers move by tens of percent; compare the ratios)")


def report_latency(broker: EmbeddedBroker, args: argparse.Namespace) -> None:
    """Post -> stored latency (and idle worker CPU) for each ``--fetch-wait``, alternated over ``--rounds``."""
    waits = args.fetch_wait or [100]
    for _ in range(args.rounds if len(waits) > 1 else 1):
        for wait in waits:
            acked: list[float] = []
            lat, idle = latency(broker, args.latency_rounds, acked, wait, args.idle)
            lat.sort()
            p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
            print(f"end-to-end, fetch_max_wait_ms={wait}, post -> committed in SQLite by a worker ({len(lat)} "
                  f"requests of 5 spans): median {statistics.median(lat) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms; "
                  f"of which post -> 200 (acks=all) median {statistics.median(acked) * 1000:.1f} ms; "
                  f"then idle: {idle * 100:.1f}% of a core")  # fmt: skip


if __name__ == "__main__":
    main()
