"""What the SDK, the wire schema and ``prepare`` accept, bounded by what the stores hold (issue #15, item 2).

Local mode (no broker) included: a span no store can hold is kept as a dead letter with its reason and the
rest of its batch is stored, so a bad frame in the spill no longer blocks every later frame forever.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec
import pytest

from consumers.testing import make_spans
from spendtrace import add_api_call
from spendtrace.schema import MAX_UNITS, Span, UsageItem, decode_span, encode_span
from spendtrace.sdk.export._processor import BatchProcessor
from spendtrace.sdk.export._spill import SpillStore
from spendtrace.server.ingest.prepare import MAX_SPAN_COST_NANO, prepare_batch, prepare_isolating
from spendtrace.server.local_export import LOCAL_DEAD_LETTER_TOPIC, LocalStoreExporter
from spendtrace.server.pricing import PriceBook, current_book


@pytest.mark.parametrize(
    "kwargs",
    [{"count": 1e20}, {"input_tokens": 2**63}, {"bytes": MAX_UNITS + 1}, {"gb_seconds": 2.0**60}, {"count": 10**400}],
)
def test_add_api_call_refuses_units_past_the_bound_at_the_call_site(kwargs: dict[str, float]) -> None:
    """Units the stores' 64-bit sums cannot hold raise ValueError where the app records them."""
    with pytest.raises(ValueError, match="between 0 and 17592186044415"):
        add_api_call("s3_get", **kwargs)


def test_the_wire_schema_refuses_what_the_stores_cannot_hold() -> None:
    """start_ns past 2100, a duration past 100 years, tokens past MAX_UNITS do not decode (they become dead letters)."""
    good = make_spans(2, seed=3)[-1]
    assert decode_span(encode_span(good)) == good
    edge = msgspec.structs.replace(good, usage=(UsageItem("s3_get", count=float(MAX_UNITS), bytes=MAX_UNITS),))
    assert decode_span(encode_span(edge)) == edge
    for change in (
        {"start_ns": 2**63},
        {"duration_ns": 2**62},
        {"usage": (UsageItem("s3_get", input_tokens=MAX_UNITS + 1),)},
        {"weight": 1e13},
    ):
        with pytest.raises(msgspec.ValidationError, match="Expected"):
            decode_span(encode_span(msgspec.structs.replace(good, **change)))


def test_prepare_isolating_leaves_out_only_the_spans_that_cannot_be_stored() -> None:
    """Spans made in-process (never decoded) are checked in prepare: the bad ones are named, the rest prepared."""
    spans = make_spans(20, seed=5)
    bad = [
        msgspec.structs.replace(spans[3], span_id="late", start_ns=2**63),
        msgspec.structs.replace(spans[4], span_id="tokens", usage=(UsageItem("s3_get", input_tokens=2**63),)),
        msgspec.structs.replace(spans[5], span_id="dear", weight=1e9, usage=(UsageItem("dynamodb_read", count=1e6),)),
    ]
    book = PriceBook.default()
    batch, rejected = prepare_isolating([*spans[:10], *bad, *spans[10:]], book)
    assert [(i, r.split(":")[0]) for i, r in rejected] == [(10, "cannot be stored")] * 1 + [
        (11, "cannot be stored"),
        (12, "cannot be stored"),
    ]
    assert "start_ns=9223372036854775808" in rejected[0][1] and "input_tokens" in rejected[1][1]
    assert f"{MAX_SPAN_COST_NANO}" in rejected[2][1]
    assert [s.span_id for s in batch.spans] == [s.span_id for s in spans]
    assert batch.cost_nano == prepare_batch(spans, book).cost_nano


def test_a_batch_whose_sum_would_pass_64_bits_keeps_the_longest_prefix_that_fits() -> None:
    """Each span under the per-span bound, but together past 2**63 nano-dollars: the overflowing tail is left out."""
    one = Span("s", None, "r", "f", start_ns=1_700_000_000 * 10**9, weight=990_000.0,
               usage=(UsageItem("dynamodb_read", count=4e6),))  # fmt: skip
    book = PriceBook.default()
    each = prepare_batch([one], book).cost_nano
    assert MAX_SPAN_COST_NANO // 2 < each <= MAX_SPAN_COST_NANO
    n = (2**63 - 1) // each + 40
    spans = [msgspec.structs.replace(one, span_id=f"s{i}", request_id=f"r{i}") for i in range(n)]
    batch, rejected = prepare_isolating(spans, book)
    assert len(batch.spans) == (2**63 - 1) // each
    assert [i for i, _ in rejected] == list(range(len(batch.spans), n))
    assert batch.cost_nano <= 2**63 - 1 and "overflows a 64-bit integer" in rejected[0][1]


def _stored(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_local_mode_a_bad_span_in_the_spill_costs_only_itself(tmp_path: Path) -> None:
    """A spill frame left by an earlier run with one unstorable span: its good spans and every later frame are stored.

    Before, the frame failed on every replay and blocked all the frames behind it forever.
    """
    db, spill_dir = tmp_path / "cost.db", tmp_path / "spill"
    spans = make_spans(60, seed=8)
    # A count past 64 bits (a start_ns past 2**63 is now refused earlier, as dated ahead of the host's clock).
    poison = msgspec.structs.replace(spans[0], span_id="poison", usage=(UsageItem("s3_get", input_tokens=2**63),))
    earlier = SpillStore(spill_dir)
    earlier.write([*spans[:10], poison, *spans[10:20]])
    earlier.write(spans[20:40])
    earlier.close()
    exporter = LocalStoreExporter(db, alerts=False)
    processor = BatchProcessor(exporter, spill_dir=spill_dir, batch_size=16, max_delay=0.05, fsync=False)
    try:
        processor.extend(spans[40:])
        deadline = time.monotonic() + 60
        while processor.spill.has_backlog() or processor.counters().exported < len(spans):
            assert time.monotonic() < deadline, f"spill not drained: {processor.counters()}"
            time.sleep(0.05)
    finally:
        processor.shutdown()
    assert _stored(db, "SELECT count(*), sum(cost_nano) FROM spans") == [
        (len(spans), prepare_batch(spans, current_book()).cost_nano)
    ]
    (topic, key, value, reason), *more = _stored(db, "SELECT topic, key, value, reason FROM dead_letters")
    assert not more and topic == LOCAL_DEAD_LETTER_TOPIC
    assert "cannot be stored" in reason and "input_tokens" in reason
    assert bytes(key) == poison.request_id.encode() and bytes(value) == encode_span(poison)
    assert exporter.dead_lettered == 1
    assert not list(spill_dir.glob("*.spill"))


def test_local_mode_a_host_clock_before_2000_gives_dead_letters_not_spend(tmp_path: Path) -> None:
    """A span dated 1970 (the host clock is wrong) is a dead letter with the reason; the rest of its batch is stored."""
    db = tmp_path / "cost.db"
    spans = make_spans(30, seed=9)
    dated_1970 = msgspec.structs.replace(spans[7], span_id="epoch", start_ns=12 * 10**9)
    exporter = LocalStoreExporter(db, alerts=False)
    try:
        exporter.export([*spans[:10], dated_1970, *spans[10:]])
    finally:
        exporter.shutdown()
    assert _stored(db, "SELECT count(*), sum(cost_nano) FROM spans") == [
        (len(spans), prepare_batch(spans, current_book()).cost_nano)
    ]
    [(reason, value)] = _stored(db, "SELECT reason, value FROM dead_letters")
    assert "before 2000-01-01" in reason and "start_ns=12000000000" in reason
    assert bytes(value) == encode_span(dated_1970)
