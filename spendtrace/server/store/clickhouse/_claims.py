"""Claims: "exactly one caller takes this" on ClickHouse, which has no transactions.

A claim is one insert whose ``insert_deduplication_token`` names the thing claimed, carrying a random
nonce. A MergeTree with ``non_replicated_deduplication_window`` (``_ddl.CLAIM_WINDOW``) keeps the first
block inserted with a token and drops every later one (it checks its deduplication log and commits the
part under one lock), so of any number of concurrent inserts exactly one row lands; reading it back
tells each caller whether its nonce won. The token is a hash, so user data (rule names, state keys)
never reaches the settings of a query.

What this guarantees: one winner per token among claims made within the table's last ``CLAIM_WINDOW``
inserts, on one server (chDB or a single ClickHouse node: an insert is visible to the next query once
it returns). On a replicated cluster the token is checked through Keeper (also one winner), but the
read-back must reach a replica that has the part (``insert_quorum``, ``select_sequential_consistency``):
not exercised here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from spendtrace.server.store.clickhouse._client import Conn

__all__ = ["new_nonce", "token", "try_insert"]

_SETTINGS = {"insert_deduplicate": 1}


def token(*parts: object) -> str:
    """The deduplication token of a claim on ``parts`` (a hex digest: any text goes in, none leaks out)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def new_nonce() -> str:
    """A fresh random nonce: who made one claim attempt."""
    return uuid.uuid4().hex


def try_insert(conn: Conn, table: str, names: Sequence[str], row: Sequence[Any], claim_token: str) -> None:
    """Insert ``row`` unless a block with ``claim_token`` is already in ``table`` (then nothing is stored)."""
    conn.insert(table, [[v] for v in row], names, settings={**_SETTINGS, "insert_deduplication_token": claim_token})
