"""Fixtures for the SDK tests: capture finished spans in a list, with sampling reset around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spendtrace.schema import Span
from spendtrace.sdk import pipeline as _pipeline
from spendtrace.sdk import sampling as _sampling


@pytest.fixture
def spans() -> Iterator[list[Span]]:
    """Every span submitted during the test, in submission order (the previous sink is restored after)."""
    captured: list[Span] = []
    previous = _pipeline.get_sink()
    previous_rate = _sampling.get_global_sample_rate()
    _pipeline.set_sink(captured.append)
    _sampling.set_global_sample_rate(1.0)
    try:
        yield captured
    finally:
        _pipeline.set_sink(previous)
        _sampling.set_global_sample_rate(previous_rate)


@pytest.fixture
def export_reset() -> Iterator[None]:
    """Leave no export configuration behind: shut down whatever the test configured, restore the defaults."""
    from spendtrace.sdk import config as _config

    _config.reset()
    try:
        yield
    finally:
        _config.reset()
