"""The OTLP/HTTP receiver: ``POST /v1/traces`` → spendtrace spans on the spans topic, or in the local store.

Answers follow the OTLP/HTTP specification, and nothing is ever dropped silently:

- 200 once every span converted is acknowledged by the broker (``acks=all``) or committed to the
  store, with ``partial_success.rejected_spans`` and a reason for spans that could not be placed
  (no valid trace or span id);
- 400 with a ``google.rpc.Status`` (code 3, the reason) for a body that is not an OTLP trace export,
  413 for one over the size limit, 415 for a content type other than ``application/x-protobuf`` /
  ``application/json``;
- 429 with ``Retry-After`` when more than ``max_pending`` spans are already being delivered
  (back-pressure), 503 with ``Retry-After`` when the broker or the store failed: the exporter
  retries, and nothing of that request was accepted.

Spans on the topic are exactly what the SDK's Kafka exporter sends (msgpack ``encode_span``, key =
request id), so the workers price and store them with no change. Without a broker they are priced
and written by ``LocalStoreExporter``, the SDK's local mode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from spendtrace.schema import Span, encode_span
from spendtrace.server.otlp._convert import convert
from spendtrace.server.otlp._decode import (
    JSON,
    MAX_BODY,
    PROTOBUF,
    OtlpDecodeError,
    decode_body,
    decompress,
    media_type,
)
from spendtrace.server.otlp._rules import DEFAULT_RULES, Rules

__all__ = ["KafkaSink", "Receiver", "ReceiverStats", "Sink", "StoreSink", "create_app", "serve"]

log = logging.getLogger("spendtrace.otlp")


class Sink(Protocol):
    """Where accepted spans go; ``publish`` returns once they are durable and raises otherwise."""

    async def publish(self, spans: Sequence[Span]) -> None: ...

    async def close(self) -> None: ...


class KafkaSink:
    """Produce each span to ``topic`` (key = request id, value = ``encode_span``), waiting for every ack.

    Connects on first use and again after any failure (the topic is created when missing), so a
    broker that is down answers 503 and the exporter's retry finds it when it is back.
    """

    def __init__(self, bootstrap: str, topic: str = "spendtrace.spans", *, partitions: int = 3,
                 timeout: float = 10.0, compression_type: str | None = "gzip") -> None:  # fmt: skip
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.timeout = timeout
        self.compression_type = compression_type
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def _get(self) -> Any:
        async with self._lock:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                from spendtrace.server.topics import ensure_topics

                await ensure_topics(self.bootstrap, [self.topic], partitions=self.partitions)
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, client_id="spendtrace-otlp", acks="all",
                                            linger_ms=5, compression_type=self.compression_type,
                                            request_timeout_ms=int(self.timeout * 1000))  # fmt: skip
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, spans: Sequence[Span]) -> None:
        """Send ``spans`` and wait until the broker acknowledged each one; raise if any may be missing."""
        try:
            producer = await asyncio.wait_for(self._get(), self.timeout)
            futures = await self._send_batches(producer, spans)
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
        except BaseException:
            await self.close()
            raise

    async def _send_batches(self, producer: Any, spans: Sequence[Span]) -> list[Any]:
        """One record batch per partition instead of one ``send`` per span (a measured 3x, bench_otlp.py).

        The partition of each span is the producer's default partitioner (murmur2 of the key, as the
        SDK's exporter and the Java client choose it), so one request's spans share a partition.
        """
        from aiokafka.partitioner import DefaultPartitioner

        topic = self.topic
        partitions = sorted(await producer.partitions_for(topic))
        choose = DefaultPartitioner()
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for s in spans:
            key = s.request_id.encode()
            by_partition.setdefault(choose(key, partitions, partitions), []).append((key, encode_span(s)))
        futures = []
        for partition, messages in by_partition.items():
            batch = producer.create_batch()
            for key, value in messages:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    if batch.record_count():
                        futures.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:  # larger than a batch
                        futures.append(await producer.send(topic, value, key=key, partition=partition))
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    async def close(self) -> None:
        """Stop the producer (a broker that is gone cannot be closed politely: errors are logged only)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 5.0)
            except (Exception, asyncio.CancelledError):
                log.debug("closing the OTLP receiver's producer failed", exc_info=True)


class StoreSink:
    """Price and write spans into the SQLite store at ``db_path`` (the SDK's no-broker mode), off the event loop."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        from spendtrace.server.local_export import LocalStoreExporter

        self.exporter = LocalStoreExporter(db_path)

    async def publish(self, spans: Sequence[Span]) -> None:
        """Commit ``spans`` (duplicates of stored span ids are ignored, as by the workers)."""
        await asyncio.to_thread(self.exporter.export, spans)

    async def close(self) -> None:
        """Close the store."""
        await asyncio.to_thread(self.exporter.shutdown)


@dataclass
class ReceiverStats:
    """Counters since start: what was accepted, rejected, refused and why (``GET /health`` shows them)."""

    requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    malformed: int = 0
    throttled: int = 0
    unavailable: int = 0


def _status_body(kind: str, code: int, message: str) -> tuple[bytes, str]:
    """A ``google.rpc.Status`` (field 1: code, field 2: message) in the request's encoding."""
    if kind == JSON:
        import json

        return json.dumps({"code": code, "message": message}).encode(), JSON
    msg = message.encode()[:4096]

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    return b"\x08" + varint(code) + b"\x12" + varint(len(msg)) + msg, PROTOBUF


def _error(kind: str | None, status: int, code: int, message: str, retry_after: int | None = None) -> Response:
    body, media = _status_body(kind or JSON, code, message)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(body, status_code=status, media_type=media, headers=headers)


def _success(kind: str, rejected: int, message: str) -> Response:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = message
    if kind == JSON:
        return Response(json_format.MessageToJson(resp, indent=None).encode(), media_type=JSON)
    return Response(resp.SerializeToString(), media_type=PROTOBUF)


def create_app(sink: Sink, *, rules: Rules = DEFAULT_RULES, max_pending: int = 50_000, max_body: int = MAX_BODY,
               retry_after: int = 2) -> Starlette:  # fmt: skip
    """The Starlette app: ``POST /v1/traces`` and ``GET /health``; ``app.state.stats`` holds the counters."""
    stats = ReceiverStats()
    pending = 0

    async def traces(request: Request) -> Response:
        nonlocal pending
        stats.requests += 1
        kind = media_type(request.headers.get("content-type"))
        if kind is None:
            stats.malformed += 1
            return _error(JSON, 415, 3, f"unsupported Content-Type {request.headers.get('content-type')!r}; "
                                        f"send {PROTOBUF} or {JSON}")  # fmt: skip
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:  # refuse before reading it
            stats.malformed += 1
            return _error(kind, 413, 3, f"body of {declared} bytes exceeds the {max_body}-byte limit")
        raw = await request.body()
        if len(raw) > max_body:
            stats.malformed += 1
            return _error(kind, 413, 3, f"body of {len(raw)} bytes exceeds the {max_body}-byte limit")
        try:
            body = decompress(raw, request.headers.get("content-encoding"), limit=max_body)
            export = decode_body(body, kind)
        except OtlpDecodeError as exc:
            stats.malformed += 1
            return _error(kind, 400, 3, str(exc))
        converted = convert(export, rules)
        n = len(converted.spans)
        if n and pending and pending + n > max_pending:
            stats.throttled += 1
            return _error(kind, 429, 8, f"{pending} spans are being delivered; retry later", retry_after)
        pending += n
        try:
            if n:
                await sink.publish(converted.spans)
        except Exception as exc:
            stats.unavailable += 1
            log.warning("could not deliver %d spans: %s", n, exc)
            return _error(kind, 503, 14, f"spans could not be delivered ({type(exc).__name__}); retry", retry_after)
        finally:
            pending -= n
        stats.spans_accepted += n
        stats.spans_rejected += converted.rejected
        return _success(kind, converted.rejected, "; ".join(converted.reasons))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", **asdict(stats), "pending": pending})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sink.close()

    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]), Route("/health", health)],
                    lifespan=lifespan)  # fmt: skip
    app.state.stats = stats
    return app


class Receiver:
    """The receiver on a socket bound at construction (port 0 picks one), served from a thread or in the foreground.

    Binding first means ``port`` is known and connections queue in the listen backlog before the
    server runs, so callers need not wait for it to come up.
    """

    def __init__(self, sink: Sink, *, host: str = "127.0.0.1", port: int = 4318, rules: Rules = DEFAULT_RULES,
                 max_pending: int = 50_000, max_body: int = MAX_BODY) -> None:  # fmt: skip
        import uvicorn

        self.app = create_app(sink, rules=rules, max_pending=max_pending, max_body=max_body)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(1024)
        self.host, self.port = host, self.socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The traces endpoint, e.g. ``http://127.0.0.1:4318/v1/traces``."""
        return f"http://{self.host}:{self.port}/v1/traces"

    @property
    def stats(self) -> ReceiverStats:
        """The counters of the app."""
        stats: ReceiverStats = self.app.state.stats
        return stats

    def run(self) -> None:
        """Serve in the foreground until SIGINT / SIGTERM."""
        self.server.run(sockets=[self.socket])

    def start(self) -> Receiver:
        """Serve from a daemon thread (tests, benchmarks); ``stop`` ends it."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.socket])),
                                        name="spendtrace-otlp", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Finish in-flight requests, close the sink and the socket."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.socket.close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(*, host: str, port: int, bootstrap: str | None, topic: str, db_path: str | None, rules: Rules,
          partitions: int = 3, max_pending: int = 50_000) -> None:  # fmt: skip
    """Run the receiver in the foreground: to Kafka at ``bootstrap`` if given, else into the SQLite ``db_path``."""
    sink: Sink
    if bootstrap:
        sink = KafkaSink(bootstrap, topic, partitions=partitions)
        where = f"topic {topic} at {bootstrap}"
    else:
        assert db_path is not None
        sink = StoreSink(db_path)
        where = f"the store {db_path}"
    receiver = Receiver(sink, host=host, port=port, rules=rules, max_pending=max_pending)
    print(f"OTLP/HTTP receiver on {receiver.url} -> {where}; Ctrl-C stops it", flush=True)
    receiver.run()
