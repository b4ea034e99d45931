"""Price book: dated rates, exact costs, static coverage, overrides (file and README API), AWS Pricing API."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from spendtrace import AWSCostModel, PriceBook, PricingError, UsageItem, get_tracker
from spendtrace.sdk.instrument._models import KNOWN_PRICE_KEYS
from spendtrace.server.pricing import PriceEntry, current_book, set_base_book
from spendtrace.server.pricing import _aws as aws_mod
from spendtrace.server.pricing._aws import AWS_QUERIES, aws_entries

README_KEYS = (
    "dynamodb_read",
    "dynamodb_write",
    "s3_get",
    "s3_put",
    "aws_lambda_request",
    "sqs_send",
    "sqs_receive",
    "bedrock_claude_3_haiku",
    "bedrock_claude_3_sonnet",
    "bedrock_claude_3_opus",
    "openai_gpt4",
)


def aws_book(**kwargs: Any) -> PriceBook:
    """The static book with the AWS Pricing API's rates on top, as ``PriceBook.load`` lays them."""
    entries = aws_entries(**kwargs)
    base = PriceBook.default()
    return base if entries is None else base.with_overrides(entries, name=f"{base.name}+aws")


def ns(y: int, m: int, d: int) -> int:
    """Noon UTC of a date in ns."""
    return int(datetime(y, m, d, 12, tzinfo=UTC).timestamp()) * 1_000_000_000


def reference_nano(entry: PriceEntry, item: UsageItem) -> int | None:
    """Independent cost: the entry's published Decimal rates times the units, exactly, rounded half-even."""
    usd = Fraction(0)
    parts = [
        (item.count, entry.per_request, 1),
        (item.input_tokens, entry.per_1m_input_tokens, 1_000_000),
        (item.output_tokens, entry.per_1m_output_tokens, 1_000_000),
        (item.cache_read_tokens, entry.per_1m_cache_read_tokens, 1_000_000),
        (item.cache_write_tokens, entry.per_1m_cache_write_tokens, 1_000_000),
        (item.cache_write_1h_tokens, entry.per_1m_cache_write_1h_tokens, 1_000_000),
        (item.bytes, entry.per_gb, 2**30),
        (item.gb_seconds, entry.per_gb_second, 1),
    ]
    billed = False
    for n, (units, rate, per) in enumerate(parts):
        if units:
            if rate is None:
                if n in (0, 6):  # requests and bytes only describe the call where they have no rate
                    continue
                return None
            usd += Fraction(units) * Fraction(rate) / per
            billed = True
    if not billed and (item.count or item.bytes):
        return None
    return round(usd * 10**9)


def test_dynamodb_read_in_october_2024_costs_twice_one_in_december() -> None:
    """The on-demand price cut of 2024-11-01 applies by the span's own time."""
    book = PriceBook.default()
    item = UsageItem("dynamodb_read", count=4.0)
    october, ver_oct = book.price(item, ns(2024, 10, 15))
    december, ver_dec = book.price(item, ns(2024, 12, 15))
    assert october == 2 * december == 1000
    assert ver_oct != ver_dec and ver_dec == "dynamodb_read@2024-11-01:static"
    write = UsageItem("dynamodb_write", count=1.0)
    assert book.price(write, ns(2024, 10, 31))[0] == 2 * book.price(write, ns(2024, 11, 1))[0] == 1250


def test_the_rate_changes_at_midnight_utc() -> None:
    """The last nanosecond of October is priced at the old rate, the first of November at the new one."""
    book = PriceBook.default()
    boundary = int(datetime(2024, 11, 1, tzinfo=UTC).timestamp()) * 1_000_000_000
    item = UsageItem("dynamodb_read", count=1.0)
    assert book.price(item, boundary - 1)[0] == 250
    assert book.price(item, boundary)[0] == 125


def test_every_readme_and_instrumented_key_is_priced() -> None:
    """The static table covers the README's table and every key auto-instrumentation emits, with sources."""
    book = PriceBook.default()
    missing = sorted(k for k in (*README_KEYS, *KNOWN_PRICE_KEYS) if k not in book)
    assert missing == []
    for entry in book.entries():
        assert entry.source == "static"
        assert entry.source_url.startswith("https://"), entry.key
        assert entry.as_of is not None, entry.key


def test_costs_match_an_independent_exact_computation() -> None:
    """Every kind of unit prices to the exact Decimal product, rounded half-even once per item."""
    book = PriceBook.default()
    at = ns(2026, 3, 1)
    items = [
        UsageItem("dynamodb_read", count=0.5),
        UsageItem("dynamodb_write", count=7.0),
        UsageItem("s3_put", count=3.0),
        UsageItem("bedrock_claude_3_haiku", input_tokens=512, output_tokens=128),
        UsageItem(
            "anthropic_claude_sonnet_4_5",
            input_tokens=1234,
            output_tokens=567,
            cache_read_tokens=8901,
            cache_write_tokens=2345,
            cache_write_1h_tokens=678,
        ),
        UsageItem("openai_gpt4o_mini", input_tokens=3, output_tokens=1, cache_read_tokens=7),
        UsageItem("lambda_gb_second", gb_seconds=0.128 * 0.2),
        UsageItem("sqs_send", count=1.0),
    ]
    for item in items:
        entry = book.entry_for(item.key, at)
        assert entry is not None
        got, version = book.price(item, at)
        assert got == reference_nano(entry, item), item
        assert version == entry.version


def test_unknown_keys_and_unrated_units_are_unpriced_not_free() -> None:
    """A key with no entry, or units the entry has no rate for, give None, never 0."""
    book = PriceBook.default()
    assert book.price(UsageItem("made_up_service_call", count=1.0), ns(2026, 1, 1)) == (None, "")
    # openai has no cache-write charge in the table: such units are unpriced rather than free
    cost, version = book.price(UsageItem("openai_gpt4", input_tokens=1, cache_write_tokens=5), ns(2026, 1, 1))
    assert cost is None and version.startswith("openai_gpt4@")
    # an explicit zero rate is a price: S3 DELETE is free
    # requests and bytes without a rate describe the call: an LLM call is one request, a GET moves bytes
    t = ns(2026, 1, 1)
    haiku = UsageItem("bedrock_claude_3_haiku", "bedrock", 1.0, input_tokens=1000, output_tokens=100)
    assert (
        book.price(haiku, t)[0]
        == book.price(UsageItem("bedrock_claude_3_haiku", input_tokens=1000, output_tokens=100), t)[0]
        > 0
    )
    get = UsageItem("s3_get", "s3", 1.0, bytes=2048)
    assert book.price(get, t)[0] == book.price(UsageItem("s3_get", "s3", 1.0), t)[0] > 0
    # ... but a call with only such units and no rate for them is unpriced, not free
    assert book.price(UsageItem("bedrock_claude_3_haiku", count=3.0), t)[0] is None
    assert book.price(UsageItem("s3_delete", count=10.0), ns(2026, 1, 1))[0] == 0


def test_half_even_rounding_once_per_item() -> None:
    """A cost of exactly half a nano-dollar rounds to even; 1.5 rounds up to 2."""
    book = PriceBook([PriceEntry("half", "x", per_request=Decimal("0.0000000005"))])
    assert book.price(UsageItem("half", count=1.0), 0)[0] == 0
    assert book.price(UsageItem("half", count=3.0), 0)[0] == 2
    assert book.price(UsageItem("half", count=5.0), 0)[0] == 2


def test_readme_override_api_feeds_the_current_book() -> None:
    """``api_costs[k] = rate`` + ``get_tracker().cost_model = model`` reprice in-process; changes invalidate."""
    tracker = get_tracker()
    saved = tracker.cost_model
    try:
        at = ns(2026, 1, 1)
        item = UsageItem("dynamodb_read", count=1000.0)
        tracker.cost_model = None
        assert current_book().price(item, at)[0] == 125_000
        model = AWSCostModel()
        assert model.api_costs["dynamodb_read"] == pytest.approx(0.000000125)
        model.api_costs["dynamodb_read"] = 0.000000275
        tracker.cost_model = model
        cost, version = current_book().price(item, at)
        assert cost == 275_000 and version == "dynamodb_read@1970-01-01:user"
        # the pre-cut history is replaced too: a negotiated rate applies to all time
        assert current_book().price(item, ns(2024, 10, 1))[0] == 275_000
        model.api_costs["dynamodb_read"] = 0.0000003
        assert current_book().price(item, at)[0] == 300_000
        # token keys: the value is USD per input token; other token rates scale with it
        model.api_costs["bedrock_claude_3_haiku"] = 0.000000125  # half of $0.25 / 1M
        haiku = UsageItem("bedrock_claude_3_haiku", input_tokens=1_000_000, output_tokens=1_000_000)
        assert current_book().price(haiku, at)[0] == (125_000_000 + 625_000_000)
        model.api_costs["openai_gpt4o"] = {"input": 0.000001, "output": 0.000002}
        gpt = UsageItem("openai_gpt4o", input_tokens=10, output_tokens=10)
        assert current_book().price(gpt, at)[0] == 30_000
        assert current_book() is current_book()  # cached while nothing changes
    finally:
        tracker.cost_model = saved


def test_bad_override_values_raise_pricing_error() -> None:
    """Negative, non-numeric and unknown rate names are refused with the key in the message."""
    model = AWSCostModel()
    model.api_costs["dynamodb_read"] = -1.0
    with pytest.raises(PricingError, match="dynamodb_read"):
        model.overrides()
    model.api_costs["dynamodb_read"] = {"bogus": 1}
    with pytest.raises(PricingError, match="bogus"):
        model.overrides()


def test_prices_file_toml_and_json(tmp_path: Path) -> None:
    """Override files in TOML and JSON replace a key's rates from their effective date, labelled with the file."""
    toml = tmp_path / "prices.toml"
    toml.write_text(
        '[dynamodb_read]\nper_request = "0.0000002"\n\n'
        '[[my_vector_db_query]]\nservice = "vectordb"\neffective_from = "2026-01-01"\nper_request = 0.001\n'
    )
    book = PriceBook.load(prices_file=toml)
    item = UsageItem("dynamodb_read", count=1.0)
    assert book.price(item, ns(2024, 10, 1)) == (200, "dynamodb_read@1970-01-01:override:prices.toml")
    assert book.price(item, ns(2026, 1, 1))[0] == 200
    assert book.price(UsageItem("my_vector_db_query", count=2.0), ns(2026, 2, 1))[0] == 2_000_000
    assert book.service_of("my_vector_db_query") == "vectordb"

    js = tmp_path / "prices.json"
    js.write_text(json.dumps({"dynamodb_read": [{"effective_from": "2025-06-01", "per_request": "0.0000001"}]}))
    book = PriceBook.load(prices_file=js)
    assert book.price(item, ns(2024, 10, 1))[0] == 250  # static history before the override's date
    assert book.price(item, ns(2025, 1, 1))[0] == 125
    assert book.price(item, ns(2025, 7, 1))[0] == 100
    assert book.version != PriceBook.default().version


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.json", "{not json", "not valid JSON"),
        ("p.toml", "[a\nb=", "not valid JSON or TOML"),
        ("p.json", '["a"]', "expected a mapping"),
        ("p.json", '{"k": {"per_request": "abc"}}', "k.per_request"),
        ("p.json", '{"k": {"per_request": -1}}', "must be a finite number >= 0"),
        ("p.json", '{"k": {"per_requests": 1}}', "unknown field"),
        ("p.json", '{"k": {"service": "x"}}', "at least one rate"),
        ("p.json", '{"k": {"per_request": 1, "effective_from": "June"}}', "not a date"),
        ("p.json", "{}", "no entries"),
    ],
)
def test_bad_prices_file_raises_a_clear_error(tmp_path: Path, name: str, text: str, message: str) -> None:
    """Every malformed prices file raises PricingError naming the file and what is wrong."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PricingError, match=message) as info:
        PriceBook.load(prices_file=path)
    assert str(path) in str(info.value)


def test_missing_prices_file_raises(tmp_path: Path) -> None:
    """A prices file that does not exist is a PricingError, not a traceback from open()."""
    with pytest.raises(PricingError, match="cannot read prices file"):
        PriceBook.load(prices_file=tmp_path / "nope.toml")


def test_base_book_setting_reaches_current_book(tmp_path: Path) -> None:
    """``set_base_book`` (what ``--prices`` uses in-process) is what ``current_book`` starts from."""
    path = tmp_path / "p.json"
    path.write_text('{"s3_get": {"per_request": "0.000001"}}')
    try:
        set_base_book(PriceBook.load(prices_file=path))
        assert current_book().price(UsageItem("s3_get", count=1.0), 0)[0] == 1000
    finally:
        set_base_book(None)
    assert current_book().price(UsageItem("s3_get", count=1.0), 0)[0] == 400


def _product(usagetype: str, usd: str, effective: str = "2025-03-01T00:00:00Z", tiers: bool = False) -> str:
    """A GetProducts PriceList document like the real ones (one on-demand term)."""
    dims = {"SKU.TERM.RATE1": {"unit": usagetype, "beginRange": "0", "endRange": "Inf", "pricePerUnit": {"USD": usd}}}
    if tiers:
        dims = {
            "SKU.TERM.RATE2": {"beginRange": "6000000000", "endRange": "Inf", "pricePerUnit": {"USD": "0.000013"}},
            "SKU.TERM.RATE1": {"beginRange": "0", "endRange": "6000000000", "pricePerUnit": {"USD": usd}},
        }
    return json.dumps(
        {
            "product": {"sku": "SKU", "attributes": {"usagetype": usagetype, "regionCode": "us-east-1"}},
            "terms": {"OnDemand": {"SKU.TERM": {"effectiveDate": effective, "priceDimensions": dims}}},
            "serviceCode": "x",
        }
    )


def _stubbed_client() -> tuple[object, Stubber]:
    client = boto3.client(
        "pricing", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return client, Stubber(client)


def test_aws_pricing_api_rates_are_used_and_cached(tmp_path: Path) -> None:
    """GetProducts answers (paginated) become ``aws-pricing-api`` entries, cached on disk for the next load."""
    client, stub = _stubbed_client()
    rates = {
        "ReadRequestUnits": "0.0000001000",
        "WriteRequestUnits": "0.0000005000",
        "Requests-Tier2": "0.0000004000",
        "Requests-Tier1": "0.0000050000",
        "Request": "0.0000002000",
        "Lambda-GB-Second": "0.0000166667",
        "Lambda-GB-Second-ARM": "0.0000133334",
        "Requests-RBP": "0.0000004000",
    }
    for service_code, usagetype in AWS_QUERIES:
        params = {
            "ServiceCode": service_code,
            "FormatVersion": "aws_v1",
            "Filters": [
                {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"},
                {"Type": "TERM_MATCH", "Field": "usagetype", "Value": usagetype},
            ],
        }
        tiers = usagetype.startswith("Lambda-GB-Second")
        if usagetype == "ReadRequestUnits":  # two pages: an unrelated product first, then ours
            stub.add_response(
                "get_products",
                {"FormatVersion": "aws_v1", "PriceList": [_product("IA-ReadRequestUnits", "1")], "NextToken": "t1"},
                params,
            )
            stub.add_response(
                "get_products",
                {
                    "FormatVersion": "aws_v1",
                    "PriceList": [_product(usagetype, rates[usagetype], "2025-02-01T00:00:00Z")],
                },
                {**params, "NextToken": "t1"},
            )
        else:
            stub.add_response(
                "get_products",
                {"FormatVersion": "aws_v1", "PriceList": [_product(usagetype, rates[usagetype], tiers=tiers)]},
                params,
            )
    with stub:
        book = aws_book(client=client, cache_dir=tmp_path)
        stub.assert_no_pending_responses()
    read = UsageItem("dynamodb_read", count=10.0)
    assert book.price(read, ns(2025, 3, 1)) == (1000, "dynamodb_read@2025-02-01:aws-pricing-api")
    assert book.price(read, ns(2024, 10, 1))[0] == 2500  # static history before AWS's effective date
    assert book.price(UsageItem("lambda_gb_second", gb_seconds=1.0), ns(2025, 6, 1))[0] == 16667
    arm = UsageItem("lambda_gb_second", gb_seconds=1.0, architecture="arm64")
    assert book.price(arm, ns(2025, 6, 1)) == (13333, "lambda_gb_second_arm64@2025-03-01:aws-pricing-api")
    assert book.entry_for("s3_list", ns(2025, 6, 1)).source == "aws-pricing-api"  # type: ignore[union-attr]
    assert book.entry_for("bedrock_claude_3_haiku", ns(2025, 6, 1)).source == "static"  # type: ignore[union-attr]
    # a second load within the TTL is served from the cache: the client (no stubs left) is not called
    client2, stub2 = _stubbed_client()
    with stub2:
        again = aws_book(client=client2, cache_dir=tmp_path)
    assert again.version == book.version


def test_aws_pricing_api_failure_falls_back_to_static(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A throttled or denied Pricing API call leaves the static table in force, logged once."""
    aws_mod._warned = False
    client, stub = _stubbed_client()
    stub.add_client_error("get_products", service_error_code="ThrottlingException", http_status_code=400)
    with caplog.at_level(logging.WARNING, logger="spendtrace.pricing"), stub:
        book = aws_book(client=client, cache_dir=tmp_path)
    assert book.version == PriceBook.default().version
    assert any("using the static price table" in r.message for r in caplog.records)
    caplog.clear()
    client2, stub2 = _stubbed_client()
    stub2.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": ["{}"]})
    with caplog.at_level(logging.WARNING, logger="spendtrace.pricing"), stub2:
        assert aws_book(client=client2, cache_dir=tmp_path).version == PriceBook.default().version
    assert caplog.records == []  # logged once per process
    assert not (tmp_path / "aws_prices.json").exists()


def test_price_entry_round_trips_through_dict() -> None:
    """``to_dict`` / ``from_dict`` keep every rate exact, so stored book versions can be re-read."""
    entry = PriceBook.default().entries("anthropic_claude_opus_4_5")[0]
    again = PriceEntry.from_dict(entry.to_dict())
    assert again == entry and again.femto == entry.femto
    assert again.effective_from == date(1970, 1, 1)


def test_aws_pricing_is_asked_by_default_only_where_credentials_are_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PriceBook.load`` asks AWS when credentials are configured (no network probe), or as the env var forces."""
    from spendtrace.server.pricing._aws import aws_pricing_wanted

    for var in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONFIG_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SPENDTRACE_AWS_PRICING", raising=False)
    assert aws_pricing_wanted() is False
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text("[default]\naws_access_key_id = x\n")
    assert aws_pricing_wanted() is True
    monkeypatch.setenv("SPENDTRACE_AWS_PRICING", "0")
    assert aws_pricing_wanted() is False
    monkeypatch.setenv("SPENDTRACE_AWS_PRICING", "1")
    assert aws_pricing_wanted() is True
    # forced on without any credentials: the fetch fails and the static table is used (logged once)
    (tmp_path / ".aws" / "credentials").unlink()
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    aws_mod._warned = True  # the fallback warning was covered above; keep this quiet
    book = PriceBook.load(cache_dir=tmp_path / "cache")
    assert book.version == PriceBook.default().version
