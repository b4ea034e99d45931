"""OTLP fixtures: the receiver on a free loopback port, and real OpenTelemetry SDK tracers exporting to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.processor.baggage import ALLOW_ALL_BAGGAGE_KEYS, BaggageSpanProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from spendtrace.server.otlp.receiver import Receiver, StoreSink


@pytest.fixture
def store_receiver(db_path: Path) -> Iterator[Receiver]:
    """A receiver writing into the SQLite store at ``db_path`` (the no-broker mode)."""
    with Receiver(StoreSink(db_path), port=0) as r:
        yield r


@pytest.fixture
def make_tracer(store_receiver: Receiver) -> Iterator[Callable[..., TracerProvider]]:
    """Build real TracerProviders exporting over OTLP/HTTP protobuf to ``store_receiver`` (or ``url``).

    Baggage entries are copied onto every span (``BaggageSpanProcessor``), as an app propagating its
    feature and tenant that way would. ``batch=True`` exports only on ``force_flush`` (one export per
    flush); otherwise every span is exported when it ends, children before their parents.
    """
    made: list[TracerProvider] = []

    def make(service: str = "shop", *, url: str | None = None, batch: bool = False) -> TracerProvider:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BaggageSpanProcessor(ALLOW_ALL_BAGGAGE_KEYS))
        exporter = OTLPSpanExporter(endpoint=url or store_receiver.url)
        if batch:
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=3_600_000))
        else:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        made.append(provider)
        return provider

    try:
        yield make
    finally:
        for p in made:
            p.shutdown()
