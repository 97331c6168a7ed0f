"""Each replica's one subscriber: relays every published update to this replica's clients.

One subscription per replica, however many clients: Redis sends each update once to each
replica, and the hub hands the same decoded text to every local slot.
"""

from __future__ import annotations

import logging

from api.live.hub import ClientHub
from api.live.slot import Frame
from metrics_store.live.live_store import LiveStore
from metrics_store.loops import LoopGuard, reraise_if_cancelled, run_forever_async

log = logging.getLogger(__name__)

# get_message() returns at least this often, so the connection's health check (a PING after
# a quiet spell) runs and a half-open connection is noticed rather than waited on forever.
POLL_S = 1.0


class Relay:
    """Subscribes to the updates channel and publishes each update to the hub.

    A lost subscription (Redis restarted, network cut) is retried with backoff; the clients
    stay connected meanwhile and simply get the next update once it flows again.
    """

    def __init__(self, live: LiveStore, hub: ClientHub) -> None:
        self._live = live
        self._hub = hub

    async def run(self) -> None:
        """Relay until cancelled, resubscribing after any failure."""
        guard = LoopGuard("live-relay", base_s=0.1, cap_s=2.0)
        await run_forever_async(guard, lambda: self._subscribe_and_relay(guard))

    async def _subscribe_and_relay(self, guard: LoopGuard) -> float:
        """Relay until the subscription fails (it ends only by raising)."""
        async with self._live.subscribe_updates() as updates:
            while True:
                payload = await updates.next_update(timeout_s=POLL_S)
                reraise_if_cancelled()
                # Only a subscription that delivers (or waits a whole poll) counts as working:
                # one that fails at once must keep backing off, not retry at full speed.
                guard.succeeded()
                if payload is not None:
                    self._relay(payload)

    def _relay(self, payload: bytes) -> None:
        try:
            frame = Frame.from_payload(payload)
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError too
            log.warning("live relay: ignoring a message that is not an update: %s", exc)
            return
        self._hub.publish(frame)
