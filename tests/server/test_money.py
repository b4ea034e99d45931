"""How money and windows are written for people (``spendtrace.server.model.money``), as its docstrings promise."""

from __future__ import annotations

import pytest

from spendtrace.server.model.money import minutes_text, usd_text


@pytest.mark.parametrize(
    ("nano", "text"),
    [
        (1_234_560_000_000, "$1,234.56"),  # $100 and more: cents, with thousands separators
        (1_234_567_890_123_456, "$1,234,567.89"),
        (100_000_000_000, "$100.00"),
        (22_650_000_000, "$22.65"),  # below $100: four significant digits
        (5_000_000_000, "$5.00"),  # trailing zeros go, but cents always show
        (3_141_592_653, "$3.142"),
        (129_300_000, "$0.1293"),
        (50_000_000, "$0.05"),  # cents
        (10_000_000, "$0.01"),
        (4_200_000, "$0.0042"),
        (97_960, "$0.00009796"),  # sub-cent: never $0.00
        (1, "$0.000000001"),  # one nano-dollar
        (0.25, "<$0.000000001"),  # a weighted share of one nano-dollar
        (0, "$0"),
        (None, "—"),
        (-4_200_000, "-$0.0042"),
        (-1_234_560_000_000, "-$1,234.56"),
    ],
)
def test_usd_text_across_magnitudes(nano: int | float | None, text: str) -> None:
    """Four significant digits below $100, cents above, no $0.00 for a tiny amount; zero, none, negatives."""
    assert usd_text(nano) == text


def test_usd_text_signed_marks_gains_and_losses() -> None:
    """``signed=True`` puts a + on positive amounts; negatives keep their -, zero stays $0."""
    assert usd_text(1_500_000_000, signed=True) == "+$1.50"
    assert usd_text(-97_960, signed=True) == "-$0.00009796"
    assert usd_text(0, signed=True) == "$0"
    assert usd_text(150_000_000_000, signed=True) == "+$150.00"


@pytest.mark.parametrize(
    ("minutes", "text"),
    [(45, "45 min"), (60, "1h"), (360, "6h"), (1440, "24h"), (2880, "2d"), (10080, "7d"), (90, "90 min"), (None, "—")],
)
def test_minutes_text_reads_as_people_say_it(minutes: int | None, text: str) -> None:
    """Whole days from two days up, whole hours (one day is 24h), otherwise minutes; never ``1440 min``."""
    assert minutes_text(minutes) == text
