"""Argument types with bounds, so a bad number is argparse's one-line error (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["INT64_MAX", "float_in", "int_in"]

#: The largest id SQLite stores.
INT64_MAX = 2**63 - 1


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number in ``lo..hi``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in {lo}..{hi}, got {text}")
        return value

    return parse


def float_in(lo: float, hi: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``lo..hi`` (``above=True``: strictly above ``lo``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        low_ok = value > lo if above else value >= lo
        if not math.isfinite(value) or not low_ok or value > hi:
            bound = f"above {lo:g}" if above else f"at least {lo:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} and at most {hi:g}, got {text}")
        return value

    return parse
