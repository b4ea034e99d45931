"""Deliver spans to Kafka with aiokafka, on a private event loop owned by the export worker thread."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from spendtrace.errors import ConfigError
from spendtrace.schema import Span, encode_span
from spendtrace.sdk.export._base import SpansRejected

if TYPE_CHECKING:
    import asyncio

__all__ = ["KafkaExporter"]

log = logging.getLogger("spendtrace.export")

_ACKS = {"all": "all", -1: "all", "-1": "all", 1: 1, "1": 1, 0: 0, "0": 0}
_COMPRESSION = (None, "gzip", "snappy", "lz4", "zstd")
# Kept alive so that clients abandoned after a fork are never finalised (and warned about) in the child.
_abandoned: list[object] = []


@contextlib.contextmanager
def _suppressed() -> Iterator[None]:
    """Don't attribute the exporter's own traffic (if the recording side is installed)."""
    try:
        from spendtrace.sdk.context import suppress_instrumentation
    except ImportError:  # pragma: no cover - the recording module ships with the SDK
        yield
        return
    with suppress_instrumentation():
        yield


class KafkaExporter:
    """Produces each span as one message: key = request_id (UTF-8), value = ``encode_span(span)``.

    ``export`` sends the whole batch, then waits until every message is acknowledged
    (``acks="all"`` by default), and raises on any failure or after ``export_timeout``
    seconds, so the processor spills the batch; the next export reconnects from scratch. A span
    too large for the producer or the broker is the exception: the rest go, and ``SpansRejected``
    names it, so one such span never blocks a spill replay.
    The topic is created with ``partitions`` partitions when missing, and (``verify_topic``)
    checked again before each batch, at the cost of one metadata request. aiokafka is imported
    on first use, and all its work happens on an event loop private to the calling thread.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = "spendtrace.spans",
        *,
        partitions: int = 3,
        replication_factor: int = 1,
        acks: int | str = "all",
        linger_ms: int = 5,
        compression_type: str | None = "gzip",
        enable_idempotence: bool = False,
        client_id: str = "spendtrace",
        request_timeout_ms: int = 5_000,
        max_batch_size: int = 256 * 1024,
        export_timeout: float | None = None,
        create_topic: bool = True,
        verify_topic: bool = True,
    ) -> None:
        if not isinstance(bootstrap, str) or not bootstrap.strip():
            raise ConfigError(f"KafkaExporter needs a bootstrap 'host:port' string, got {bootstrap!r}")
        if not isinstance(topic, str) or not topic:
            raise ConfigError(f"KafkaExporter needs a topic name, got {topic!r}")
        if acks not in _ACKS:
            raise ConfigError(f"acks must be 'all', 1 or 0, got {acks!r}")
        if compression_type not in _COMPRESSION:
            raise ConfigError(f"compression_type must be one of {_COMPRESSION}, got {compression_type!r}")
        if partitions < 1 or replication_factor < 1:
            raise ConfigError("partitions and replication_factor must be >= 1")
        self.bootstrap = bootstrap.strip()
        self.topic = topic
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.acks = _ACKS[acks]
        self.linger_ms = linger_ms
        self.compression_type = compression_type
        self.enable_idempotence = enable_idempotence
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.max_batch_size = max_batch_size
        self.export_timeout = export_timeout if export_timeout is not None else 2 * request_timeout_ms / 1000 + 1
        self.create_topic = create_topic
        self.verify_topic = verify_topic
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Any = None
        self._topic_ready = False

    def __repr__(self) -> str:
        return f"KafkaExporter({self.bootstrap!r}, topic={self.topic!r})"

    # ---- the SpanExporter protocol ---------------------------------------------------------

    def export(self, spans: Sequence[Span]) -> None:
        """Send ``spans`` and wait for every acknowledgement; raise if any may not have arrived."""
        if not spans:
            return
        import asyncio

        loop = self._get_loop()
        with _suppressed():
            try:
                loop.run_until_complete(asyncio.wait_for(self._send_all(spans), self.export_timeout))
            except SpansRejected:
                raise  # the connection is fine: the rest of the batch was delivered
            except BaseException:
                # Start over next time: a new connection, and the topic checked again (a restarted
                # broker may have lost it).
                loop.run_until_complete(self._discard_producer())
                raise

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Every ``export`` already waits for its acknowledgements: nothing is left buffered."""
        return True

    def shutdown(self) -> None:
        """Close the producer and the private event loop."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        with _suppressed():
            try:
                loop.run_until_complete(self._discard_producer())
            finally:
                loop.close()

    def after_fork_in_child(self) -> None:
        """Forget the parent's loop and connections; the child connects on its first export."""
        _abandoned.extend(x for x in (self._loop, self._producer) if x is not None)
        self._loop = None
        self._producer = None
        self._topic_ready = False

    # ---- internals -------------------------------------------------------------------------

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        import asyncio

        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    async def _send_all(self, spans: Sequence[Span]) -> None:
        import asyncio

        producer = await self._get_producer()
        topic = self.topic
        if self.create_topic and self.verify_topic:
            # One metadata round trip per batch: a broker that lost the topic (the embedded broker
            # forgets everything on restart) would otherwise auto-create it on the first produce
            # and may drop that first, acknowledged, write.
            cluster = await producer.client.fetch_all_metadata()
            if topic not in cluster.topics():
                await self._ensure_topic()
                await producer.client.force_metadata_update()
        from aiokafka.errors import MessageSizeTooLargeError

        rejected: list[tuple[Span, str]] = []
        sent: list[tuple[Span, asyncio.Future[Any]]] = []
        for s in spans:
            try:
                sent.append((s, await producer.send(topic, encode_span(s), key=s.request_id.encode())))
            except MessageSizeTooLargeError as exc:  # this span can never go: the others still do
                rejected.append((s, f"too large for Kafka: {exc}"))
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        for (s, _), r in zip(sent, results, strict=True):
            if isinstance(r, MessageSizeTooLargeError):  # the broker's own limit (message.max.bytes)
                rejected.append((s, f"too large for the broker: {r}"))
            elif isinstance(r, BaseException):
                raise r
        if rejected:
            raise SpansRejected(rejected)

    async def _get_producer(self) -> Any:
        if self._producer is not None:
            return self._producer
        try:
            from aiokafka import AIOKafkaProducer
        except ImportError as exc:  # pragma: no cover - aiokafka is a core dependency
            raise ConfigError("KafkaExporter needs aiokafka: pip install spendtrace") from exc
        if self.create_topic and not self._topic_ready:
            await self._ensure_topic()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            acks=self.acks,
            linger_ms=self.linger_ms,
            compression_type=self.compression_type,
            enable_idempotence=self.enable_idempotence,
            request_timeout_ms=self.request_timeout_ms,
            max_batch_size=self.max_batch_size,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        return producer

    async def _ensure_topic(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.client_id}-admin",
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await admin.start()
            response = await admin.create_topics(
                [NewTopic(self.topic, self.partitions, self.replication_factor)],
                timeout_ms=self.request_timeout_ms,
            )
        except Exception as exc:
            # TopicAlreadyExistsError and friends: producing will tell whether the topic is usable.
            if type(exc).__name__ != "TopicAlreadyExistsError":
                raise
        else:
            for error in getattr(response, "topic_errors", ()):
                code = error[1]
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (returned, not raised, by some brokers)
                    log.warning("spendtrace: creating topic %s returned error code %s: %s", self.topic, code, error)
        finally:
            await admin.close()
        self._topic_ready = True

    async def _discard_producer(self) -> None:
        import asyncio

        producer, self._producer = self._producer, None
        self._topic_ready = False
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.stop(), 2.0)
        except (Exception, asyncio.CancelledError):  # a broker that is gone cannot be closed politely
            log.debug("spendtrace: closing the Kafka producer failed", exc_info=True)
