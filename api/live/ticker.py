"""The tick: once a second, exactly one replica computes the update and publishes it.

There is no leader. Every replica wakes at each whole second and tries `SET
{p}:live:tick:<second> <replica> NX PX`; the one that sets it computes `reader.update()` for
that second, serialises it once, and in one MULTI stores it as the latest update and
publishes it. The others go back to sleep, so the cluster computes one update a second
whatever the number of replicas, and losing the winner costs at most that one tick.
"""

from __future__ import annotations

import asyncio
import logging
import math

import orjson
import redis.asyncio as aioredis

from metrics_store.clock import Clock
from metrics_store.keys import Keys
from metrics_store.loops import LoopGuard, run_forever_async
from metrics_store.reader import MetricsReader
from metrics_store.redis_client import drop_idle_connections

log = logging.getLogger(__name__)

# The lock is one key per second, not one key for all: the seconds of two replicas whose
# clocks disagree never collide, and a replica whose clock lags the winner's by less than
# this still finds the key and does not compute the same second twice. (A larger lag would
# publish a duplicate second, which every client's slot refuses as not newer.)
TICK_LOCK_TTL_MS = 5_000
# Every tick rewrites the latest update; if ticks stop (no replica can reach Redis), it
# disappears rather than greet new clients with stale numbers.
LATEST_TTL_MS = 10_000


class Ticker:
    """Tries the lock of each second and, when it wins, computes and publishes the update.

    >>> ticker = Ticker(client, reader, keys, clock, replica_id)
    >>> await ticker.run()   # until cancelled
    """

    def __init__(
        self,
        client: aioredis.Redis,
        reader: MetricsReader,
        keys: Keys,
        clock: Clock,
        replica_id: str,
    ) -> None:
        self._client = client
        self._reader = reader
        self._keys = keys
        self._clock = clock
        self.replica_id = replica_id

    async def run(self) -> None:
        """Tick each second until cancelled; a failed tick only delays the next try."""
        guard = LoopGuard("live-ticker", base_s=0.1, cap_s=2.0)
        await run_forever_async(guard, self._next_tick, self._after_failure)

    async def _next_tick(self) -> float:
        await self.tick(await self._sleep_until_next_tick())
        return 0.0  # the next pass sleeps until its own second

    async def _after_failure(self) -> None:
        await drop_idle_connections(self._client)

    async def tick(self, tick: int) -> bool:
        """Compute and publish second `tick` if this replica wins its lock; True if it did."""
        lock = self._keys.tick_lock(tick)
        if not await self._client.set(lock, self.replica_id, nx=True, px=TICK_LOCK_TTL_MS):
            return False
        update = await self._reader.update(now_s=float(tick))
        payload = orjson.dumps(update.model_dump())
        # MULTI: `latest` is always the update published last, never one behind or ahead
        # of the channel, so a client joining at any moment starts from what the relay sends.
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self._keys.latest_update, payload, px=LATEST_TTL_MS)
        pipe.publish(self._keys.updates_channel, payload)
        await pipe.execute()
        return True

    async def _sleep_until_next_tick(self) -> int:
        # The target second is fixed before sleeping, so waking a hair early (timer
        # resolution) cannot make this replica try the second it just did.
        now_s = self._clock.now()
        tick = math.floor(now_s) + 1
        await asyncio.sleep(max(0.0, min(1.0, tick - now_s)))
        return tick
