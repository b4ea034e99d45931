"""Wire format: spans survive encode/decode, and old and new producers and consumers understand each other."""

from __future__ import annotations

import math

import msgspec
import pytest
from _old_wire import OldSpan, OldSpanOfOldItems, OldUsageItem

from spendtrace.schema import UNATTRIBUTED, Span, UsageItem, decode_span, decode_spans, encode_span


def full_span() -> Span:
    """A span with every field set to something other than its default."""
    return Span(
        "sid-1", "sid-0", "req-abc-123", "search", "query", "/api/search", "tenant-acme",
        1_793_620_800_000_000_000, 1500, 900, True, "TimeoutError",
        (UsageItem("bedrock_claude_3_haiku", "bedrock", 1.0, 512, 128, 64, 32, 16, 8, 0.5, "bedrock",
                   "us.anthropic.claude-3-haiku-20240307-v1:0", "priority", "us", "arm64"), UsageItem("s3_get")),
        10.0, ("api", "search"), 1024, "arm64",
    )  # fmt: skip


def test_round_trip_keeps_every_field() -> None:
    """encode_span then decode_span gives back an equal span; decode_spans reads a list of them."""
    span = full_span()
    assert decode_span(encode_span(span)) == span
    assert decode_spans(msgspec.msgpack.encode([span, span])) == [span, span]


def test_encoding_is_compact_array() -> None:
    """Spans travel as msgpack arrays (array_like), not maps with field names."""
    assert b"feature" not in encode_span(full_span())


class NewSpan(msgspec.Struct, array_like=True, frozen=True):
    """What a newer producer might send: every current field plus one appended at the end."""

    span_id: str
    parent_id: str | None
    request_id: str
    feature: str
    operation: str | None = None
    endpoint: str | None = None
    user_id: str | None = None
    start_ns: int = 0
    duration_ns: int = 0
    cpu_ns: int = 0
    error: bool = False
    error_type: str | None = None
    usage: tuple[UsageItem, ...] = ()
    weight: float = 1.0
    path: tuple[str, ...] = ()
    lambda_memory_mb: int = 0
    lambda_architecture: str | None = None
    region: str = "eu-west-1"


def test_current_decoder_reads_an_older_span() -> None:
    """Trailing fields an old producer did not send take their defaults."""
    old = OldSpan("s", None, "s", "search", usage=(UsageItem("dynamodb_read", count=2.0),))
    span = decode_span(msgspec.msgpack.encode(old))
    assert (span.feature, span.usage[0].count) == ("search", 2.0)
    assert (span.weight, span.path, span.lambda_memory_mb, span.lambda_architecture) == (1.0, (), 0, None)


def test_current_decoder_reads_a_newer_span() -> None:
    """An extra trailing field from a newer producer is ignored, the rest decodes unchanged."""
    current = full_span()
    newer = NewSpan(*msgspec.structs.astuple(current))
    assert decode_span(msgspec.msgpack.encode(newer)) == current


def test_old_decoder_reads_a_current_span() -> None:
    """An old consumer decodes today's spans, ignoring the fields it does not know."""
    old = msgspec.msgpack.Decoder(OldSpan).decode(encode_span(full_span()))
    assert (old.span_id, old.feature, old.error_type, len(old.usage)) == ("sid-1", "search", "TimeoutError", 2)


def test_old_usage_items_decode_with_no_model_provider_tier_or_region() -> None:
    """Items from before the billing fields decode unchanged, the new fields None (priced by key as before)."""
    old = OldSpanOfOldItems("s", None, "s", "chat", usage=(OldUsageItem("openai_gpt4o", "openai", 1.0, 10, 5),))
    item = decode_span(msgspec.msgpack.encode(old)).usage[0]
    assert item == UsageItem("openai_gpt4o", "openai", 1.0, 10, 5)
    assert (item.provider, item.model, item.service_tier, item.region, item.architecture) == (None,) * 5


def test_old_decoder_reads_usage_items_with_billing_fields() -> None:
    """An old consumer reads today's items and ignores provider, model, tier, region and architecture."""
    old = msgspec.msgpack.Decoder(OldSpanOfOldItems).decode(encode_span(full_span()))
    assert old.usage[0] == OldUsageItem("bedrock_claude_3_haiku", "bedrock", 1.0, 512, 128, 64, 32, 16, 8, 0.5)


@pytest.mark.parametrize(
    "bad",
    [
        Span("s", None, "s", ""),  # empty feature
        Span("s", None, "s", "f", usage=(UsageItem("k", count=math.nan),)),
        Span("s", None, "s", "f", usage=(UsageItem("k", count=-1.0),)),
        Span("s", None, "s", "f", usage=(UsageItem("k", input_tokens=-3),)),
        Span("s", None, "s", "f", usage=(UsageItem(""),)),
        Span("s", None, "s", "f", weight=0.5),
        Span("", None, "s", "f"),
        Span("s", None, "s", "f", usage=(UsageItem("k", model="m" * 300),)),
        Span("s", None, "s", "f", usage=(UsageItem("k", service_tier="t" * 65),)),
    ],
)
def test_decoder_rejects_invalid_spans(bad: Span) -> None:
    """What the SDK never produces but a buggy or hostile producer could is rejected on decode."""
    with pytest.raises(msgspec.ValidationError):
        decode_span(encode_span(bad))


def test_unattributed_name_is_a_valid_feature() -> None:
    """The feature used for usage outside any scope passes the consumers' validation."""
    span = Span("s", None, "s", UNATTRIBUTED, path=(UNATTRIBUTED,))
    assert decode_span(encode_span(span)).feature == "__unattributed__"
