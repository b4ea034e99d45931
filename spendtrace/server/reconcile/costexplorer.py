"""Actual AWS spend from Cost Explorer (``GetCostAndUsage``), cached, or from a saved response file.

The request is DAILY ``UnblendedCost`` grouped by SERVICE (and by a cost-allocation tag when
one is named); every page is fetched through ``NextPageToken``. Cost Explorer charges per
request, so the pages are cached in the store (``ReconcileStore.cached_pages`` /
``cache_pages``) keyed by (start, end, group-by): a copy fetched after every day of the range
settled is final, an earlier copy (recent, still-changing days) is fetched again once it is
older than ``max_age_s``.

Service names on the bill map to our usage service keys with ``CE_SERVICE_MAP`` (plus every
Bedrock model sold through the AWS Marketplace, "<model> (Amazon Bedrock Edition)", which maps
to ``bedrock``); names that map to nothing (tax, support plans, data transfer, ...) are AWS
spend the model does not cover.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendtrace.errors import ConfigError
from spendtrace.server.model.reconcile import CE_SERVICE_MAP

if TYPE_CHECKING:
    from spendtrace.server.store.base import ReconcileStore

__all__ = [
    "CE_SERVICE_MAP",
    "Actuals",
    "fetch_pages",
    "load_actuals_file",
    "map_service",
    "parse_pages",
]

_BEDROCK_MARKETPLACE_SUFFIX = "(Amazon Bedrock Edition)"


def map_service(ce_name: str) -> str | None:
    """Our service key for a Cost Explorer service name, or None when the model does not price it."""
    key = CE_SERVICE_MAP.get(ce_name)
    if key is not None:
        return key
    if ce_name.endswith(_BEDROCK_MARKETPLACE_SUFFIX) or ce_name.startswith("Amazon Bedrock"):
        return "bedrock"
    return None


def _nano(amount: str | float) -> int:
    try:
        value = Decimal(str(amount))
    except ArithmeticError:
        raise ValueError(f"amount {str(amount)[:40]!r} is not a number") from None
    if not value.is_finite() or abs(value) > 10**12:
        raise ValueError(f"amount {str(amount)[:40]!r} is not a plausible number of USD")
    return int((value * 1_000_000_000).to_integral_value())


@dataclass
class Actuals:
    """Actual spend parsed from GetCostAndUsage pages, in nano-dollars."""

    #: (day "YYYY-MM-DD", Cost Explorer service name) -> amount
    by_day_service: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    #: (tag value, Cost Explorer service name) -> amount; only when grouped by a tag ("" = untagged)
    by_tag_service: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    #: days Cost Explorer itself flags as ``Estimated``
    estimated_days: set[str] = field(default_factory=set)
    #: days the response has a result for (a day missing here is not "$0 billed": it is unknown)
    days: set[str] = field(default_factory=set)
    #: results outside the requested range, left out
    outside: int = 0
    pages: int = 0
    source: str = "cost-explorer"


def parse_pages(
    pages: list[dict[str, Any]], tag_key: str | None = None, start: str | None = None, end: str | None = None
) -> Actuals:
    """Sum ``UnblendedCost`` per day and service (and tag) over every page of a response.

    With ``start`` / ``end`` (``YYYY-MM-DD``, end exclusive) results for other days are left out
    (counted in ``outside``): a saved file for another range must not be compared with this one.
    """
    out = Actuals(pages=len(pages))
    for page in pages:
        for result in page.get("ResultsByTime", []):
            day = str(result["TimePeriod"]["Start"])[:10]
            if (start is not None and day < start) or (end is not None and day >= end):
                out.outside += 1
                continue
            out.days.add(day)
            if result.get("Estimated"):
                out.estimated_days.add(day)
            groups = result.get("Groups") or []
            if not groups and result.get("Total"):
                metric = result["Total"].get("UnblendedCost")
                if metric:
                    out.by_day_service[(day, "(ungrouped)")] += _nano(metric["Amount"])
            for group in groups:
                keys = list(group.get("Keys", []))
                metric = group.get("Metrics", {}).get("UnblendedCost")
                if not keys or not metric:
                    continue
                amount = _nano(metric["Amount"])
                service = keys[0]
                out.by_day_service[(day, service)] += amount
                if tag_key is not None and len(keys) > 1:
                    tag = keys[1]
                    value = tag.split("$", 1)[1] if "$" in tag else tag
                    out.by_tag_service[(value, service)] += amount
    return out


def load_actuals_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Pages from a saved GetCostAndUsage JSON file: one response object, or a list of them (one per page)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"cannot read Cost Explorer actuals from {path}: {exc}") from exc
    pages = data if isinstance(data, list) else [data]
    if not pages or not all(isinstance(p, dict) and "ResultsByTime" in p for p in pages):
        raise ConfigError(f"{path}: not a GetCostAndUsage response (no ResultsByTime)")
    try:
        parse_pages(pages)  # every entry has the shape parse_pages reads, so a report never trips on it later
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigError(f"{path}: malformed GetCostAndUsage response: {what}") from None
    return pages


def _suppressed() -> contextlib.AbstractContextManager[None]:
    """Our own Cost Explorer calls must never be recorded as the app's spend."""
    try:
        from spendtrace.sdk.context import suppress_instrumentation
    except ImportError:  # pragma: no cover - the recording layer is always there in a full install
        return contextlib.nullcontext()
    return suppress_instrumentation()


def make_client() -> Any:
    """A boto3 Cost Explorer client (the API lives in us-east-1)."""
    try:
        import boto3
    except ImportError as exc:
        raise ConfigError("reconciliation against Cost Explorer needs boto3: pip install 'spendtrace[aws]'") from exc
    return boto3.client("ce", region_name="us-east-1")


def _request(start: str, end: str, tag_key: str | None) -> dict[str, Any]:
    group_by: list[dict[str, str]] = [{"Type": "DIMENSION", "Key": "SERVICE"}]
    if tag_key:
        group_by.append({"Type": "TAG", "Key": tag_key})
    return {
        "TimePeriod": {"Start": start, "End": end},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost"],
        "GroupBy": group_by,
    }


def _pages_from_api(client: Any, start: str, end: str, tag_key: str | None) -> Iterator[dict[str, Any]]:
    token: str | None = None
    with _suppressed():
        while True:
            kwargs = _request(start, end, tag_key)
            if token:
                kwargs["NextPageToken"] = token
            try:
                page = client.get_cost_and_usage(**kwargs)
            except Exception as exc:
                if type(exc).__name__ != "NoCredentialsError":  # botocore's; matched by name, no import needed
                    raise
                raise ConfigError(
                    "reconcile() asks AWS Cost Explorer for the bill and found no AWS credentials: configure "
                    "them (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an IAM role), or pass "
                    "actuals_file= (CLI: --actuals) with a saved GetCostAndUsage JSON response"
                ) from None
            page.pop("ResponseMetadata", None)
            yield page
            token = page.get("NextPageToken")
            if not token:
                return


def fetch_pages(
    cache: ReconcileStore | None,
    client: Any,
    start: str,
    end: str,
    tag_key: str | None,
    *,
    final_after_ns: int,
    now_ns: int | None = None,
    max_age_s: float = 6 * 3600,
) -> tuple[list[dict[str, Any]], bool]:
    """All pages for the range, from ``cache`` when its copy is still good; returns (pages, from_cache).

    A cached copy fetched at or after ``final_after_ns`` (when every day of the range has settled)
    is final; an earlier copy is reused only while it is younger than ``max_age_s``. Pages fetched
    from the API replace the cached copy. ``cache=None``: always ask the API, cache nothing.
    """
    group_by = "SERVICE" + (f",TAG:{tag_key}" if tag_key else "")
    now = time.time_ns() if now_ns is None else now_ns
    if cache is not None:
        hit = cache.cached_pages(start, end, group_by)
        if hit is not None and (hit.fetched_ns >= final_after_ns or now - hit.fetched_ns < max_age_s * 1e9):
            return hit.pages, True
    pages = list(_pages_from_api(client if client is not None else make_client(), start, end, tag_key))
    if cache is not None:
        cache.cache_pages(start, end, group_by, pages, fetched_ns=now)
    return pages, False
