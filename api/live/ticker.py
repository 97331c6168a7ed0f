"""The tick: once a second, exactly one replica computes the update and publishes it.

There is no leader. Every replica wakes at each whole second and tries to claim that second's
lock (`LiveStore.claim_tick`, a `SET ... NX PX`); the one that gets it computes
`reader.update()` for that second, serialises it once, and in one MULTI stores it as the latest
update and publishes it (`LiveStore.publish_update`). The others go back to sleep, so the
cluster computes one update a second whatever the number of replicas, and losing the winner
costs at most that one tick.

The tick is the update's event time, read on the replica's Clock like every event stamp (within
the skew tolerance of Redis's): it names the second whose windows are computed. Liveness is not
the tick's: the update's nodes, replicas and connections are judged by Redis's clock inside the
read itself, so a replica whose clock runs a minute fast still lists the live nodes.
"""

from __future__ import annotations

import asyncio
import logging
import math

import orjson
import redis.asyncio as aioredis

from api.live.slo_alerts import SloAlerts
from metrics_store.clock import Clock
from metrics_store.live.live_store import LiveStore
from metrics_store.loops import LoopGuard, run_forever_async
from metrics_store.read.reader import MetricsReader

log = logging.getLogger(__name__)


class Ticker:
    """Tries the lock of each second and, when it wins, computes and publishes the update.

    >>> ticker = Ticker(client, reader, live_store, clock, replica_id)
    >>> await ticker.run()   # until cancelled
    """

    def __init__(
        self,
        client: aioredis.Redis,
        reader: MetricsReader,
        live: LiveStore,
        clock: Clock,
        replica_id: str,
        alerts: SloAlerts | None = None,
    ) -> None:
        self._client = client
        self._alerts = alerts
        self._reader = reader
        self._live = live
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
        await self._live.recover()

    async def tick(self, tick: int) -> bool:
        """Compute and publish second `tick` if this replica wins its lock; True if it did."""
        if not await self._live.claim_tick(tick, self.replica_id):
            return False
        update = await self._reader.update(now_s=float(tick))
        await self._live.publish_update(orjson.dumps(update.model_dump()))
        if self._alerts is not None:  # the objectives' changes, noticed once: by the winner
            self._alerts.after_tick(update.slo, float(tick))
        return True

    async def _sleep_until_next_tick(self) -> int:
        # The target second is fixed before sleeping, so waking a hair early (timer
        # resolution) cannot make this replica try the second it just did.
        now_s = self._clock.now()
        tick = math.floor(now_s) + 1
        await asyncio.sleep(max(0.0, min(1.0, tick - now_s)))
        return tick
