"""High availability: what a replica's acknowledgement costs ingest, and how long writes stop
when the primary dies.

- ACK=1 against ACK=0: collector events/s, 1,000-event batches, on one primary+replica pair
  (`replicaof`), the two settings alternated in the same run, so the ratio is like for like.
- Failover gap: a steady collector through three sentinels, the primary SIGKILLed; seconds
  from the kill to the first batch the collector gets written on the promoted replica.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from bench.common import Summary, Table, progress, write_results
from bench.ingest import recorded_and_stored
from metrics_store.record.collector import MetricsCollector
from metrics_store.settings import Settings
from tests.sentinel_topology import DOWN_AFTER_MS, SentinelTopology
from tests.waiting import wait_until
from workers.redis_process import RedisServerProcess

BATCH_EVENTS = 1000
STEADY_EVENTS_S = 2000  # the collector's pace through the failover: 2 batches a second
DEFAULT_BACKOFF_S = Settings.default_of("retry_max_backoff_s")


@contextmanager
def replica_pair() -> Iterator[RedisServerProcess]:
    """A primary with one replica in sync; yields the primary."""
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        primary = RedisServerProcess(Path(tmp) / "primary")
        primary.start()
        replica = RedisServerProcess(
            Path(tmp) / "replica", extra_args=("--replicaof", "127.0.0.1", str(primary.port))
        )
        try:
            replica.start()
            client = redis.Redis.from_url(primary.url)
            wait_until(
                lambda: (
                    int(client.info("replication")["connected_slaves"]) == 1
                    and client.info("replication")["slave0"]["state"] == "online"
                ),
                30,
                "the replica to sync",
            )
            client.close()
            yield primary
        finally:
            replica.stop()
            primary.stop()


def ingest_rate(url: str, events: int, acks: int) -> float:
    """Collector events/s until flush() returns, each batch acknowledged by `acks` replicas."""
    settings = Settings(
        redis_url=url,
        key_prefix=f"ha{uuid.uuid4().hex[:8]}",
        node="bench",
        buffer_max_events=10_000_000,
        batch_max_events=BATCH_EVENTS,
        redis_min_replicas_ack=acks,
    )
    rate, stored = recorded_and_stored(settings, events)
    if stored != events:
        raise RuntimeError(f"ACK={acks}: {events - stored} of {events} events were not stored")
    return rate


def failover_gap(retry_max_backoff_s: float) -> tuple[float, float]:
    """Seconds from SIGKILL of the primary to (sentinels' decision, first write resumed)."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-sentinel-") as tmp,
        SentinelTopology(Path(tmp)) as topology,
    ):
        settings = Settings.model_validate(
            {
                "redis_url": topology.url,
                "redis_sentinels": topology.sentinels_setting,
                "key_prefix": f"fo{uuid.uuid4().hex[:8]}",
                "node": "bench",
                "retry_max_backoff_s": retry_max_backoff_s,
            }
        )
        collector = MetricsCollector(settings)
        stop = threading.Event()
        steady = threading.Thread(target=_record_steadily, args=(collector, stop))
        steady.start()
        try:
            wait_until(lambda: collector.written_events >= 2 * BATCH_EVENTS, 30, "steady writes")
            decided: list[float] = []
            old_port = topology.primary.port
            killed_at = time.monotonic()
            topology.primary.kill()  # returns once the process is gone
            watcher = threading.Thread(
                target=lambda: decided.append(topology.wait_failover(old_port))
            )
            watcher.start()
            # No write can succeed on a dead primary: every batch counted from here on was
            # written on the promoted replica.
            before = collector.written_events
            while collector.written_events == before:
                if time.monotonic() - killed_at > 60:
                    raise RuntimeError("writes did not resume within 60 s of the kill")
                time.sleep(0.005)
            resumed_s = time.monotonic() - killed_at
            watcher.join()
        finally:
            stop.set()
            steady.join()
            collector.close()
    return decided[0], resumed_s


def _record_steadily(collector: MetricsCollector, stop: threading.Event) -> None:
    """STEADY_EVENTS_S queries a second, in 10 ms steps, until `stop`."""
    per_step = STEADY_EVENTS_S // 100
    while not stop.wait(0.01):
        for _ in range(per_step):
            collector.record_query("Q2", 120.0, 64, 500.0)


def run(full: bool) -> dict[str, Any]:
    events = 200_000 if full else 100_000
    runs = 5 if full else 3
    failovers = 3 if full else 1
    table = Table(
        "High availability (median [min-max])", ["measure", "value", "baseline", "ratio", "target"]
    )
    acks_0: list[float] = []
    acks_1: list[float] = []
    with replica_pair() as primary:
        progress(f"ACK=0 and ACK=1 alternated, {events:,} events x {runs} each")
        for _ in range(runs):
            acks_0.append(ingest_rate(primary.url, events, 0))
            acks_1.append(ingest_rate(primary.url, events, 1))
    ack0, ack1 = Summary.of(acks_0), Summary.of(acks_1)
    gaps: dict[float, tuple[Summary, Summary]] = {}
    for backoff_s in (DEFAULT_BACKOFF_S, 0.5):
        progress(f"failover under a steady collector, backoff cap {backoff_s} s x {failovers}")
        timings = [failover_gap(backoff_s) for _ in range(failovers)]
        gaps[backoff_s] = (
            Summary.of([decided for decided, _ in timings]),
            Summary.of([resumed for _, resumed in timings]),
        )
    table.add(
        f"ingest events/s, ACK=1, {BATCH_EVENTS:,}-event batches",
        ack1.show(),
        ack0.show(),
        f"{ack1.median / ack0.median:.2f}",
        ">= 0.7",
    )
    limit_s = DOWN_AFTER_MS / 1000 + 2
    for backoff_s, (decided, resumed) in gaps.items():
        cap = f"retry backoff cap {backoff_s} s"
        table.add(f"sentinels' decision after the kill (s), {cap}", decided.show(2), "", "", "")
        table.add(f"first write resumed after the kill (s), {cap}", resumed.show(2),
                  f"down-after {DOWN_AFTER_MS} ms", "", f"<= {limit_s:.0f}")  # fmt: skip
    print(table.render())
    results = {
        "ack0_events_s": ack0,
        "ack1_events_s": ack1,
        "ack_ratio": ack1.median / ack0.median,
        "down_after_ms": DOWN_AFTER_MS,
        "failover": {
            str(backoff_s): {"decided_s": decided, "resumed_s": resumed}
            for backoff_s, (decided, resumed) in gaps.items()
        },
        "table": table.rows,
    }
    write_results("ha", results)
    return results
