"""``spendtrace-tui``: placeholder until the TUI issue lands."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Refuse clearly: the TUI is not built yet."""
    print("spendtrace-tui: the terminal UI is not built yet (see issue #5)", file=sys.stderr)
    return 2
