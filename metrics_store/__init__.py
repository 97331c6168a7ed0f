"""metrics-store: a Redis-backed live telemetry store for LLM-serving backends.

The public API: the collector and its instruments, the settings, the errors.

    from metrics_store import get_metrics_collector, track_query
"""

from metrics_store.errors import (
    EventsLost,
    InvalidMetric,
    MetricsStoreError,
    StoreUnavailable,
    UnknownNode,
)
from metrics_store.record.collector import MetricsCollector, get_metrics_collector
from metrics_store.record.instrument import track_query, track_routing_decision
from metrics_store.settings import Settings, get_settings

__all__ = [
    "EventsLost",
    "InvalidMetric",
    "MetricsCollector",
    "MetricsStoreError",
    "Settings",
    "StoreUnavailable",
    "UnknownNode",
    "get_metrics_collector",
    "get_settings",
    "track_query",
    "track_routing_decision",
]
