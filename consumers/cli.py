"""``spendtrace-consumer``: placeholder until the pipeline issue lands."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Refuse clearly: the workers are not built yet."""
    print("spendtrace-consumer: the consumer workers are not built yet (see issue #3)", file=sys.stderr)
    return 2
