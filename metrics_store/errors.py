"""The exception tree of metrics-store.

MetricsStoreError
 +-- InvalidMetric (also a ValueError): an argument the store refuses; nothing was written
 +-- InvalidWindow (also a ValueError): a ?window= that is malformed or longer than history
 +-- StoreUnavailable: Redis cannot be reached or did not answer in time
 +-- UnknownNode (also a LookupError): a node name with no live snapshot
 +-- EventsLost: flush() cannot keep its promise: events before it were dropped or abandoned
 +-- MissingSetting (also a ValueError): a process needs a setting this topology leaves unset
 +-- InvalidObjectives (also a ValueError): SLO definitions refused, whole, with every problem
"""

from __future__ import annotations


class MetricsStoreError(Exception):
    """Base of every error the store raises on purpose."""


class InvalidMetric(MetricsStoreError, ValueError):
    """A recorded value was refused; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class InvalidWindow(MetricsStoreError, ValueError):
    """A window the store cannot answer: malformed, not positive, or beyond the history kept."""

    def __init__(self, text: str, problem: str) -> None:
        super().__init__(f"window {text!r}: {problem}")
        self.text = text


class StoreUnavailable(MetricsStoreError):
    """Redis could not be reached or did not answer in time."""


class UnknownNode(MetricsStoreError, LookupError):
    """No live node has this name."""

    def __init__(self, node: str) -> None:
        super().__init__(f"no live node named {node!r}")
        self.node = node


class EventsLost(MetricsStoreError):
    """Some events recorded before a flush() will never reach Redis (the message says why).

    `lost` is how many: dropped from a full buffer, refused by Redis, or refused for a clock
    too far from Redis's; 0 when the collector closed before it could say.
    """

    def __init__(self, message: str, lost: int = 0) -> None:
        super().__init__(message)
        self.lost = lost


class MissingSetting(MetricsStoreError, ValueError):
    """A process needs a setting that the configured topology cannot do without."""


class InvalidObjectives(MetricsStoreError, ValueError):
    """A set of SLO definitions the store refuses, whole: `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid objectives: " + "; ".join(problems))
        self.problems = problems
