"""The SDK exporter's own counters as Prometheus metrics, for apps that already serve a registry.

``register_sdk_metrics`` adds this process's exporter counters (``spendtrace_exporter_dropped_total``
and friends, present at 0 from start-up) to a ``prometheus_client`` registry; prometheus_client is
imported only when it is called.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["SDK_COUNTERS", "register_sdk_metrics"]

#: ExporterStats field -> metric name (without the ``_total`` that prometheus_client appends).
SDK_COUNTERS = {
    "recorded": "spendtrace_exporter_recorded",
    "exported": "spendtrace_exporter_exported",
    "spilled": "spendtrace_exporter_spilled",
    "replayed": "spendtrace_exporter_replayed",
    "dropped": "spendtrace_exporter_dropped",
    "export_errors": "spendtrace_exporter_errors",
    "spill_refused": "spendtrace_exporter_spill_refused",
    "spill_lost_frames": "spendtrace_exporter_spill_lost_frames",
    "spill_lost_spans": "spendtrace_exporter_spill_lost_spans",
    "lost_at_crash": "spendtrace_exporter_lost_at_crash",
    "rejected": "spendtrace_exporter_rejected",
}
_HELP = {
    "spill_refused": "Spill files never replayed: another user owns them or their directory, or others can write them.",
    "spill_lost_frames": "Spill frames given up on replay because they were damaged (bad CRC, torn write).",
    "spill_lost_spans": "Spans in damaged spill frames given up on replay (as far as their headers tell).",
    "lost_at_crash": "Spans an earlier process held in memory when it was killed (a lower bound, counted at start).",
    "rejected": "Spans the destination refused for good (too large for Kafka); logged, not retried.",
}


class _SDKCollector:
    """A prometheus_client collector over ``spendtrace.get_stats()``; every counter exists at 0 from the start."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from spendtrace.sdk.config import get_stats

        stats = get_stats()
        for field, name in SDK_COUNTERS.items():
            text = _HELP.get(field, f"Spans {field.replace('_', ' ')} by this process's exporter.")
            yield CounterMetricFamily(name, text, value=getattr(stats, field))
        yield GaugeMetricFamily("spendtrace_exporter_queued", "Spans waiting in memory.", value=stats.queued)


def register_sdk_metrics(registry: Any = None) -> Any:
    """Register the exporter counters (``spendtrace_exporter_dropped_total`` ...) with ``registry``.

    ``registry`` defaults to prometheus_client's global ``REGISTRY``; returns the collector.
    Needs ``prometheus-client`` (the ``[api]`` extra).
    """
    try:
        from prometheus_client import REGISTRY
    except ImportError as exc:
        raise ImportError("register_sdk_metrics needs prometheus-client: pip install 'spendtrace[api]'") from exc
    collector = _SDKCollector()
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
