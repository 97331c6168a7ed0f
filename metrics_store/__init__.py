"""metrics-store: a Redis-backed live telemetry store for LLM-serving backends."""

from metrics_store.errors import InvalidMetric, MetricsStoreError, StoreUnavailable, UnknownNode
from metrics_store.record.collector import MetricsCollector, get_metrics_collector
from metrics_store.settings import Settings, get_settings

__all__ = [
    "InvalidMetric",
    "MetricsCollector",
    "MetricsStoreError",
    "Settings",
    "StoreUnavailable",
    "UnknownNode",
    "get_metrics_collector",
    "get_settings",
]
