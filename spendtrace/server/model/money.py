"""One way to write money and durations for people, shared by the TUI, the CLI and alert messages.

Amounts keep four significant digits below $100 ($22.65, $0.1293, $0.00009796) and cents above
($1,234.56), so a tiny per-request cost is never shown as $0.00 and a large one is not drowned
in digits. Exact values travel as integer nano-dollars everywhere else (JSON, CSV, the store).
"""

from __future__ import annotations

import math

__all__ = ["NANO", "minutes_text", "usd_text"]

NANO = 1_000_000_000


def usd_text(nano: int | float | None, *, signed: bool = False) -> str:
    """``$22.65``, ``$0.1293``, ``$0.00009796``, ``$1,234.56``, ``$5.00``; ``$0`` for zero, ``—`` for none."""
    if nano is None:
        return "—"
    value = float(nano) / NANO
    if value == 0:
        return "$0"
    sign = "-" if value < 0 else ("+" if signed else "")
    mag = abs(value)
    if mag >= 100:
        return f"{sign}${mag:,.2f}"
    if mag < 1e-9:  # below one nano-dollar (a weighted share of one)
        return f"{sign}<$0.000000001"
    decimals = max(2, 3 - math.floor(math.log10(mag)))
    text = f"{mag:,.{decimals}f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(2, "0")  # significant digits only, but always cents: $5.00, $0.01
    return f"{sign}${whole}.{frac}"


def minutes_text(minutes: int | float | None) -> str:
    """A window as people say it: ``45 min``, ``6h``, ``24h``, ``7d`` (``—`` for none)."""
    if minutes is None:
        return "—"
    m = int(minutes)
    if m and m % 1440 == 0 and m >= 2 * 1440:
        return f"{m // 1440}d"
    if m and m % 60 == 0:
        return f"{m // 60}h"
    return f"{m} min"
