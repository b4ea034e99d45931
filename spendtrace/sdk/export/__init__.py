"""Exporters: where finished spans go, and the batching, spilling processor in front of them.

``SpanExporter`` is the interface; ``KafkaExporter`` and ``InMemoryExporter`` implement it here,
``LocalStoreExporter`` (the local store) on the server side, found by name (``config.EXPORTERS``).
``BatchProcessor`` feeds one from a worker thread, spilling to disk when it fails;
``CircuitBreaker`` / ``set_circuit_breaker`` guard it. Most apps only call
``spendtrace.configure(...)`` (or nothing at all) instead of using these directly.
"""

from __future__ import annotations

from spendtrace.sdk.export._base import SpanExporter
from spendtrace.sdk.export._breaker import CircuitBreaker, get_circuit_breaker, set_circuit_breaker
from spendtrace.sdk.export._kafka import KafkaExporter
from spendtrace.sdk.export._memory import InMemoryExporter
from spendtrace.sdk.export._processor import BatchProcessor, default_spill_dir

__all__ = [
    "BatchProcessor",
    "CircuitBreaker",
    "InMemoryExporter",
    "KafkaExporter",
    "SpanExporter",
    "default_spill_dir",
    "get_circuit_breaker",
    "set_circuit_breaker",
]
