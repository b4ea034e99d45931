"""Types of the ingest path: what ``prepare_batch`` makes and what an ``IngestStore`` takes and returns.

Below the storage interface (``spendtrace.server.store.base``) so that every backend and the workers
share them. Money is integer nano-dollars throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from spendtrace.schema import Span
    from spendtrace.server.pricing import PriceBook

__all__ = [
    "SPAN_COLUMNS",
    "BatchSummary",
    "DeadLetter",
    "PartitionOffsets",
    "PreparedBatch",
    "RetentionFacts",
    "RetentionProgress",
    "StagedBatch",
    "WriteResult",
]

#: values per ``spans`` row (``PreparedBatch.span_values``)
SPAN_COLUMNS = 19


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """The scopes a batch touched, for alert evaluation."""

    features: frozenset[str] = frozenset()
    #: every feature on any stored span's path (fully-loaded scopes)
    loaded_features: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    endpoints: frozenset[str] = frozenset()
    min_start_ns: int | None = None
    max_start_ns: int | None = None


@dataclass(slots=True)
class PreparedBatch:
    """Everything a store applies for one batch, computed without I/O (``spendtrace.server.ingest.prepare``)."""

    book: PriceBook
    spans: list[Span]
    #: the ``spans`` rows, flat: ``SPAN_COLUMNS`` values per span, in batch order (sliced into
    #: multi-row inserts without building a tuple per row)
    span_values: list[Any]
    #: grain -> {(bucket, feature, user_id, endpoint, service): [cost, calls, spans, errors, unpriced, var, requests]}
    rollups: dict[str, dict[tuple[int, str, str, str, str], list[Any]]]
    #: grain -> {(bucket, feature): [cost, calls, spans, var]}
    loaded: dict[str, dict[tuple[int, str], list[Any]]]
    #: request_id -> [endpoint, user_id, root_feature, start_ns, end_ns, cost, spans, errors, unpriced, var]
    requests: dict[str, list[Any]]
    #: (key, service, feature) -> [items, count, input_tokens, output_tokens, bytes, first_ns, last_ns]
    unpriced: dict[tuple[str, str, str], list[Any]]
    cost_nano: int
    unpriced_items: int
    duplicates_in_batch: int
    summary: BatchSummary = field(default_factory=BatchSummary)
    #: request_id -> minute rollup dims (bucket, feature, user_id, endpoint) of its head span in this batch
    heads: dict[str, tuple[int, str, str, str]] = field(default_factory=dict)
    #: True for a copy without ``spans`` (``detached_copy()``), which cannot be re-priced after a replay
    detached: bool = False
    #: False when ``rollups``, ``loaded``, ``requests`` and ``heads`` were not computed
    #: (``prepare_batch(..., deltas=False)``, for a store whose views derive them)
    deltas: bool = True

    def detached_copy(self) -> PreparedBatch:
        """This batch without its ``Span`` objects: what a writer in another process needs, cheaper to send.

        A store that finds some of its spans already stored cannot re-derive the deltas from it;
        the SQLite backend then prepares the new spans again from the original (which has them).
        """
        return replace(self, spans=[], detached=True)

    @property
    def span_rows(self) -> list[tuple[Any, ...]]:
        """The ``spans`` rows as tuples (``span_values`` cut every ``SPAN_COLUMNS`` values)."""
        v, n = self.span_values, SPAN_COLUMNS
        return [tuple(v[i : i + n]) for i in range(0, len(v), n)]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What an applied batch changed (handed to the post-commit hooks: alert evaluation)."""

    new_spans: int
    #: spans not stored because their span_id was already stored or repeated in the batch
    duplicate_spans: int
    cost_nano: int
    unpriced_items: int
    touched: BatchSummary

    @property
    def features(self) -> frozenset[str]:
        """Features whose direct spend this batch changed."""
        return self.touched.features

    @property
    def users(self) -> frozenset[str]:
        """Tenants whose spend this batch changed."""
        return self.touched.users

    @property
    def endpoints(self) -> frozenset[str]:
        """Endpoints whose spend this batch changed."""
        return self.touched.endpoints


class DeadLetter(NamedTuple):
    """One rejected message (undecodable, invalid, or unpriceable), kept with where it came from and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


class PartitionOffsets(NamedTuple):
    """One partition's share of a batch: records ``[first_offset, next_offset)`` of ``topic``/``partition``.

    Together the batch's ``PartitionOffsets`` identify it (the effectively-once contract in
    ``spendtrace.server.store.base``); ``next_offset`` is what the store keeps and a worker resumes from.
    """

    group: str
    topic: str
    partition: int
    first_offset: int
    next_offset: int


class RetentionFacts(NamedTuple):
    """What a worker needs to date retention and the ingest horizon (``IngestStore.retention_facts``)."""

    #: how long the stored policy keeps raw spans, in nanoseconds
    raw_keep_ns: int
    #: the newest start of a stored raw span (None when none is stored)
    newest_start_ns: int | None
    #: the latest raw-span cutoff a retention chunk has applied (None: never, or not recorded by this backend)
    applied_cutoff_ns: int | None = None


class RetentionProgress(NamedTuple):
    """One retention chunk: rows deleted, and whether nothing aged is left (the round is over)."""

    deleted: int
    done: bool


@dataclass(frozen=True, slots=True)
class StagedBatch:
    """A prepared batch with the records it came from, made ready to apply by one store (``stage_batch``).

    ``payload`` is that store's own encoding of the rest (for SQLite: the writer process's message),
    made in the worker's pricing thread so the event loop only hands it over; opaque to everyone else.
    """

    batch: PreparedBatch
    offsets: tuple[PartitionOffsets, ...]
    dead_letters: tuple[DeadLetter, ...]
    payload: Any = None
