"""AWS Pricing API provider: current us-east-1 list prices for the AWS keys, cached on disk.

Uses the boto3 ``pricing`` client (the API lives in us-east-1) and ``GetProducts`` filtered by
service, region and usage type, paginated. For each product it takes the on-demand price
dimension of the first paid tier (lowest ``beginRange`` with a non-zero price) and the term's
``effectiveDate`` as ``effective_from``. Results are cached as JSON (default
``~/.cache/spendtrace/aws_prices.json``, 24 h). Any failure - boto3 missing, no credentials,
throttling, an unexpected document - falls back to the static table and is logged once.
Bedrock model prices are not published there in a usable form; they stay static.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from spendtrace.server.pricing._entry import PriceEntry, to_decimal

__all__ = ["AWS_QUERIES", "aws_entries", "aws_pricing_wanted", "fetch_aws_entries", "parse_price_list"]

_log = logging.getLogger("spendtrace.pricing")
_warned = False

REGION_CODE = "us-east-1"
_SOURCE = "aws-pricing-api"
_DEFAULT_TTL_S = 24 * 3600

#: (ServiceCode, usagetype) -> [(key, service, rate field, page)] priced from that product.
AWS_QUERIES: dict[tuple[str, str], list[tuple[str, str, str, str]]] = {
    ("AmazonDynamoDB", "ReadRequestUnits"): [
        ("dynamodb_read", "dynamodb", "per_request", "https://aws.amazon.com/dynamodb/pricing/on-demand/")
    ],
    ("AmazonDynamoDB", "WriteRequestUnits"): [
        ("dynamodb_write", "dynamodb", "per_request", "https://aws.amazon.com/dynamodb/pricing/on-demand/")
    ],
    ("AmazonS3", "Requests-Tier2"): [
        (k, "s3", "per_request", "https://aws.amazon.com/s3/pricing/") for k in ("s3_get", "s3_head")
    ],
    ("AmazonS3", "Requests-Tier1"): [
        (k, "s3", "per_request", "https://aws.amazon.com/s3/pricing/")
        for k in ("s3_put", "s3_copy", "s3_post", "s3_list")
    ],
    ("AWSLambda", "Request"): [
        (k, "lambda", "per_request", "https://aws.amazon.com/lambda/pricing/")
        for k in ("aws_lambda_request", "lambda_request")
    ],
    ("AWSLambda", "Lambda-GB-Second"): [
        (k, "lambda", "per_gb_second", "https://aws.amazon.com/lambda/pricing/")
        for k in ("lambda_gb_second", "aws_lambda_gb_second")
    ],
    ("AWSLambda", "Lambda-GB-Second-ARM"): [
        (k, "lambda", "per_gb_second", "https://aws.amazon.com/lambda/pricing/")
        for k in ("lambda_gb_second_arm64", "aws_lambda_gb_second_arm64")
    ],
    ("AWSQueueService", "Requests-RBP"): [
        (k, "sqs", "per_request", "https://aws.amazon.com/sqs/pricing/")
        for k in ("sqs_send", "sqs_receive", "sqs_delete", "sqs_change_visibility")
    ],
}


def _first_paid_dimension(product: dict[str, Any]) -> tuple[Any, date | None] | None:
    """(USD per unit, effective date) of the product's first paid on-demand tier, or None."""
    best: tuple[float, Any, date | None] | None = None
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        eff = term.get("effectiveDate")
        eff_date = date.fromisoformat(eff[:10]) if isinstance(eff, str) and len(eff) >= 10 else None
        for dim in term.get("priceDimensions", {}).values():
            usd = dim.get("pricePerUnit", {}).get("USD")
            if usd is None:
                continue
            begin = float(dim.get("beginRange", "0") or 0)
            if float(usd) == 0.0:
                continue
            if best is None or begin < best[0]:
                best = (begin, usd, eff_date)
    return None if best is None else (best[1], best[2])


def parse_price_list(service_code: str, usagetype: str, price_list: list[str], as_of: date) -> list[PriceEntry]:
    """Entries for the keys ``AWS_QUERIES`` maps to this product, from ``GetProducts``' PriceList strings."""
    targets = AWS_QUERIES[(service_code, usagetype)]
    for raw in price_list:
        product = json.loads(raw)
        attrs = product.get("product", {}).get("attributes", {})
        if attrs.get("usagetype") != usagetype:
            continue
        found = _first_paid_dimension(product)
        if found is None:
            continue
        usd, eff = found
        rate = to_decimal(usd, f"{service_code}/{usagetype}")
        return [
            PriceEntry(
                key=key,
                service=service,
                effective_from=eff or as_of,
                source=_SOURCE,
                source_url=url,
                as_of=as_of,
                unit=usagetype,
                **{field: rate},
            )
            for key, service, field, url in targets
        ]
    raise ValueError(f"no priced {service_code} product with usagetype {usagetype} in the answer")


@contextlib.contextmanager
def _suppressed() -> Iterator[None]:
    """Keep our own pricing calls out of the spans (when the recording layer is present)."""
    try:
        from spendtrace.sdk.context import suppress_instrumentation
    except ImportError:  # pragma: no cover - the recording layer always ships with the package
        yield
        return
    with suppress_instrumentation():
        yield


def fetch_aws_entries(client: Any = None, *, today: date | None = None) -> list[PriceEntry]:
    """Ask the Pricing API for every ``AWS_QUERIES`` product; raises on any failure."""
    as_of = today or date.today()
    with _suppressed():
        if client is None:
            import boto3  # lazily: the aws extra

            client = boto3.client("pricing", region_name="us-east-1")
        paginator = client.get_paginator("get_products")
        entries: list[PriceEntry] = []
        for service_code, usagetype in AWS_QUERIES:
            price_list: list[str] = []
            for page in paginator.paginate(
                ServiceCode=service_code,
                FormatVersion="aws_v1",
                Filters=[
                    {"Type": "TERM_MATCH", "Field": "regionCode", "Value": REGION_CODE},
                    {"Type": "TERM_MATCH", "Field": "usagetype", "Value": usagetype},
                ],
            ):
                price_list.extend(page.get("PriceList", []))
            entries.extend(parse_price_list(service_code, usagetype, price_list, as_of))
    return entries


def aws_pricing_wanted() -> bool:
    """Whether ``PriceBook.load`` asks AWS by default: ``SPENDTRACE_AWS_PRICING`` if set, else when boto3
    is installed and credentials are configured (environment, config files, container or web
    identity); the EC2 metadata service is not probed, so this check never waits on the network."""
    forced = os.environ.get("SPENDTRACE_AWS_PRICING", "").strip().lower()
    if forced:
        return forced not in ("0", "false", "no", "off")
    if importlib.util.find_spec("boto3") is None:
        return False
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    home = Path(os.path.expanduser("~"))
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE"), env.get("AWS_CONFIG_FILE")]
    candidates = [Path(f) for f in files if f] + [home / ".aws" / "credentials", home / ".aws" / "config"]
    return any(p.is_file() for p in candidates)


def _default_cache_dir() -> Path:
    base = os.environ.get("SPENDTRACE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "spendtrace"
    )
    return Path(base)


def _read_cache(path: Path, ttl_s: float) -> list[PriceEntry] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if time.time() - float(data["fetched_at"]) > ttl_s:
            return None
        return [PriceEntry.from_dict(e, source=_SOURCE) for e in data["entries"]]
    except Exception:  # a missing, stale or corrupt cache is just a miss
        return None


def _write_cache(path: Path, entries: list[PriceEntry]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fetched_at": time.time(), "entries": [e.to_dict() for e in entries]}))
        os.replace(tmp, path)
    except OSError as exc:
        _log.info("could not cache AWS prices at %s: %s", path, exc)


def aws_entries(
    *,
    client: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    ttl_s: float = _DEFAULT_TTL_S,
) -> list[PriceEntry] | None:
    """Current AWS Pricing API rates (cached on disk for ``ttl_s``), or ``None`` if they cannot be
    had (logged once per process); ``PriceBook.load`` lays them over the static table."""
    global _warned
    cache = Path(os.fspath(cache_dir)) if cache_dir is not None else _default_cache_dir()
    cache_file = cache / "aws_prices.json"
    entries = _read_cache(cache_file, ttl_s)
    if entries is None:
        try:
            entries = fetch_aws_entries(client)
        except Exception as exc:  # any failure: the static table it is
            if not _warned:
                _warned = True
                _log.warning(
                    "AWS Pricing API unavailable (%s: %s); using the static price table", type(exc).__name__, exc
                )
            return None
        _write_cache(cache_file, entries)
    return entries
