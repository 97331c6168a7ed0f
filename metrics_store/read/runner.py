"""Run a read plan against the store's Redis: one read-script call per node, whatever the
topology, with one retry after a failed connection; Redis errors become StoreUnavailable."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from metrics_store.errors import StoreUnavailable
from metrics_store.redis.bucket_cache import BucketCache
from metrics_store.redis.fan_out import FanOutPlan, NodeGroup
from metrics_store.redis.read_plan import ReadPlan, Staged, parse_staged
from metrics_store.redis.topology import Topology

T = TypeVar("T")
# Stages one answer's reads on the plan, as of a moment (epoch s); parses their replies.
Stage = Callable[[FanOutPlan, float], Staged[T]]


# Prepared plans kept: every endpoint and window of the current bucket, with room to spare.
PREPARED_PLANS = 64


@dataclass
class _Prepared:
    plan: FanOutPlan
    staged: list[Staged[Any]]
    last: tuple[list[Any], list[Any]] | None = None  # the last replies, and their answers


class PlanRunner:
    """Runs staged reads as one plan: `await runner.run(stages, now_s)` -> their answers."""

    def __init__(self, client: aioredis.Redis, topology: Topology) -> None:
        self._client = client
        self._topology = topology
        self._shards = topology.shards
        # Cluster: the shards seen holding data (read); the others are only probed (fan_out.py).
        self._written_shards: set[int] = set()
        # The bucket contents this reader has read, kept exact by the change feeds.
        self._cache = BucketCache(len(self._shards))
        self._prepared: dict[Hashable, _Prepared] = {}

    async def run(
        self, stages: Sequence[Stage[Any]], now_s: float, prepared_as: Hashable | None = None
    ) -> list[Any]:
        """The stages' answers as of `now_s`.

        `prepared_as` names stages whose plan and parsing depend on `now_s` only through the
        name (which includes the current bucket): their plan is staged once and run again,
        and while its replies are the same as last time (the bucket copy unchanged, the
        control reads equal), the last answers are given again instead of parsed anew:
        Redis is still asked every time, so an answer is never older than the request.
        """
        if prepared_as is None:
            plan = FanOutPlan(self._shards, self._cache)
            staged = [stage(plan, now_s) for stage in stages]
            return parse_staged(await self._read(plan), staged)
        prepared = self._prepared.get(prepared_as)
        if prepared is None:
            if len(self._prepared) >= PREPARED_PLANS:  # older buckets' plans: never run again
                self._prepared.clear()
            plan = FanOutPlan(self._shards, self._cache)
            prepared = _Prepared(plan, [stage(plan, now_s) for stage in stages])
            self._prepared[prepared_as] = prepared
        replies = await self._read(prepared.plan)
        last = prepared.last
        if last is not None and last[0] == replies:
            return last[1]
        answers = parse_staged(replies, prepared.staged)
        prepared.last = (replies, answers)
        return answers

    async def _read(self, plan: FanOutPlan) -> list[Any]:
        """Run the plan, one read-script call per node; Redis errors become StoreUnavailable."""
        try:
            try:
                return await self._run_plan(plan)
            except redis.ConnectionError:
                # A restarted Redis, a failed node or moved slots: recover and try once
                # more, so the first request after recovery works.
                await self._topology.recover(self._client)
                return await self._run_plan(plan)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {exc}") from exc

    async def _run_plan(self, plan: FanOutPlan) -> list[Any]:
        reads = self._topology.reads

        async def run(group: NodeGroup, part: ReadPlan) -> list[Any]:
            return await reads.run(self._client, group, part)

        while True:  # at most twice per newly written shard, once in the store's life
            groups = await reads.groups(self._client, self._written_shards)
            replies, newly_written = await plan.run(run, groups)
            if not newly_written:
                return replies
            self._written_shards.update(newly_written)
