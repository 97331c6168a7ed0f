"""A replica's share of the live stream: ticker, relay, heartbeat and clients, in one object."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.websockets import WebSocket

from api.live.client import GOING_AWAY, serve_client
from api.live.hub import ClientHub
from api.live.relay import Relay
from api.live.slo_alerts import SloAlerts
from api.live.slot import Frame
from api.live.ticker import Ticker
from metrics_store.clock import Clock, SystemClock
from metrics_store.live import process_health
from metrics_store.live.live_store import LiveStore
from metrics_store.live.replicas import ReplicaRegistry, new_replica_id
from metrics_store.loops import LoopGuard, run_forever_async
from metrics_store.read.reader import MetricsReader
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from metrics_store.slo.outbox import Outbox

log = logging.getLogger(__name__)

# Shutdown waits this long for clients to take their close frame before moving on.
CLOSE_CLIENTS_TIMEOUT_S = 2.0
DEREGISTER_TIMEOUT_S = 1.0
STOP_TASKS_TIMEOUT_S = 3.0


class LiveStream:
    """Started by the app lifespan; serves the /api/metrics/ws clients of this replica.

    >>> live = LiveStream(client, reader, settings)
    >>> live.start()
    >>> await live.serve(websocket)   # in the WebSocket route
    >>> await live.stop()             # clients get 1001, the replica leaves the registry
    """

    def __init__(
        self,
        client: aioredis.Redis,
        reader: MetricsReader,
        settings: Settings,
        clock: Clock | None = None,
    ) -> None:
        clock = clock or SystemClock()
        keys = Keys(settings.key_prefix)
        live = LiveStore(client, settings)
        self.replica_id = new_replica_id(settings.node)
        self.hub = ClientHub()
        self.alerts = SloAlerts(Outbox(client, keys), settings, self.replica_id)
        self.ticker = Ticker(client, reader, live, clock, self.replica_id, self.alerts)
        self.relay = Relay(live, self.hub)
        self.registry = ReplicaRegistry(client, settings, self.replica_id)
        self._client = client
        self._live = live
        self._keys = keys  # handed to process_health, which owns the processes hash
        self._node = settings.node
        self._beats = 0
        self._beat_interval_s = settings.liveness.heartbeat_interval_s
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the ticker, the relay and the heartbeat on the running event loop."""
        self._spawn("live-ticker", self.ticker.run())
        self._spawn("live-relay", self.relay.run())
        self._spawn("live-heartbeat", self._beat_forever())

    async def stop(self) -> None:
        """Close the clients (1001), stop the tasks, and leave the replica registry."""
        await self.close_clients(GOING_AWAY)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # not gather: see client._first_to_finish; bounded, so no loop can hold shutdown
            _, stuck = await asyncio.wait(tasks, timeout=STOP_TASKS_TIMEOUT_S)
            for task in stuck:
                log.warning("live: %s did not stop in time", task.get_name())
        await self.alerts.close()
        try:
            async with asyncio.timeout(DEREGISTER_TIMEOUT_S):
                await self.registry.remove()
        except (RedisError, OSError, TimeoutError) as exc:
            # Not fatal: readers stop counting this replica once its beat ages out.
            log.warning("live: could not leave the replica registry: %s", exc)

    async def close_clients(self, code: int, timeout_s: float = CLOSE_CLIENTS_TIMEOUT_S) -> None:
        """Ask every client to close with `code`; wait (bounded) until they have."""
        self.hub.close_all(code)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.hub.count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    async def serve(self, websocket: WebSocket) -> None:
        """Serve one WebSocket client until it leaves."""
        await serve_client(websocket, self.hub, self.latest)

    async def latest(self) -> Frame | None:
        """The latest published update, or None if there is none or Redis cannot say."""
        try:
            payload = await self._live.latest_update()
            return None if payload is None else Frame.from_payload(payload)
        except (RedisError, OSError, ValueError) as exc:
            log.debug("live: no latest update for a new client: %s", exc)
            return None

    async def _beat_forever(self) -> None:
        guard = LoopGuard("live-heartbeat", base_s=0.1, cap_s=self._beat_interval_s)
        await run_forever_async(guard, self._beat, self._after_failure)

    async def _beat(self) -> float:
        """The replica's beat, and this process's loop health with it."""
        # Stamped by Redis's clock (the registry's script returns it): liveness never asks
        # this replica's own clock, which may run minutes off.
        now_s = await self.registry.beat(self.hub.count)
        self._beats += 1
        record = process_health.current_record(self._node, "api", now_s)
        prune = self._beats % process_health.PRUNE_EVERY_BEATS == 1
        await process_health.publish_async(self._client, self._keys, record, prune=prune)
        return self._beat_interval_s

    async def _after_failure(self) -> None:
        await self._live.recover()

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_log_crash)
        self._tasks.append(task)


def _log_crash(task: asyncio.Task[None]) -> None:
    """The loops end only when cancelled; anything else is a bug worth a traceback."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("live: %s stopped", task.get_name(), exc_info=exc)
