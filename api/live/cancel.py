"""Keep a cancelled loop cancelled: see metrics_store.loops.reraise_if_cancelled."""

from __future__ import annotations

from metrics_store.loops import reraise_if_cancelled

__all__ = ["reraise_if_cancelled"]
