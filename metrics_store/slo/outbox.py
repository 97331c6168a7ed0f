"""The objectives' alerts in Redis: the state each objective was last seen in, an outbox of
the webhook notices its changes make, and the webhook's progress through them.

A tick winner (one replica a second) compares the objectives' states with those stored and,
for each change, stores the new state and appends the change's notice in one script call
(slo_notice.lua), only if the stored state is still the one it compared with and no later
tick decided since: two replicas whose ticks overlap notice a change once, and an older tick
never overwrites a newer one. Notices are sent in order by whichever replica holds the lease
(`SET NX PX`); the last one sent is recorded only while the sender still holds it, and the
lease is released only by its holder. So a notice that failed is retried, by any replica,
and one that was sent is not sent again, unless its sender died or stalled past the lease
between the receiver's answer and that record: the webhook is at least once.

    {p}:slo:states          hash    objective -> {"state", "since"}
    {p}:slo:notices         stream  one entry per change: body (the POST's JSON)
    {p}:slo:webhook         hash    sent_id, attempts, retry_at, sent, failures
    {p}:slo:webhook:lease   string  the replica sending now (PX)
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import SLO_NOTICE, Arg, lua_script

# The outbox keeps the last notices only: a receiver away for days is not owed them all.
NOTICES_MAXLEN = 1000
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class SeenState:
    state: str
    since_s: float
    tier: str


@dataclass(frozen=True)
class Progress:
    sent_id: str  # the last notice delivered ("0-0": none)
    attempts: int  # failed tries of the next notice
    retry_at_s: float  # not before this (Redis's epoch seconds, as stamped by the caller)


class Outbox:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._script = lua_script(SLO_NOTICE)

    async def seen(self) -> dict[str, SeenState]:
        raw = await self._client.hgetall(self._keys.slo_states)
        seen = {}
        for name, value in raw.items():
            record = orjson.loads(value)
            state, since = str(record["state"]), float(record["since"])
            seen[_text(name)] = SeenState(state, since, str(record.get("tier", "*")))
        return seen

    async def change(
        self, name: str, tier: str, before: str, state: str, since_s: float, body: bytes | None
    ) -> bool:
        """Store an objective's new state ('' to forget it: it was removed) and, with it, its
        notice (None: none to send), if the stored state is still `before` ('' for none) and
        no later tick decided since: False where another replica's tick got there first (one
        notice per change)."""
        record = orjson.dumps({"state": state, "since": since_s, "tier": tier}) if state else b""
        keys = [self._keys.slo_states, self._keys.slo_notices]
        args: list[Arg] = ["change", name, before, record, since_s, body or b"", NOTICES_MAXLEN]
        return bool(await self._script.run_async(self._client, keys, args))

    async def take_lease(self, holder: str, ttl_ms: int) -> bool:
        return bool(
            await self._client.set(self._keys.slo_webhook_lease, holder, nx=True, px=ttl_ms)
        )

    async def release_lease(self, holder: str) -> None:
        """Let the lease go, if it is still `holder`'s (a stalled sender's may have passed)."""
        keys = [self._keys.slo_webhook_lease]
        await self._script.run_async(self._client, keys, ["release", holder])

    async def progress(self) -> Progress:
        raw = await self._client.hgetall(self._keys.slo_webhook)
        return Progress(
            _text(raw.get(b"sent_id", b"0-0")),
            int(raw.get(b"attempts", 0)),
            float(raw.get(b"retry_at", 0.0)),
        )

    async def next_notice(self, after_id: str) -> tuple[str, bytes] | None:
        """The oldest notice after `after_id`, as (id, body)."""
        found = await self._client.xrange(self._keys.slo_notices, f"({after_id}", "+", count=1)
        if not found:
            return None
        entry_id, fields = found[0]
        body = (fields or {}).get(b"body", b"")
        return _text(entry_id), body if isinstance(body, bytes) else body.encode()

    async def sent(self, holder: str, entry_id: str) -> bool:
        """Record a notice taken, if `holder` still holds the lease; False if it lost it."""
        keys = [self._keys.slo_webhook, self._keys.slo_notices, self._keys.slo_webhook_lease]
        return bool(await self._script.run_async(self._client, keys, ["sent", holder, entry_id]))

    async def failed(self, attempts: int, now_s: float) -> float:
        """Count a failed try; returns when the next may be (backoff doubling to a minute)."""
        retry_at = now_s + min(2.0 ** (attempts - 1), MAX_BACKOFF_S)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.slo_webhook, mapping={"attempts": attempts, "retry_at": retry_at})
            pipe.hincrby(self._keys.slo_webhook, "failures", 1)
            await pipe.execute()
        return retry_at


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
