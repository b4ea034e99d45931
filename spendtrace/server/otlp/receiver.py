"""The OTLP/HTTP receiver: ``POST /v1/traces`` → spendtrace spans on the spans topic, or in the local store.

Answers follow the OTLP/HTTP specification, and nothing is ever dropped silently:

- 200 once every span converted is acknowledged by the broker (``acks=all``) or committed to the
  store, with ``partial_success.rejected_spans`` and a reason for spans that could not be placed
  (no valid trace or span id);
- 400 with a ``google.rpc.Status`` (code 3, the reason) for a body that is not an OTLP trace export,
  413 for one over the size limit, 415 for a content type other than ``application/x-protobuf`` /
  ``application/json``;
- 404 with a ``google.rpc.Status`` (code 12, what to change) for OTLP metrics and logs (``/v1/metrics``,
  ``/v1/logs``), which an SDK pointed at this port sends too: the receiver takes traces only;
- 429 with ``Retry-After`` when more than ``max_pending`` spans are already being delivered
  (back-pressure), 503 with ``Retry-After`` when the broker or the store failed: the exporter
  retries, and nothing of that request was accepted.

Spans on the topic are exactly what the SDK's Kafka exporter sends (msgpack ``encode_span``, key =
request id), so the workers price and store them with no change. Without a broker they are priced
and written by ``LocalStoreExporter``, the SDK's local mode.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

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
    not_traces,
    varint,
)
from spendtrace.server.otlp._rules import DEFAULT_RULES, Rules

__all__ = ["KafkaSink", "Receiver", "ReceiverStats", "Sink", "StoreSink", "create_app", "serve"]

log = logging.getLogger("spendtrace.otlp")


class Sink(Protocol):
    """Where accepted spans go; ``publish`` returns once they are durable and raises otherwise."""

    async def publish(self, spans: Sequence[Span]) -> None: ...

    async def close(self) -> None: ...


class KafkaSink:
    """Produce spans to ``topic`` (key = request id, value = ``encode_span``) and return once every one is acked.

    Concurrent ``publish`` calls share record batches: each call queues its records per partition,
    and one flusher task takes everything queued, builds one batch per partition, submits it and hands
    each caller the acks of the batches holding its records.
    The producer keeps one produce request in flight per broker (aiokafka's rule), so while one is
    out the next requests' records gather into the following batch instead of queueing behind it
    one request at a time (the limit measured before, bench_otlp.py). ``acks=all`` is unchanged: a
    call returns only when every batch with one of its records is acknowledged, and raises if any
    failed or ``timeout`` passed.

    Connects on first use and again after any failure (the topic is created when missing), so a
    broker that is down answers 503 and the exporter's retry finds it when it is back.
    """

    #: Largest record batch, uncompressed. aiokafka's default (16 KiB) cut a 500-span export into
    #: several batches per partition, each waiting for the previous one's round trip. Below the
    #: broker's default ``message.max.bytes`` (1 MiB) even before compression.
    MAX_BATCH_BYTES = 512 * 1024
    #: Level of each codec the sink compresses its batches with itself. aiokafka's gzip is level 9, which
    #: cost the receiver 5-6 µs of CPU per span (bench_otlp.py); gzip level 1 costs about 1 µs (records 5.4x
    #: smaller), zstd level 1 about 0.25 µs (6.8x smaller): zstd is the default.
    LEVELS: ClassVar[dict[str, int]] = {"gzip": 1, "zstd": 1}

    def __init__(self, bootstrap: str, topic: str = "spendtrace.spans", *, partitions: int = 3,
                 timeout: float = 10.0, compression_type: str | None = "zstd",
                 max_batch_bytes: int = MAX_BATCH_BYTES) -> None:  # fmt: skip
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.timeout = timeout
        self.compression_type = compression_type
        self.max_batch_bytes = max_batch_bytes
        self._producer: Any = None
        self._flusher: asyncio.Task[None] | None = None
        self._partitions: list[int] = []
        self._lock = asyncio.Lock()
        self._queued: dict[int, list[_Part]] = {}  # partition -> records waiting for the next batch
        self._wake = asyncio.Event()
        self._keys: dict[str, tuple[bytes, int]] = {}  # request id -> (key, murmur2): once per trace, not per span
        self._codec: str | None = None  # set when this sink compresses the batches itself
        self._own = False  # set when this sink writes whole record batches (``wire.records``)

    async def _get(self) -> Any:
        async with self._lock:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                from spendtrace.server.topics import ensure_topics

                await ensure_topics(self.bootstrap, [self.topic], partitions=self.partitions)
                plain = _builds_plain_batches()
                self._codec = self.compression_type if plain and self.compression_type in self.LEVELS else None
                # whole batches written here (C) unless the producer is to compress them (lz4, snappy)
                self._own = _wire is not None and plain and (self._codec is not None or self.compression_type is None)
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, client_id="spendtrace-otlp", acks="all",
                                            linger_ms=5,
                                            compression_type=None if self._codec else self.compression_type,
                                            max_batch_size=self.max_batch_bytes,
                                            request_timeout_ms=int(self.timeout * 1000))  # fmt: skip
                try:
                    await producer.start()
                    self._partitions = sorted(await producer.partitions_for(self.topic))
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
                self._flusher = asyncio.create_task(self._flush(producer), name="spendtrace-otlp-flush")
            return self._producer

    async def publish(self, spans: Sequence[Span]) -> None:
        """Send ``spans`` and wait until the broker acknowledged each one; raise if any may be missing."""
        try:
            async with asyncio.timeout(self.timeout):  # no task of its own, as wait_for makes
                await self._publish(spans)
        except BaseException:
            await self.close()
            raise

    async def _publish(self, spans: Sequence[Span]) -> None:
        await self._get()
        loop = asyncio.get_running_loop()
        handoffs = []
        for partition, records in self._place(spans).items():
            part = _Part(records, loop.create_future())
            self._queued.setdefault(partition, []).append(part)
            handoffs.append(part.handoff)
        self._wake.set()
        acks = [ack for submitted in await asyncio.gather(*handoffs) for ack in submitted]
        # return_exceptions: a batch the producer cancelled (another request's failure closed it) must
        # fail this request as undelivered (503), not cancel it (a CancelledError escapes as a 500)
        for result in await asyncio.gather(*acks, return_exceptions=True):
            if isinstance(result, BaseException):
                raise ConnectionError(f"a batch was not acknowledged: {result!r}") from result

    def _place(self, spans: Sequence[Span]) -> dict[int, list[tuple[bytes, bytes]]]:
        """Records by partition, as the default partitioner places them (murmur2 of the key, like the SDK's
        exporter and the Java client), so one request's spans share a partition."""
        keys = self._keys
        if len(keys) > 100_000:
            keys.clear()
        partitions = self._partitions
        n = len(partitions)
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for s in spans:
            known = keys.get(s.request_id)
            if known is None:
                key = s.request_id.encode()
                known = keys[s.request_id] = (key, _murmur2(key) & 0x7FFFFFFF)
            key, h = known
            p = partitions[h % n]
            records = out.get(p)
            if records is None:
                records = out[p] = []
            records.append((key, encode_span(s)))
        return out

    async def _flush(self, producer: Any) -> None:
        """Take everything queued, one batch per partition (more when full), submit, hand out the acks; repeat."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            queued, self._queued = self._queued, {}
            try:
                # Built (so compressed) on the loop: zstd level 1 is ~0.25 µs a span, and a worker thread per round
                # cost more CPU in the handoff than it took off the loop (bench_otlp.py: 7.5 -> 7.0 µs/span)
                if self._own:
                    codec, limit = self._codec, self.max_batch_bytes
                    batches = [(p, *built) for p, parts in queued.items()
                               for built in _own_batches(producer, parts, codec, limit)]  # fmt: skip
                else:
                    batches = [(p, *built) for p, parts in queued.items() for built in _batches(producer, parts)]
                    _build([b for _, b, _ in batches], self._codec)
                for partition, batch, owners in batches:
                    ack = await producer.send_batch(batch, self.topic, partition=partition)
                    for part in owners:
                        part.acks.append(ack)
                for parts in queued.values():
                    for part in parts:
                        if not part.handoff.done():
                            part.handoff.set_result(part.acks)
            except BaseException as exc:  # the producer is closed next: every caller of this round gets the error
                failure = exc if isinstance(exc, Exception) else ConnectionError("the producer was closed")
                _fail(queued, failure)
                if not isinstance(exc, Exception):
                    raise

    async def close(self) -> None:
        """Stop the producer (a broker that is gone cannot be closed politely: errors are logged only)."""
        producer, self._producer = self._producer, None
        flusher, self._flusher = self._flusher, None
        queued, self._queued = self._queued, {}
        _fail(queued, ConnectionError("the producer was closed"))
        if flusher is not None:
            flusher.cancel()
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 5.0)
            except (Exception, asyncio.CancelledError):
                log.debug("closing the OTLP receiver's producer failed", exc_info=True)


class _Part:
    """One caller's records for one partition; ``handoff`` receives the acks of the batches holding them."""

    __slots__ = ("acks", "handoff", "records")

    def __init__(self, records: list[tuple[bytes, bytes]], handoff: asyncio.Future[list[Any]]) -> None:
        self.records = records
        self.handoff = handoff
        self.acks: list[Any] = []


def _batches(producer: Any, parts: list[_Part]) -> list[tuple[Any, list[_Part]]]:
    """One partition's queued records as full batches, each with the parts it holds records of.

    An empty batch takes any record (aiokafka's rule), so a span larger than a batch goes alone.
    """
    out: list[tuple[Any, list[_Part]]] = []
    batch, owners = producer.create_batch(), []
    for part in parts:
        owners.append(part)
        for key, value in part.records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                out.append((batch, owners))
                batch, owners = producer.create_batch(), [part]
                batch.append(key=key, value=value, timestamp=None)
    if batch.record_count():
        out.append((batch, owners))
    return out


def _own_batches(producer: Any, parts: list[_Part], codec: str | None, limit: int) -> list[tuple[Any, list[_Part]]]:
    """``_batches`` written whole by this sink: the records by ``wire.records`` (C), the header and the
    compression here, each batch handed to the producer built (``_builds_plain_batches`` checked it sends
    a builder's ``_buffer`` as it is). The same bytes aiokafka's builder makes (tests compare them), without
    a Python call and a metadata object per record.
    """
    assert _wire is not None
    pairs: list[tuple[bytes, bytes]] = []
    ends = []  # number of records up to the end of each part
    for part in parts:
        pairs += part.records
        ends.append(len(pairs))
    now = int(time.time() * 1000)
    level = KafkaSink.LEVELS.get(codec or "", 0)
    out: list[tuple[Any, list[_Part]]] = []
    start = first = 0  # the batch's first record; the first part that may hold it
    for records, count in _wire.records(pairs, limit - _HEADER.size):
        stop = start + count
        while ends[first] <= start:
            first += 1
        owners, j = [], first
        while j < len(parts) and (ends[j - 1] if j else 0) < stop:
            owners.append(parts[j])
            j += 1
        batch = producer.create_batch()
        batch._buffer = record_batch(records, count, now, codec, level)
        batch._relative_offset = count  # its record_count()
        batch.close()
        out.append((batch, owners))
        start = stop
    return out


def record_batch(records: bytes, count: int, timestamp_ms: int, codec: str | None, level: int = 1) -> bytearray:
    """A v2 record batch (as aiokafka's ``DefaultRecordBatchBuilder`` writes one, producer id -1) of ``count``
    records written by ``wire.records``, compressed with ``codec`` at ``level`` where that makes it smaller."""
    body, attributes = _shrink(memoryview(records), codec, level) if codec is not None else (records, 0)
    out = bytearray(_HEADER.size)
    out += body
    _HEADER.pack_into(out, 0, 0, len(out) - _AFTER_LENGTH, -1, 2, 0, attributes, count - 1, timestamp_ms,
                      timestamp_ms, -1, -1, 0, count)  # fmt: skip
    return _signed(out)


def _build(batches: list[Any], codec: str | None) -> None:
    """Build (so compress) record batches before they are submitted; the sender then sends the bytes as they are.

    ``BatchBuilder._build`` is what aiokafka's sender calls on the event loop; it builds once and
    keeps the bytes. With ``codec`` the batches were made uncompressed and are compressed here at
    ``KafkaSink.LEVELS[codec]`` (``_builds_plain_batches`` checked that the builder keeps its bytes in
    ``_buffer``). With an aiokafka that lacks ``_build``, the sender builds as before.
    """
    for b in batches:
        build = getattr(b, "_build", None)
        if build is not None:
            built = build()
            if codec is not None:
                b._buffer = compress_batch(built, codec, KafkaSink.LEVELS[codec])


# Offsets in a v2 record batch header (Kafka's RecordBatch; aiokafka's DefaultRecordBase spells the same).
_LENGTH_AT, _AFTER_LENGTH, _CRC_AT, _ATTRIBUTES_AT, _RECORDS_AT = 8, 12, 17, 21, 61
_CODEC_MASK = 0x07
#: The v2 record batch header: base offset, length, partition leader epoch, magic, CRC-32C, attributes, last
#: offset delta, first and max timestamps, producer id, producer epoch, base sequence, record count.
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CODECS = {"gzip": 0x01, "zstd": 0x04}  # Kafka's codec ids in the batch attributes


def _gzip(records: memoryview, level: int) -> bytes:
    z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: the gzip format, as Kafka's gzip codec reads it
    return z.compress(records) + z.flush()


def _zstd(records: memoryview, level: int) -> bytes:
    import cramjam  # aiokafka's own zstd library (the workers read these batches with it)

    return bytes(cramjam.zstd.compress(records, level))


_COMPRESS = {"gzip": _gzip, "zstd": _zstd}


def compress_batch(batch: bytes | bytearray, codec: str, level: int) -> bytes | bytearray:
    """An uncompressed v2 record batch with its records compressed (``gzip`` / ``zstd`` at ``level``): length,
    codec and CRC-32C rewritten.

    Returned as it is when it is compressed already, or when compression would not make it smaller (as
    aiokafka does).
    """
    if batch[_ATTRIBUTES_AT + 1] & _CODEC_MASK:
        return batch
    packed, codec_id = _shrink(memoryview(batch)[_RECORDS_AT:], codec, level)
    if not codec_id:
        return batch
    out = bytearray(batch[:_RECORDS_AT])
    out += packed
    struct.pack_into(">i", out, _LENGTH_AT, len(out) - _AFTER_LENGTH)
    out[_ATTRIBUTES_AT + 1] |= codec_id
    return _signed(out)


def _shrink(records: memoryview, codec: str, level: int) -> tuple[bytes | memoryview, int]:
    """``records`` compressed with ``codec`` and its id for the batch attributes, or as they are and 0 when
    compression would not make them smaller (as aiokafka does)."""
    packed = _COMPRESS[codec](records, level)
    return (packed, _CODECS[codec]) if len(packed) < len(records) else (records, 0)


def _signed(batch: bytearray) -> bytearray:
    """``batch`` with its CRC-32C (over everything from the attributes on) written in."""
    from aiokafka.record.util import calc_crc32c

    struct.pack_into(">I", batch, _CRC_AT, calc_crc32c(memoryview(batch)[_ATTRIBUTES_AT:]))
    return batch


def _builds_plain_batches() -> bool:
    """Whether aiokafka's ``BatchBuilder`` builds v2 batches and keeps the bytes it sends in ``_buffer``, and sends
    a ``_buffer`` set before it is built as it is, with ``_relative_offset`` as its record count."""
    try:
        from aiokafka.producer.message_accumulator import BatchBuilder

        b = BatchBuilder(1024, 0)
        b.append(timestamp=None, key=b"k", value=b"v")
        built = b._build()
        given = BatchBuilder(1024, 0)
        given._buffer, given._relative_offset = bytearray(built), 1
        taken = given._build() is given._buffer and given.record_count() == 1
        return b._buffer is built and built[16] == 2 and taken  # 16: the magic byte
    except Exception:  # another aiokafka: let the producer compress
        return False


_M = 0x5BD1E995  # MurmurHash2's multiplier
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(65)]  # little-endian 32-bit words of keys up to 259 bytes


def murmur2(key: bytes) -> int:
    """Kafka's partitioning hash of ``key`` (MurmurHash2, seed 0x9747B28C, as the Java client and aiokafka compute it).

    The same numbers as ``aiokafka.partitioner.murmur2`` (tests/otlp compare them), reading the key four
    bytes a step: about 5x faster on a 32-byte request id, which the receiver hashes once per trace.
    """
    n = len(key)
    h = 0x9747B28C ^ n
    words = n >> 2
    for k in (_WORDS[words] if words < len(_WORDS) else struct.Struct(f"<{words}I")).unpack_from(key):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = n & 3
    if tail:
        rest = key[n - tail :]
        if tail == 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h = ((h ^ rest[0]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


try:  # the C part of the receiver, where it was built (setup.py)
    import spendtrace.server.otlp._c.wire as _wire
except ImportError:
    _wire = None  # type: ignore[assignment]

#: The C copy of the hash, where it is built: 0.08 instead of 2.4 µs a key (tests compare them).
_murmur2: Callable[[bytes], int] = _wire.murmur2 if _wire is not None else murmur2


def _fail(queued: dict[int, list[_Part]], exc: BaseException) -> None:
    for parts in queued.values():
        for part in parts:
            if not part.handoff.done():
                part.handoff.set_exception(exc)


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


@dataclass(frozen=True)
class Taken:
    """What became of one export: ``status`` is ``accepted``, ``throttled`` or ``unavailable``."""

    status: str
    rejected: int = 0
    message: str = ""


class Intake:
    """Convert an export and hand its spans to the sink, under one back-pressure limit for every transport.

    The HTTP app and the gRPC service share one intake, so ``max_pending`` bounds the spans being
    delivered whichever way they came, and ``stats`` counts them together.
    """

    def __init__(self, sink: Sink, *, rules: Rules = DEFAULT_RULES, max_pending: int = 50_000) -> None:
        self.sink, self.rules, self.max_pending = sink, rules, max_pending
        self.stats = ReceiverStats()
        self.pending = 0

    async def take(self, export: Any, body: bytes | None = None) -> Taken:
        """Deliver ``export``'s spans (an ``ExportTraceServiceRequest``, parsed from protobuf ``body`` if given):
        accepted, or refused whole and retryable."""
        converted = convert(export, self.rules, body)
        n = len(converted.spans)
        if n and self.pending and self.pending + n > self.max_pending:
            self.stats.throttled += 1
            return Taken("throttled", message=f"{self.pending} spans are being delivered; retry later")
        self.pending += n
        try:
            if n:
                await self.sink.publish(converted.spans)
        except Exception as exc:
            self.stats.unavailable += 1
            log.warning("could not deliver %d spans: %s", n, exc)
            return Taken("unavailable", message=f"spans could not be delivered ({type(exc).__name__}); retry")
        finally:
            self.pending -= n
        self.stats.spans_accepted += n
        self.stats.spans_rejected += converted.rejected
        return Taken("accepted", converted.rejected, "; ".join(converted.reasons))


def create_app(sink: Sink, *, rules: Rules = DEFAULT_RULES, max_pending: int = 50_000, max_body: int = MAX_BODY,
               retry_after: int = 2, intake: Intake | None = None) -> Starlette:  # fmt: skip
    """The Starlette app: ``POST /v1/traces`` and ``GET /health``; ``app.state.stats`` holds the counters.

    Given an ``intake`` (shared with the gRPC service), the app uses it and leaves closing the sink to
    its owner; otherwise the app makes one and closes ``sink`` when it shuts down.
    """
    own = intake is None
    take = intake if intake is not None else Intake(sink, rules=rules, max_pending=max_pending)
    stats = take.stats

    async def traces(request: Request) -> Response:
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
        taken = await take.take(export, body if kind == PROTOBUF else None)
        if taken.status == "throttled":
            return _error(kind, 429, 8, taken.message, retry_after)
        if taken.status == "unavailable":
            return _error(kind, 503, 14, taken.message, retry_after)
        return _success(kind, taken.rejected, taken.message)

    async def other_signal(request: Request) -> Response:  # metrics and logs: 404 with what to change
        signal = request.url.path.rsplit("/", 1)[-1]
        return _error(media_type(request.headers.get("content-type")), 404, 12, not_traces(signal))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", **asdict(stats), "pending": take.pending})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if own:
                await sink.close()

    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]), Route("/health", health),
                            Route("/v1/metrics", other_signal, methods=["POST"]),
                            Route("/v1/logs", other_signal, methods=["POST"])], lifespan=lifespan)  # fmt: skip
    app.state.stats = stats
    app.state.intake = take
    return app


class Receiver:
    """The receiver on a socket bound at construction (port 0 picks one), served from a thread or in the foreground.

    Binding first means ``port`` is known and connections queue in the listen backlog before the
    server runs, so callers need not wait for it to come up. ``grpc_port`` (0 picks one) also serves
    OTLP/gRPC, from the same intake; gRPC binds in the serving loop, so ``grpc_port`` holds the bound
    port once ``start`` returns (or the foreground server says it listens).
    """

    def __init__(self, sink: Sink, *, host: str = "127.0.0.1", port: int = 4318, rules: Rules = DEFAULT_RULES,
                 max_pending: int = 50_000, max_body: int = MAX_BODY, grpc_port: int | None = None,
                 grpc_shared: bool = False, retry_after: int = 2) -> None:  # fmt: skip
        import uvicorn

        self.intake = Intake(sink, rules=rules, max_pending=max_pending)
        self.app = create_app(sink, max_body=max_body, retry_after=retry_after, intake=self.intake)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(1024)
        self.host, self.port = host, self.socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self._grpc_wanted, self._grpc_shared = grpc_port, grpc_shared
        self._max_body, self._retry_after = max_body, retry_after
        self.grpc_port: int | None = None
        self._grpc_ready = threading.Event()
        self._grpc_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The traces endpoint, e.g. ``http://127.0.0.1:4318/v1/traces``."""
        return f"http://{self.host}:{self.port}/v1/traces"

    @property
    def grpc_target(self) -> str | None:
        """Where an OTLP/gRPC exporter sends, e.g. ``127.0.0.1:4317`` (None without gRPC)."""
        if self.grpc_port is None:
            return None
        return f"[{self.host}]:{self.grpc_port}" if ":" in self.host else f"{self.host}:{self.grpc_port}"

    @property
    def stats(self) -> ReceiverStats:
        """The counters of every transport."""
        return self.intake.stats

    async def _serve(self, ready: Callable[[], None] | None = None) -> None:
        """Serve HTTP (and gRPC) until told to exit; then finish in-flight exports and close the sink."""
        grpc_server: Any = None
        announce: asyncio.Task[None] | None = None
        try:
            if self._grpc_wanted is not None:
                from spendtrace.server.otlp._grpc import start_grpc

                try:
                    grpc_server, self.grpc_port = await start_grpc(self.intake, self.host, self._grpc_wanted,
                                                                   max_body=self._max_body,
                                                                   retry_after=self._retry_after,
                                                                   shared=self._grpc_shared)  # fmt: skip
                except BaseException as exc:
                    self._grpc_error = exc
                    raise
                finally:
                    self._grpc_ready.set()
            announce = asyncio.create_task(self._announce(ready)) if ready is not None else None
            await self.server.serve(sockets=[self.socket])
        finally:
            if announce is not None:
                announce.cancel()
            if grpc_server is not None:
                await grpc_server.stop(grace=5.0)
            await self.intake.sink.close()

    async def _announce(self, ready: Callable[[], None]) -> None:
        """Call ``ready`` once uvicorn serves: its Ctrl-C handling is in place by then, so a signal sent
        by whoever waited for the announcement stops the server cleanly."""
        while not self.server.started:
            await asyncio.sleep(0.005)
        ready()

    def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve in the foreground until SIGINT / SIGTERM; ``ready`` is called once every port listens."""
        # gRPC's asyncio server wants the standard loop; HTTP alone keeps uvicorn's choice
        factory = None if self._grpc_wanted is not None else self.server.config.get_loop_factory()
        # uvicorn handles Ctrl-C itself, shuts down cleanly, then raises the signal again for the caller: here
        # that is the end of a normal stop, not an error to print a traceback for
        with suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self._serve(ready))

    def _serve_in_thread(self) -> None:
        try:
            asyncio.run(self._serve())
        except OSError as exc:
            if exc is not self._grpc_error:  # a gRPC bind failure is start()'s to raise
                raise

    def start(self) -> Receiver:
        """Serve from a daemon thread (tests, benchmarks); ``stop`` ends it. Raises ``OSError`` if gRPC cannot bind."""
        self._thread = threading.Thread(target=self._serve_in_thread, name="spendtrace-otlp", daemon=True)
        self._thread.start()
        if self._grpc_wanted is not None:
            self._grpc_ready.wait(60)
            if self._grpc_error is not None:
                self.stop()
                raise self._grpc_error  # GrpcBindError, an OSError
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
          partitions: int = 3, max_pending: int = 50_000, workers: int = 1,
          compression: str | None = "zstd", grpc_port: int | None = None) -> int:  # fmt: skip
    """Run the receiver in the foreground: to Kafka at ``bootstrap`` if given, else into the SQLite ``db_path``.

    ``workers`` > 1 (Kafka only) forks that many processes serving the one listening socket, each
    with its own producer: the receiver is CPU-bound in Python (decode and conversion), so this is
    how it uses more than one core. ``max_pending`` applies per process. ``grpc_port`` also serves
    OTLP/gRPC there (with ``workers`` > 1 every process listens on it, ``SO_REUSEPORT``). The line
    saying where it listens is printed once every process serves. Returns the exit status: 1 when a
    worker process could not start or failed.
    """
    # What is loaded by now lives as long as the process: out of the collector's way (every collection walked
    # it; bench_otlp.py: 5.9 -> 5.7 µs/span), and pages the forked workers share stay shared.
    gc.freeze()
    sink: Sink
    if bootstrap:
        sink = KafkaSink(bootstrap, topic, partitions=partitions, compression_type=compression)
        where = f"topic {topic} at {bootstrap}"
    else:
        assert db_path is not None and workers == 1, "one process writes the store"
        sink = StoreSink(db_path)
        where = f"the store {db_path}"
    receiver = Receiver(sink, host=host, port=port, rules=rules, max_pending=max_pending, grpc_port=grpc_port,
                        grpc_shared=workers > 1)  # fmt: skip

    def say(processes: str = "") -> None:
        grpc = f" and OTLP/gRPC on {receiver.grpc_target}" if receiver.grpc_target else ""
        print(f"OTLP/HTTP receiver on {receiver.url}{grpc} -> {where}{processes}; Ctrl-C stops it", flush=True)

    if workers == 1:
        receiver.run(ready=say)
        return 0
    if grpc_port is not None:  # each child binds it; the line says where, as the one process would
        receiver.grpc_port = grpc_port
    ready_r, ready_w = os.pipe()
    children = _fork(receiver, workers, ready_w)
    os.close(ready_w)
    started = _count_ready(ready_r, workers)
    os.close(ready_r)
    if started == workers:
        say(f", {workers} processes")
        failed = _supervise(children)
    else:  # one could not bind or start (its error is on stderr): stop the others
        print(f"spendtrace otlp: {started} of {workers} receiver processes started; stopping", file=sys.stderr)
        _supervise(children, stop=True)
        failed = True
    receiver.socket.close()
    return 1 if failed else 0


def _count_ready(ready_r: int, workers: int, timeout: float = 120.0) -> int:
    """Read the workers' one-byte "serving" notes from the pipe: all of them, or what came before it closed.

    The pipe closes when every worker has written its note or exited, whichever comes first.
    """
    import select
    import time

    got = 0
    deadline = time.monotonic() + timeout
    while got < workers and time.monotonic() < deadline:
        if not select.select([ready_r], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        data = os.read(ready_r, workers)
        if not data:  # every write end closed: the missing workers exited
            break
        got += len(data)
    return got


def _fork(receiver: Receiver, workers: int, ready_w: int) -> list[int]:
    """Fork ``workers`` processes that serve ``receiver``'s socket (no event loop or thread runs yet here).

    Each writes one byte to ``ready_w`` once it serves, and closes it.
    """
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: its own process group, so a terminal's Ctrl-C reaches it once, from the parent
            code = 1
            try:
                os.setpgid(0, 0)

                def ready() -> None:
                    os.write(ready_w, b"1")
                    os.close(ready_w)

                receiver.run(ready=ready)
                code = 0
            except Exception as exc:  # said here: os._exit below leaves no traceback
                print(f"spendtrace otlp: receiver process {os.getpid()}: {exc}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        children.append(pid)
    return children


def _supervise(children: list[int], *, stop: bool = False) -> bool:
    """Pass SIGINT / SIGTERM on to the workers (``stop``: send SIGTERM now) and wait for all of them to finish
    their requests and exit; returns whether any of them failed."""
    import signal

    def forward(signum: int, frame: object) -> None:
        for pid in children:
            with suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed = False
    try:
        if stop:
            forward(signal.SIGTERM, None)
        for pid in children:
            _, status = os.waitpid(pid, 0)
            failed |= os.waitstatus_to_exitcode(status) not in (0, -signal.SIGTERM, -signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return failed
