"""The live store on the real redis-server: each of its keys is written and read back through it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from metrics_store.live.live_store import LATEST_TTL_MS, TICK_LOCK_TTL_MS, LiveStore
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings


def run_with_store(
    settings: Settings, scenario: Callable[[LiveStore, aioredis.Redis, Keys], Awaitable[None]]
) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(settings.redis.url)
        keys = Keys(settings.key_prefix)
        try:
            await scenario(LiveStore(client, settings), client, keys)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_one_replica_claims_each_tick(settings: Settings) -> None:
    async def scenario(live: LiveStore, client: aioredis.Redis, keys: Keys) -> None:
        assert await live.claim_tick(100, "replica-a")
        assert not await live.claim_tick(100, "replica-b")  # the second is taken
        assert await live.claim_tick(101, "replica-b")  # the next second is free again
        lock_ttl_ms = await client.pttl(keys.tick_lock(100))
        assert 0 < lock_ttl_ms <= TICK_LOCK_TTL_MS  # a lock never outlives its purpose

    run_with_store(settings, scenario)


def test_a_published_update_reaches_subscribers_and_is_the_latest(settings: Settings) -> None:
    async def scenario(live: LiveStore, client: aioredis.Redis, keys: Keys) -> None:
        assert await live.latest_update() is None  # no tick yet: a new client waits
        async with live.subscribe_updates() as updates:
            assert await updates.next_update(timeout_s=0.05) is None  # nothing published
            await live.publish_update(b'{"type": "metrics_update", "n": 1}')
            received = None
            for _ in range(3):  # a read may only swallow the subscribe confirmation
                received = received or await updates.next_update(timeout_s=1.0)
        assert received == b'{"type": "metrics_update", "n": 1}'
        assert await live.latest_update() == received
        latest_ttl_ms = await client.pttl(keys.latest_update)
        assert 0 < latest_ttl_ms <= LATEST_TTL_MS  # stale numbers disappear if ticks stop

    run_with_store(settings, scenario)


def test_leaving_the_subscription_unsubscribes(settings: Settings) -> None:
    async def scenario(live: LiveStore, client: aioredis.Redis, keys: Keys) -> None:
        async with live.subscribe_updates():
            [(_, during)] = await client.pubsub_numsub(keys.updates_channel)
        [(_, after)] = await client.pubsub_numsub(keys.updates_channel)
        assert (during, after) == (1, 0)

    run_with_store(settings, scenario)


def test_forgotten_replicas_leave_both_registry_keys(settings: Settings) -> None:
    async def scenario(live: LiveStore, client: aioredis.Redis, keys: Keys) -> None:
        await live.beat_replica("node-a:1:aaaaaa", connections=2)
        await live.beat_replica("node-a:2:bbbbbb", connections=5)
        await live.forget_replicas("node-a:1:aaaaaa")
        assert await client.zrange(keys.replicas, 0, -1) == [b"node-a:2:bbbbbb"]
        assert await client.hgetall(keys.connections) == {b"node-a:2:bbbbbb": b"5"}

    run_with_store(settings, scenario)
