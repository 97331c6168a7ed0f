"""METRICS_REDIS_MIN_REPLICAS_ACK: a batch counts only once enough replicas hold it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.waiting import wait_until
from workers.redis_process import RedisServerProcess


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "marker_ttl_s",
    [3600, 2],
    ids=["within its id marker's life", "past its marker's first life, scaled down"],
)
def test_a_batch_waits_for_its_replica_and_is_counted_once(
    tmp_path: Path, prefix: str, marker_ttl_s: int
) -> None:
    primary = RedisServerProcess(tmp_path / "primary")
    replica = RedisServerProcess(
        tmp_path / "replica", extra_args=("--replicaof", "127.0.0.1", str(primary.port))
    )
    primary.start()
    settings = Settings(
        redis_url=primary.url,
        key_prefix=prefix,
        batch_id_ttl_s=marker_ttl_s,
        redis_min_replicas_ack=1,
        redis_replicas_ack_timeout_ms=100,
        retry_max_backoff_s=0.2,
    )
    collector = MetricsCollector(settings)
    try:
        for i in range(50):
            collector.record_query("Q2", float(i), 1, 1.0)
        started = time.monotonic()
        # No replica: Redis ran the script, but nobody acknowledged it, so flush() must not
        # return; the batch is retried under its id meanwhile.
        with pytest.raises(TimeoutError):
            collector.flush(timeout_s=1.5)
        if marker_ttl_s < 10:  # each retry that finds the marker renews it
            wait_until(
                lambda: time.monotonic() - started > 4 * marker_ttl_s,
                30,
                "the batch to outlive its marker's first life",
            )
        assert (collector.written_events, collector.dropped_events) == (0, 0)
        replica.start()
        collector.flush(timeout_s=30)
        assert collector.written_events == 50
        stream = Keys(prefix).query_stream
        for server in (primary, replica):  # the retries wrote the batch once, on both
            client = redis.Redis.from_url(server.url)
            assert client.xlen(stream) == 50
            client.close()
    finally:
        collector.close()
        replica.stop()
        primary.stop()


def test_the_wait_must_end_before_the_socket_timeout() -> None:
    with pytest.raises(ValueError, match="redis_replicas_ack_timeout_ms"):
        Settings(redis_replicas_ack_timeout_ms=2000, redis_command_timeout_s=2.0)
