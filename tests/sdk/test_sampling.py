"""Head sampling: a request tree is recorded whole or not at all, and weights keep totals unbiased."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter

import pytest

import spendtrace
from spendtrace.schema import UNATTRIBUTED, Span
from spendtrace.sdk import sampling as _sampling
from spendtrace.sdk import scope as _scope


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Seed the sampler so every test here sees the same draws on every run."""
    _sampling.seed(20261122)


@spendtrace.cost_track(feature="leaf")
def leaf() -> None:
    """A nested span with one usage item."""
    spendtrace.add_api_call("dynamodb_read")


@spendtrace.cost_track(feature="mid")
def mid() -> None:
    """A middle span calling two leaves."""
    leaf()
    leaf()


@spendtrace.cost_track(feature="root")
def root() -> None:
    """A request of four spans."""
    mid()


def test_trees_are_recorded_whole_or_not_at_all(spans: list[Span]) -> None:
    """At rate 0.5 some requests are recorded and some not, and each recorded one has all four spans."""
    spendtrace.set_global_sample_rate(0.5)
    for _ in range(300):
        root()
    per_request = Counter(s.request_id for s in spans)
    assert 0 < len(per_request) < 300
    assert set(per_request.values()) == {4}
    assert {s.weight for s in spans} == {2.0}


def test_weight_is_inverse_rate_and_descendants_inherit_the_decision(spans: list[Span]) -> None:
    """A root decorator's own rate sets every span's weight; a nested decorator's rate is ignored."""

    @spendtrace.cost_track(feature="nested_rate", sample_rate=0.01)
    def nested() -> None:
        pass

    @spendtrace.cost_track(feature="top", sample_rate=0.25)
    def top() -> None:
        nested()

    for _ in range(400):
        top()
    assert spans, "some requests are recorded at rate 0.25"
    assert {s.weight for s in spans} == {4.0}
    counts = Counter(s.feature for s in spans)
    assert counts["top"] == counts["nested_rate"]  # the nested 1% rate never dropped a child


def test_per_decorator_override_beats_global_rate(spans: list[Span]) -> None:
    """sample_rate=1.0 records under a global 0, and sample_rate=0.0 records nothing under a global 1."""

    @spendtrace.cost_track(feature="always", sample_rate=1.0)
    def always() -> None:
        pass

    @spendtrace.cost_track(feature="never", sample_rate=0.0)
    def never() -> None:
        leaf()

    spendtrace.set_global_sample_rate(0.0)
    always()
    root()
    spendtrace.set_global_sample_rate(1.0)
    never()
    assert [(s.feature, s.weight) for s in spans] == [("always", 1.0)]


def test_sampled_out_tree_records_no_usage_anywhere(spans: list[Span]) -> None:
    """Inside a sampled-out tree nothing is recorded, not even as unattributed usage."""
    with spendtrace.track_request(endpoint="/x", user_id="t", sample_rate=0.0) as req:
        assert req.request_id is None and spendtrace.current_span_id() is None
        spendtrace.add_api_call("s3_get")
        root()
        with spendtrace.track(feature="block", sample_rate=1.0):
            spendtrace.add_api_call("s3_get")
    assert spans == []


def test_request_scope_decides_for_its_spans(spans: list[Span]) -> None:
    """track_request's rate applies to the spans inside it, which carry its weight."""
    for _ in range(200):
        with spendtrace.track_request(endpoint="/r", user_id="t", sample_rate=0.2):
            root()
            spendtrace.add_api_call("sqs_send")  # the request's own unattributed usage
    per_request = Counter(s.request_id for s in spans)
    assert 0 < len(per_request) < 200
    assert set(per_request.values()) == {5}
    assert {s.weight for s in spans} == {5.0}
    assert Counter(s.feature for s in spans)[UNATTRIBUTED] == len(per_request)


async def test_async_trees_sample_whole(spans: list[Span]) -> None:
    """Async roots decide once, too: recorded async requests are complete."""

    @spendtrace.cost_track(feature="aleaf")
    async def aleaf() -> None:
        spendtrace.add_api_call("bedrock_claude_3_haiku", input_tokens=1)

    @spendtrace.cost_track(feature="aroot", sample_rate=0.5)
    async def aroot() -> None:
        await aleaf()
        await aleaf()

    for _ in range(100):
        await aroot()
    per_request = Counter(s.request_id for s in spans)
    assert 0 < len(per_request) < 100 and set(per_request.values()) == {3}


def test_weighted_totals_are_unbiased(spans: list[Span]) -> None:
    """At 10% the weighted request and usage counts land within four standard errors of the truth."""
    spendtrace.set_global_sample_rate(0.1)
    n = 5000
    for _ in range(n):
        root()
    weighted_requests = sum(s.weight for s in spans if s.parent_id is None)
    weighted_reads = sum(s.weight * u.count for s in spans for u in s.usage)
    p = 0.1
    se = math.sqrt(n * (1 - p) / p)  # standard error of a Horvitz-Thompson count
    assert abs(weighted_requests - n) < 4 * se
    assert abs(weighted_reads - 2 * n) < 4 * 2 * se
    assert weighted_requests != n  # sampled, not everything recorded


def test_set_global_sample_rate_validates() -> None:
    """Rates outside [0, 1], NaN, bools and strings are rejected with a clear error."""
    for bad, error in [
        (1.01, ValueError),
        (-0.5, ValueError),
        (math.nan, ValueError),
        (True, TypeError),
        ("1", TypeError),
    ]:
        with pytest.raises(error, match="sample_rate"):
            spendtrace.set_global_sample_rate(bad)  # type: ignore[arg-type]
    previous = spendtrace.get_global_sample_rate()
    spendtrace.set_global_sample_rate(0.3)
    try:
        assert spendtrace.get_global_sample_rate() == 0.3
    finally:
        spendtrace.set_global_sample_rate(previous)


def _rate_in_subprocess(value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPENDTRACE_SAMPLE_RATE": value}
    code = "import spendtrace; print(spendtrace.get_global_sample_rate())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


def test_rate_from_environment() -> None:
    """``SPENDTRACE_SAMPLE_RATE`` sets the starting rate; a malformed value falls back to 1.0 and says so."""
    assert _rate_in_subprocess("0.25").stdout.strip() == "0.25"
    bad = _rate_in_subprocess("ten percent")
    assert bad.stdout.strip() == "1.0"
    assert "SPENDTRACE_SAMPLE_RATE" in bad.stderr


def test_orphan_usage_follows_the_global_rate(spans: list[Span]) -> None:
    """Unattributed usage outside any scope is sampled like a one-span request, with its weight."""
    spendtrace.set_global_sample_rate(0.5)
    for _ in range(200):
        _scope.add_api_call("s3_get")
    assert 0 < len(spans) < 200
    assert {s.weight for s in spans} == {2.0}
