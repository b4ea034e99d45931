"""Price overrides from a file (``--prices PATH``): JSON or TOML mapping a usage key to its rates.

    # prices.toml                                 // prices.json
    [dynamodb_read]                               {"dynamodb_read": {"per_request": "0.000000275"},
    per_request = "0.000000275"                    "bedrock_claude_3_haiku": [
                                                     {"effective_from": "2025-01-01",
    [[bedrock_claude_3_haiku]]                        "per_1m_input_tokens": 0.2,
    effective_from = "2025-01-01"                     "per_1m_output_tokens": 1.0}]}
    per_1m_input_tokens = 0.2
    per_1m_output_tokens = 1.0

A key maps to one table or a list of dated tables with ``PriceEntry``'s fields (rates in USD:
``per_request``, ``per_1m_input_tokens`` ... ``per_gb_second``; ``effective_from`` defaults to
1970-01-01; ``service`` defaults to the key's prefix). Rates may be strings for exact decimals.
Entries get source ``override:<file name>``. Anything malformed raises ``PricingError`` naming
the file and the key.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from spendtrace.errors import PricingError
from spendtrace.server.pricing._entry import PriceEntry

__all__ = ["load_overrides", "parse_overrides"]


def parse_overrides(data: object, *, source: str, origin: str | None = None) -> list[PriceEntry]:
    """Entries from an already-parsed mapping (see the module docstring); ``source`` labels them,
    ``origin`` (default: ``source``) prefixes error messages."""
    where = origin or source
    if not isinstance(data, dict):
        raise PricingError(f"{where}: expected a mapping of price key -> rates, got {type(data).__name__}")
    entries: list[PriceEntry] = []
    for key, value in data.items():
        tables: list[Any] = value if isinstance(value, list) else [value]
        if not tables:
            raise PricingError(f"{where}: {key}: an empty list of entries")
        for table in tables:
            if not isinstance(table, dict):
                raise PricingError(f"{where}: {key}: expected a table of rates, got {table!r}")
            try:
                entries.append(PriceEntry.from_dict(table, key=str(key), source=source))
            except PricingError as exc:
                raise PricingError(f"{where}: {exc}") from None
    return entries


def load_overrides(path: str | os.PathLike[str]) -> list[PriceEntry]:
    """Read and validate an overrides file (``.toml`` as TOML, anything else as JSON, then TOML)."""
    p = Path(os.fspath(path))
    source = f"override:{p.name}"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PricingError(f"cannot read prices file {p}: {exc.strerror or exc}") from None
    data: object
    if p.suffix.lower() == ".toml":
        data = _toml(p, text)
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            if p.suffix.lower() == ".json":
                raise PricingError(f"prices file {p} is not valid JSON: {exc}") from None
            data = _toml(p, text)
    entries = parse_overrides(data, source=source, origin=f"prices file {p}")
    if not entries:
        raise PricingError(f"prices file {p} has no entries")
    return entries


def _toml(p: Path, text: str) -> object:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PricingError(f"prices file {p} is not valid JSON or TOML: {exc}") from None
