"""A spill frame holding a span Kafka refuses for good (too large) no longer blocks the frames behind it (issue #15).

Before, the whole frame's export failed on every replay (``MessageSizeTooLargeError``), so it and every
frame after it stayed in the spill forever, retried. Now the rest of the frame is delivered, the
refused span is counted (``rejected``) and logged with its ids and the reason, and replay moves on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest
from test_kafka_export import consume, wait_for

from consumers.testing import make_spans
from spendtrace.sdk.export._kafka import KafkaExporter
from spendtrace.sdk.export._processor import BatchProcessor
from spendtrace.sdk.export._spill import SpillStore
from spendtrace.server.broker import EmbeddedBroker


def test_a_span_too_large_for_kafka_is_counted_and_the_spill_behind_it_is_delivered(
    broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture, export_reset: None
) -> None:
    """Three frames, the middle one with a 3 MB span: the 30 others reach the topic once, 1 rejected, spill empty."""
    caplog.set_level(logging.ERROR, logger="spendtrace.export")
    spans = make_spans(30, seed=95)
    huge = msgspec.structs.replace(spans[0], span_id="huge", feature="f" * 3_000_000)
    spill = tmp_path / "spill"
    earlier = SpillStore(spill, fsync=False)  # what an earlier run of the app left while Kafka was down
    earlier.write(spans[:10])
    earlier.write([*spans[10:15], huge, *spans[15:20]])
    earlier.write(spans[20:])
    earlier.close()
    topic = "rejected.test"
    processor = BatchProcessor(KafkaExporter(broker.bootstrap, topic), spill_dir=spill, fsync=False)
    try:
        wait_for(lambda: processor.counters().replayed == 30, 60, "the spill to be replayed")
        counters = processor.counters()
    finally:
        processor.shutdown()
    assert (counters.replayed, counters.exported, counters.rejected, counters.export_errors) == (30, 30, 1, 0)
    assert not list(spill.glob("*.spill"))
    got = consume(broker.bootstrap, topic, until=lambda m: len(m) >= 30)
    assert sorted(s.span_id for _, s in got) == sorted(s.span_id for s in spans)
    errors = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(errors) == 1 and "span huge of request" in errors[0] and "too large for Kafka" in errors[0]
