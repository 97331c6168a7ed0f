"""`/api/metrics/health` from its stored records: collectors, processes and their loops.

Who is alive is judged by Redis's clock alone: the read takes `TIME` in the same script call as
the records, and every stamp it compares with was written by Redis's clock (the heartbeats and
the records' `at`), so neither the writers' clocks nor this reader's decide liveness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from metrics_store.live.collector_stats import CollectorCounters
from metrics_store.live.live_store import read_replica_count
from metrics_store.live.process_health import StoredProcess
from metrics_store.read.shapes import CollectorHealth, HealthStatus, LoopHealth, ProcessHealth
from metrics_store.redis.keys import Keys
from metrics_store.redis.read_plan import ReadPlan, Staged, pairs
from metrics_store.timefmt import iso_utc


def stage_health(plan: ReadPlan, keys: Keys, ttl_s: float) -> Staged[HealthStatus]:
    """Stage /health's reads: whatever beat within `ttl_s` of Redis's clock is alive."""
    plan.time()
    plan.since(keys.live_nodes, ttl_s)
    replicas = read_replica_count(plan, keys, ttl_s)
    plan.hgetall(keys.collectors)
    plan.hgetall(keys.processes)
    plan.hgetall(keys.refused)
    plan.hgetall(keys.otlp_unmapped)
    plan.hgetall(keys.engines_failed)
    plan.hgetall(keys.engines_unmapped)
    plan.hgetall(keys.slo_webhook)

    def parse(replies: Sequence[Any]) -> HealthStatus:
        alive_since = float(replies[0]) - ttl_s
        count = replicas.parse(replies[2:3])
        return health_status([replies[1], count, *replies[3:]], alive_since)

    return Staged(10, parse)


def health_status(replies: Sequence[Any], alive_since: float) -> HealthStatus:
    """Replies: live nodes, live replica count, collectors, processes, refused, OTLP
    unmapped, engine scrapes failed, engine series unmapped (hashes);
    `alive_since` is by Redis's clock, as the records' stamps are."""
    nodes, replicas, collector_records, process_records, refused, unmapped = replies[:6]
    scrapes_failed, engine_unmapped, webhook = replies[6:]
    webhook_counts = pairs(webhook)
    collectors = _live_collectors(pairs(collector_records).values(), alive_since)
    processes = _live_processes(pairs(process_records).values(), alive_since)
    return HealthStatus(
        liveNodes=sorted(node.decode() for node in nodes),
        liveReplicas=int(replicas),
        collectors=collectors,
        droppedEvents=sum(c.droppedEvents for c in collectors),
        processes=processes,
        loopErrors=sum(loop.errors for p in processes for loop in p.loops),
        refusedEvents={node.decode(): int(count) for node, count in sorted(pairs(refused).items())},
        otlpUnmapped=_counts(unmapped),
        engineScrapesFailed=_counts(scrapes_failed),
        engineUnmapped=_counts(engine_unmapped),
        sloWebhookSent=int(webhook_counts.get(b"sent", 0)),
        sloWebhookFailures=int(webhook_counts.get(b"failures", 0)),
    )


def _counts(raw: Any) -> dict[str, int]:
    """A hash of counters (field -> integer), by field."""
    return {name.decode(): int(n) for name, n in sorted(pairs(raw).items())}


class _Stamped(Protocol):
    @property
    def at(self) -> float: ...  # when its writer last beat


S = TypeVar("S", bound=_Stamped)


def _live(
    records: Iterable[Any],
    parse: Callable[[Any], S | None],
    alive_since: float,
    key: Callable[[S], str],
) -> list[S]:
    """The readable records stamped since `alive_since` (their writers still beat), sorted."""
    parsed = (parse(raw) for raw in records)
    return sorted((r for r in parsed if r is not None and r.at >= alive_since), key=key)


def _live_collectors(records: Any, alive_since: float) -> list[CollectorHealth]:
    live = _live(records, CollectorCounters.from_json, alive_since, _field)
    return [
        CollectorHealth(
            node=c.node,
            pid=c.pid,
            writtenEvents=c.written,
            droppedEvents=c.dropped,
            droppedByReason=c.dropped_by,
            pendingEvents=c.pending,
            refusedEvents=c.refused,
            lastSeen=iso_utc(c.at),
        )
        for c in live
    ]


def _field(counters: CollectorCounters) -> str:
    return counters.field


def _live_processes(records: Any, alive_since: float) -> list[ProcessHealth]:
    live = _live(records, StoredProcess.from_json, alive_since, _process)
    return [
        ProcessHealth(
            process=p.process,
            node=p.node,
            roles=p.roles,
            lastSeen=iso_utc(p.at),
            loops=[
                LoopHealth(
                    name=name,
                    errors=loop.errors,
                    failing=loop.streak > 0,
                    lastError=loop.last_error,
                    lastErrorAt=None if loop.last_error_at is None else iso_utc(loop.last_error_at),
                )
                for name, loop in sorted(p.loops.items())
            ],
        )
        for p in live
    ]


def _process(record: StoredProcess) -> str:
    return record.process
