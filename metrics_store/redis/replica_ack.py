"""The durability knob: a batch counts as written once enough replicas hold it.

With `METRICS_REDIS_MIN_REPLICAS_ACK=N` above 0, the ingest script and `WAIT N timeout` go to
Redis in one pipeline (one round trip): WAIT answers how many replicas have everything this
connection wrote, the batch included. Fewer than N means the batch may die with the primary,
so it is not acknowledged: the flusher retries it under the same batch id, and the script's
id marker makes the retry a no-op wherever the first attempt did land.

On Redis Cluster the pipeline goes to the primary of the batch's shard, on one connection of
its own: WAIT answers for that connection's writes only. A failover there (the node gone, or
MOVED: its slots now served by the promoted replica) re-reads the slot map and counts as an
outage, so the batch is retried, on the new primary.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from metrics_store.redis.client import SLOT_MOVES, StaleSlotMap
from metrics_store.redis.scripts import LuaScript
from metrics_store.redis.topology import Topology
from metrics_store.settings import Settings

Arg = str | int | float


class ReplicasBehind(redis.ConnectionError):
    """Fewer replicas than asked acknowledged a batch in time.

    A ConnectionError to the flusher: the store is not durably reachable, so the batch is
    retried with backoff for as long as it takes, never dropped as a refused batch would be.
    """


def acks_wanted(settings: Settings) -> int:
    """How many replicas must acknowledge each batch (0: the primary's reply is enough)."""
    return settings.redis.min_replicas_ack


def write_batch(
    client: redis.Redis,
    script: LuaScript,
    keys: Sequence[str],
    args: Sequence[Arg],
    topology: Topology,
) -> object:
    """Run the ingest script, and return its reply; with acks wanted, WAIT for them in the
    same round trip.

    Raises ReplicasBehind when too few replicas acknowledged, any RedisError as the plain call.
    """
    try:
        reply, acknowledged, wanted = _write(client, script, keys, args, topology)
    except SLOT_MOVES as exc:  # a cluster failover under way
        topology.after_write_failure(client)
        raise StaleSlotMap(f"the batch's shard moved: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError):
        topology.after_write_failure(client)
        raise
    if acknowledged < wanted:
        raise ReplicasBehind(
            f"{acknowledged} of {wanted} replicas acknowledged the batch within "
            f"{topology.settings.redis.replicas_ack_timeout_ms} ms"
        )
    return reply


def _write(
    client: redis.Redis,
    script: LuaScript,
    keys: Sequence[str],
    args: Sequence[Arg],
    topology: Topology,
) -> tuple[object, int, int]:
    """(the script's reply, replicas that acknowledged, replicas wanted)."""
    settings = topology.settings
    wanted = acks_wanted(settings)
    if not wanted:
        return script.run(client, keys, args), 0, 0
    server = topology.server_of(client, keys[0])

    def ingest_and_wait() -> tuple[object, int]:
        pipe = server.pipeline(transaction=False)
        script.queue(pipe, keys, args)
        pipe.wait(wanted, settings.redis.replicas_ack_timeout_ms)
        reply, acknowledged = pipe.execute()
        return reply, int(acknowledged)

    # A new primary after a failover may not know the script: NOSCRIPT wrote nothing, so the
    # registry loads it and the pipeline runs again.
    reply, acknowledged = script.reloading(server, ingest_and_wait, ingest_and_wait)
    return reply, acknowledged, wanted
