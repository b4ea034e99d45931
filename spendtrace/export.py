"""Public exporter names: the SDK's exporters, and ``LocalStoreExporter`` (server side, loaded on first use)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from spendtrace.sdk.export import (
    BatchProcessor,
    CircuitBreaker,
    InMemoryExporter,
    KafkaExporter,
    SpanExporter,
    default_spill_dir,
    get_circuit_breaker,
    set_circuit_breaker,
)

__all__ = [
    "BatchProcessor",
    "CircuitBreaker",
    "InMemoryExporter",
    "KafkaExporter",
    "LocalStoreExporter",
    "SpanExporter",
    "default_spill_dir",
    "get_circuit_breaker",
    "set_circuit_breaker",
]

if TYPE_CHECKING:
    from spendtrace.server.local_export import LocalStoreExporter


def __getattr__(name: str) -> Any:
    if name == "LocalStoreExporter":  # the server side: only an app that writes to the local store loads it
        return importlib.import_module("spendtrace.server.local_export").LocalStoreExporter
    raise AttributeError(f"module 'spendtrace.export' has no attribute {name!r}")
