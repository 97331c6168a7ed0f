"""Faults with real processes: Redis killed and restarted under load, persistence across a
restart, drops reported through the API, workers that outlive an outage."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from metrics_store.clock import ManualClock
from metrics_store.errors import EventsLost
from metrics_store.read.reader import MetricsReader
from metrics_store.record.collector import MetricsCollector
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.harness import make_harness
from tests.processes import CliProcess, child_env
from tests.waiting import wait_until
from workers.redis_process import RedisServerProcess

RECORDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from metrics_store import get_metrics_collector
    count, rate, progress = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    collector = get_metrics_collector()
    started = time.monotonic()

    def pace(step):
        # The load itself: a steady rate, so Redis dies and returns while events keep coming.
        time.sleep(max(0.0, started + (step + 1) / rate - time.monotonic()))

    for i in range(count):
        collector.record_query("Q3", 10.0 + i % 7, 5, 4.0, is_error=(i % 13 == 0))
        collector.record_routing_decision("MODERATE", "Q3", 5.0, 1.0)
        if i % 10 == 0:
            progress.write_text(str(i))  # steps recorded so far, for the test to wait on
        pace(i)
    collector.flush(timeout_s=90)
    print(collector.written_events, collector.dropped_events, flush=True)
    """
)


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServerProcess]:
    """A redis-server that writes every command to its AOF before answering."""
    server = RedisServerProcess(
        tmp_path / "redis", persist=True, extra_args=("--appendfsync", "always")
    )
    server.start()
    yield server
    server.stop()


def steps_recorded(progress: list[Path]) -> list[int]:
    """How far each recorder has got (0 before its first report)."""
    return [int(path.read_text() or 0) if path.exists() else 0 for path in progress]


def test_kill_9_and_restart_redis_under_load_loses_and_doubles_nothing(
    durable_redis: RedisServerProcess, prefix: str, tmp_path: Path
) -> None:
    per_process, rate = 600, 300.0  # two seconds of steady traffic from each of two processes
    env = child_env(durable_redis.url, prefix)
    progress = [tmp_path / f"recorder-{n}.progress" for n in range(2)]
    recorders = [
        subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(per_process), str(rate), str(progress[n])],
            env={**env, "METRICS_NODE": f"recorder-{n}"},
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    wait_until(lambda: min(steps_recorded(progress)) >= 100, 30, "both recorders mid-stream")
    durable_redis.kill()
    # Both recorders keep recording into their buffers meanwhile: 100 steps more each.
    at_kill = steps_recorded(progress)

    def recorded_through_the_outage() -> bool:
        now = steps_recorded(progress)
        return all(later >= then + 100 for later, then in zip(now, at_kill, strict=True))

    wait_until(recorded_through_the_outage, 30, "both recorders to record through the outage")
    assert all(steps < per_process - 10 for steps in steps_recorded(progress))  # still going
    durable_redis.start()  # same port, same AOF

    outputs = [recorder.communicate(timeout=120)[0].split() for recorder in recorders]
    assert all(recorder.returncode == 0 for recorder in recorders)
    assert [int(dropped) for _, dropped in outputs] == [0, 0]
    settings = Settings(redis_url=durable_redis.url, key_prefix=prefix)
    harness = make_harness("redis", settings, time.time())
    try:
        expected = 2 * per_process
        assert harness.client.xlen(harness.keys.query_stream) == expected
        assert harness.client.xlen(harness.keys.routing_stream) == expected
        assert harness.read(MetricsReader.queries).totalQueries == expected
        assert harness.read(MetricsReader.routing).accuracyMetrics.totalDecisions == expected
        errors = sum(1 for i in range(per_process) if i % 13 == 0) * 2
        q3 = harness.read(MetricsReader.tiers).tiers[1]
        assert round(q3.errorRate * q3.requestCount) == errors
    finally:
        harness.close()


def test_aggregates_survive_a_restart_with_aof(
    durable_redis: RedisServerProcess, prefix: str
) -> None:
    settings = Settings(redis_url=durable_redis.url, key_prefix=prefix, node="node-a")
    harness = make_harness("redis", settings, T0)
    try:
        for i in range(30):
            harness.collector.record_query("Q2", 100.0 + i, 10, 50.0, is_error=i < 3)
            harness.collector.record_routing_decision("SIMPLE", "Q2", 1.5, 2.0)
        harness.collector.flush()
        before = [harness.read(call) for call in (MetricsReader.queries, MetricsReader.tiers,
                                                  MetricsReader.routing)]  # fmt: skip
        durable_redis.kill()  # as hard as a crash: no SHUTDOWN SAVE
        durable_redis.start()
        after = [harness.read(call) for call in (MetricsReader.queries, MetricsReader.tiers,
                                                 MetricsReader.routing)]  # fmt: skip
        assert after[:2] == before[:2]
        assert after[2].decisionMatrix == before[2].decisionMatrix
        assert after[2].accuracyMetrics == before[2].accuracyMetrics
    finally:
        harness.close()


def test_dropped_events_are_reported_through_the_api(tmp_path: Path, prefix: str) -> None:
    server = RedisServerProcess(tmp_path / "redis")
    server.start()
    settings = Settings(
        redis_url=server.url, key_prefix=prefix, node="node-d", buffer_max_events=10
    )
    collector = MetricsCollector(settings)
    try:
        collector.flush()
        server.stop()
        for i in range(25):  # the buffer keeps the newest 10
            collector.record_query("Q4", float(i), 1, 1.0)
        wait_until(lambda: collector.dropped_events >= 14, 10, "drops")
        server.start()
        with pytest.raises(EventsLost) as lost:  # flush() owns up to what it could not write
            collector.flush(timeout_s=20)
        dropped, written = collector.dropped_events, collector.written_events
        assert dropped + written == 25
        assert lost.value.lost == dropped
        with TestClient(create_app(settings)) as client:
            # The counters travel with the upkeep thread's next beat, both at once.
            wait_until(
                lambda: (
                    [
                        (c["droppedEvents"], c["writtenEvents"])
                        for c in client.get("/api/metrics/health").json()["collectors"]
                    ]
                    == [(dropped, written)]
                ),
                10,
                "the final counts in /health",
            )
            health = client.get("/api/metrics/health").json()
        [entry] = health["collectors"]
        assert (entry["node"], entry["droppedEvents"], entry["writtenEvents"]) == (
            "node-d",
            dropped,
            written,
        )
        assert "node-d" in health["liveNodes"]
    finally:
        collector.close(timeout_s=1)
        server.stop()


def test_health_forgets_collectors_that_stopped_beating(settings: Settings) -> None:
    # The collector and the API run on clocks fixed at T0 and T0 + 60, years before Redis's:
    # the store must trust the writers' clocks (no skew check), as for a replay.
    settings = settings.replace(clock_skew_tolerance_s=0)
    clock = ManualClock(T0)
    collector = MetricsCollector(settings, clock=clock)
    collector.record_query("Q2", 1.0, 1, 1.0)
    collector.flush()
    collector.close()
    with TestClient(create_app(settings, ManualClock(T0))) as client:
        assert [c["node"] for c in client.get("/api/metrics/health").json()["collectors"]] == [
            "node-a"
        ]
    # Liveness follows Redis's clock: the API's own, a minute on, changes nothing ...
    with TestClient(create_app(settings, ManualClock(T0 + 60))) as client:
        assert len(client.get("/api/metrics/health").json()["collectors"]) == 1
    # ... while a beat older than the TTL by Redis's clock is no longer live.
    keys = Keys(settings.key_prefix)
    store = redis.Redis.from_url(settings.redis.url)
    for field, raw in store.hgetall(keys.collectors).items():
        record = orjson.loads(raw)
        record["at"] -= settings.liveness.node_ttl_s + 1
        store.hset(keys.collectors, field, orjson.dumps(record))
    store.close()
    with TestClient(create_app(settings, ManualClock(T0))) as client:
        assert client.get("/api/metrics/health").json()["collectors"] == []


def test_worker_outlives_a_redis_restart(tmp_path: Path, prefix: str) -> None:
    from rq import Queue

    from workers.jobs import enqueue_query

    server = RedisServerProcess(tmp_path / "redis")
    server.start()
    queue_name = f"{prefix}-jobs"
    env = child_env(server.url, prefix, METRICS_DEMO_TIME_SCALE="0")
    harness = make_harness("redis", Settings(redis_url=server.url, key_prefix=prefix), 0)

    def recorded(count: int) -> Callable[[], bool]:
        def check() -> bool:
            harness.clock.set(time.time())  # the jobs may land in a later bucket
            return harness.read(MetricsReader.queries).totalQueries == count

        return check

    try:
        with CliProcess(["worker", "--queues", queue_name], env) as worker:
            queue = Queue(queue_name, connection=redis.Redis.from_url(server.url))
            enqueue_query(queue, "before the outage")
            wait_until(recorded(1), 15, "the first job's query in Redis")
            server.stop()
            wait_until(lambda: lost_redis(worker), 15, "the worker to notice the outage")
            assert worker.process is not None and worker.process.poll() is None
            server.start()  # this one keeps nothing across a restart
            queue = Queue(queue_name, connection=redis.Redis.from_url(server.url))
            for i in range(3):
                enqueue_query(queue, f"after the outage {i}")
            wait_until(recorded(3), 30, "the jobs after the outage")
            assert worker.process.poll() is None
    finally:
        harness.close()
        server.stop()


def test_a_worker_killed_mid_job_records_nothing_for_it(settings: Settings) -> None:
    from rq import Queue
    from rq.registry import StartedJobRegistry

    from workers.jobs import enqueue_query, rq_connection

    queue_name = f"{settings.key_prefix}-jobs"
    connection = rq_connection(settings)
    queue = Queue(queue_name, connection=connection)
    started = StartedJobRegistry(queue_name, connection=connection)
    slow = child_env(settings.redis.url, settings.key_prefix, METRICS_DEMO_TIME_SCALE="1")
    harness = make_harness("redis", settings, time.time())
    try:
        with CliProcess(["worker", "--queues", queue_name], slow) as doomed:
            enqueue_query(queue, "a long prompt " * 40)  # seconds of simulated generation
            wait_until(lambda: started.count == 1, 15, "the job to start")
            doomed.kill()
        harness.clock.set(time.time())
        assert harness.read(MetricsReader.queries).totalQueries == 0  # never half a job
        assert harness.read(MetricsReader.routing).accuracyMetrics.totalDecisions == 0

        fast = child_env(settings.redis.url, settings.key_prefix, METRICS_DEMO_TIME_SCALE="0")
        with CliProcess(["worker", "--queues", queue_name], fast):
            for i in range(2):
                enqueue_query(queue, f"short {i}")
            wait_until(lambda: len(queue) == 0, 15, "the survivor to take the jobs")

            def two_recorded() -> bool:
                harness.clock.set(time.time())
                return harness.read(MetricsReader.queries).totalQueries == 2

            wait_until(two_recorded, 15, "the two later jobs")
    finally:
        harness.close()
        queue.delete(delete_jobs=True)
        connection.close()


def lost_redis(worker: CliProcess) -> bool:
    """The worker has logged its lost connection: rq's wait for jobs, or our loop's guard."""
    log = worker.stderr_text()
    return "could not connect to Redis" in log or "Redis unavailable" in log


def test_a_worker_stops_on_sigterm_while_redis_is_down(tmp_path: Path, prefix: str) -> None:
    from rq import Worker

    server = RedisServerProcess(tmp_path / "redis")
    server.start()
    env = child_env(server.url, prefix, METRICS_DEMO_TIME_SCALE="0")
    worker = CliProcess(["worker", "--queues", f"{prefix}-jobs"], env)
    worker.start()
    try:
        with redis.Redis.from_url(server.url) as connection:
            wait_until(
                lambda: len(Worker.all(connection=connection)) == 1,
                15,
                "the worker to register and wait for jobs",
            )
        server.stop()
        wait_until(lambda: lost_redis(worker), 15, "the worker to retry its connection")
        assert worker.process is not None
        worker.process.terminate()
        worker.process.wait(timeout=10)  # promptly, not after a kill
    finally:
        worker.kill()
        server.stop()


def test_a_malformed_record_costs_only_itself(settings: Settings) -> None:
    """Garbage in the shared hashes (another version, a typo in redis-cli) breaks nothing."""
    from metrics_store.redis.keys import Keys

    keys = Keys(settings.key_prefix)
    client = redis.Redis.from_url(settings.redis.url)
    client.hset(keys.collectors, "ghost:1:x", b'{"node": "ghost", "unexpected": 1}')
    client.hset(keys.collectors, "junk:2:y", b"not json")
    client.hset(keys.snapshots, "broken-node", b'{"node": "broken-node"}')
    client.hset(keys.availability, "node-a:Q2", b"lots/many")
    collector = MetricsCollector(settings)  # its first heartbeat reads the collectors hash
    try:
        collector.record_query("Q2", 10.0, 1, 1.0)
        collector.update_model_availability("Q3", 1, 2)
        collector.flush(timeout_s=10)
        collector.record_query("Q2", 10.0, 1, 1.0)
        collector.flush(timeout_s=10)  # the flusher is still alive
        with TestClient(create_app(settings)) as api:
            for path in ("/api/metrics/health", "/api/metrics/resources", "/api/metrics/routing"):
                assert api.get(path).status_code == 200, path
            routing = api.get("/api/metrics/routing").json()
            assert routing["modelAvailability"][1] == {"tier": "Q3", "available": 1, "total": 2}
    finally:
        collector.close()
        client.close()


def test_model_availability_does_not_expire(settings: Settings) -> None:
    harness = make_harness("redis", settings, time.time())
    try:
        harness.collector.update_model_availability("Q4", 1, 1)
        harness.collector.flush()
        assert harness.client.ttl(harness.keys.availability) == -1  # no expiry set
    finally:
        harness.close()
