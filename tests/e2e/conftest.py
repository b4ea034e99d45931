"""End-to-end fixtures: the instrumented app's spans, recorded once per session through the real SDK and broker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pipeline_support import N_SPANS, Expected, Recorded, _Tee, run_app

from spendtrace.schema import Span
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.pricing import PriceBook


@pytest.fixture(scope="session")
def recorded(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """20,000 spans recorded by the instrumented app and exported to their own topic through the real SDK."""
    from spendtrace import configure, flush
    from spendtrace.sdk import config as _config
    from spendtrace.sdk import sampling as _sampling
    from spendtrace.sdk.export import KafkaExporter

    topic = "e2e-sdk-spans"
    _config.reset()
    previous_rate = _sampling.get_global_sample_rate()
    _sampling.set_global_sample_rate(1.0)
    tee = _Tee(KafkaExporter(broker.bootstrap, topic, partitions=6))
    submitted = 0

    # A buffer big enough that nothing spills for want of room: this run is about the Kafka path (the spill
    # has its own tests). Spans that waited max_delay while an export was busy may still go to the spill on a
    # loaded machine; they are replayed through the same exporter (the tee) in the background, waited for below.
    spill = tmp_path_factory.mktemp("spill")
    processor = configure(exporter=tee, batch_size=2_000, max_delay=0.05, max_queue=1_000_000, spill_dir=spill)
    original = processor.on_span

    def counting(span: Span) -> None:  # count what the app records, to know when to stop
        nonlocal submitted
        submitted += 1
        original(span)

    from spendtrace.sdk import pipeline as _pipeline

    _pipeline.set_sink(counting)
    try:
        run_app(N_SPANS, lambda: submitted)
        result = flush(60)
        assert result.pending == 0 and result.dropped == 0, result
        deadline = time.monotonic() + 120
        while len(tee.spans) < submitted:  # what went to the spill is replayed from it in the background
            assert time.monotonic() < deadline, f"{submitted - len(tee.spans)} spans left in the spill ({result})"
            time.sleep(0.05)
    finally:
        _config.reset()
        _sampling.set_global_sample_rate(previous_rate)
    spans = tee.spans
    assert len(spans) == submitted >= N_SPANS
    assert len({s.span_id for s in spans}) == len(spans)
    book = PriceBook.default()
    yield Recorded(topic, spans, book, Expected.compute(spans))
