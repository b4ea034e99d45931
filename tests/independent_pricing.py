"""What the test data costs, from the providers' published rates written here, without spendtrace's pricing code.

Tests compare stored totals with ``cost_nano(spans)`` rather than with ``prepare_batch(...).cost_nano``,
so a wrong rate in the shipped table, a wrong rounding or a unit billed twice makes them fail instead
of agreeing with itself. Covers the keys the shared test data records (``consumers.testing.make_spans``
and the end-to-end app): DynamoDB reads and writes, S3 GET and PUT, Claude 3 Haiku on Bedrock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

from spendtrace.schema import Span, UsageItem

_M = 1_000_000

#: 2024-11-01 00:00 UTC: DynamoDB's on-demand price cut; ``PUBLISHED_USD`` holds from then on.
PUBLISHED_SINCE_NS = 1_730_419_200 * 10**9

#: USD per single billed unit and the service, for every key the test data records (``mystery_api`` has
#: none: unpriced).
PUBLISHED_USD: dict[str, tuple[str, dict[str, Fraction]]] = {
    # https://aws.amazon.com/dynamodb/pricing/on-demand/ : $0.125 per million read request units and
    # $0.625 per million write request units (us-east-1, since 2024-11-01; $0.25 / $1.25 before)
    "dynamodb_read": ("dynamodb", {"count": Fraction("0.125") / _M}),
    "dynamodb_write": ("dynamodb", {"count": Fraction("0.625") / _M}),
    # https://aws.amazon.com/s3/pricing/ : S3 Standard, $0.0004 per 1,000 GET and $0.005 per 1,000 PUT
    # requests (us-east-1); the bytes moved within a region are not billed per request
    "s3_get": ("s3", {"count": Fraction("0.0004") / 1000}),
    "s3_put": ("s3", {"count": Fraction("0.005") / 1000}),
    # https://aws.amazon.com/bedrock/pricing/ : Anthropic Claude 3 Haiku, $0.25 / $1.25 per million input /
    # output tokens, cache reads $0.03 per million (also https://www.anthropic.com/pricing for Haiku 3)
    "bedrock_claude_3_haiku": (
        "bedrock",
        {
            "input_tokens": Fraction("0.25") / _M,
            "output_tokens": Fraction("1.25") / _M,
            "cache_read_tokens": Fraction("0.03") / _M,
        },
    ),
}

#: The rates that differ before ``PUBLISHED_SINCE_NS`` (same page: DynamoDB on-demand before the cut).
EARLIER_USD: dict[str, tuple[str, dict[str, Fraction]]] = {
    **PUBLISHED_USD,
    "dynamodb_read": ("dynamodb", {"count": Fraction("0.25") / _M}),
    "dynamodb_write": ("dynamodb", {"count": Fraction("1.25") / _M}),
}

# Units that make an item unpriced when they have no rate, and units billed only where they have one.
_NEED_A_RATE = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "gb_seconds",
)
_BILLED_IF_RATED = ("count", "bytes")


def price_nano(item: UsageItem, at_ns: int) -> tuple[int | None, str]:
    """(nano-dollars or None if unpriced, service) of one item at ``at_ns``, from the rates written above."""
    return rated_nano(item, PUBLISHED_USD if at_ns >= PUBLISHED_SINCE_NS else EARLIER_USD)


def rated_nano(item: UsageItem, table: Mapping[str, tuple[str, Mapping[str, Fraction]]]) -> tuple[int | None, str]:
    """(nano-dollars or None if unpriced, service) of one item at the rates of ``table`` (key -> service, rates).

    The documented rule: tokens and GB-seconds need a rate (else the item is unpriced); a request
    count or bytes are billed only where there is a rate for them; an item with nothing billed
    is unpriced. The exact USD amount is rounded once to nano-dollars, half to even.
    """
    if item.key not in table:
        return None, item.service
    service, per_unit = table[item.key]
    service = item.service or service
    usd = Fraction(0)
    billed = False
    for name in _NEED_A_RATE + _BILLED_IF_RATED:
        units = getattr(item, name)
        if not units:
            continue
        if name in per_unit:
            usd += Fraction(units) * per_unit[name]
            billed = True
        elif name in _NEED_A_RATE:
            return None, service
    if not billed:
        return None, service
    return round(usd * 10**9), service  # Fraction rounds half to even


def span_cost_nano(span: Span) -> int:
    """One unsampled span's priced cost (its unpriced items count for nothing)."""
    if span.weight != 1.0:
        raise ValueError("sampled spans are not priced here: weight the cost in the test itself")
    return sum(nano for item in span.usage if (nano := price_nano(item, span.start_ns)[0]) is not None)


def cost_nano(spans: Iterable[Span]) -> int:
    """Total priced cost of unsampled spans, in nano-dollars."""
    return sum(span_cost_nano(s) for s in spans)
