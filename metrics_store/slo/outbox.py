"""The objectives' alerts in Redis: the state each objective was last seen in, an outbox of
the webhook notices its changes make, and the webhook's progress through them.

A tick winner (one replica a second) compares the objectives' states with those stored and,
for each change, stores the new state and appends the change's notice in one MULTI: a change
is noticed once, whichever replica sees it. Notices are sent in order by whichever replica
holds the lease (`SET NX PX`), and the last one sent is recorded, so a notice that failed is
retried, by any replica, and one that was sent is not sent again (unless its sender died
between the receiver's answer and that record: the webhook is at least once, never twice by
design).

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

# The outbox keeps the last notices only: a receiver away for days is not owed them all.
NOTICES_MAXLEN = 1000
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class SeenState:
    state: str
    since_s: float


@dataclass(frozen=True)
class Progress:
    sent_id: str  # the last notice delivered ("0-0": none)
    attempts: int  # failed tries of the next notice
    retry_at_s: float  # not before this (Redis's epoch seconds, as stamped by the caller)


class Outbox:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    async def seen(self) -> dict[str, SeenState]:
        raw = await self._client.hgetall(self._keys.slo_states)
        seen = {}
        for name, value in raw.items():
            record = orjson.loads(value)
            seen[_text(name)] = SeenState(str(record["state"]), float(record["since"]))
        return seen

    async def change(self, name: str, state: str, since_s: float, body: bytes | None) -> None:
        """Store an objective's new state and, with it, its notice (None: none to send)."""
        record = orjson.dumps({"state": state, "since": since_s})
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.slo_states, name, record)
            if body is not None:
                pipe.xadd(self._keys.slo_notices, {"body": body}, maxlen=NOTICES_MAXLEN)
            await pipe.execute()

    async def forget(self, names: list[str]) -> None:
        """Objectives no longer defined: their states go (a new one of the name starts over)."""
        if names:
            await self._client.hdel(self._keys.slo_states, *names)

    async def take_lease(self, holder: str, ttl_ms: int) -> bool:
        return bool(
            await self._client.set(self._keys.slo_webhook_lease, holder, nx=True, px=ttl_ms)
        )

    async def release_lease(self) -> None:
        await self._client.delete(self._keys.slo_webhook_lease)

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

    async def sent(self, entry_id: str) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.slo_webhook, mapping={"sent_id": entry_id, "attempts": 0})
            pipe.hset(self._keys.slo_webhook, "retry_at", 0)
            pipe.hincrby(self._keys.slo_webhook, "sent", 1)
            pipe.xdel(self._keys.slo_notices, entry_id)
            await pipe.execute()

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
