"""The docker-compose topology without Docker: Redis, two APIs, a sampler, a worker and the
simulator as processes; the numbers move, and both APIs show the same ones."""

from __future__ import annotations

from rq import Queue

from metrics_store.settings import Settings
from tests.processes import ApiProcess, CliProcess, child_env
from tests.waiting import wait_until
from workers.jobs import rq_connection


def test_compose_topology_as_processes(settings: Settings) -> None:
    queue = f"{settings.key_prefix}-jobs"
    env = child_env(settings.redis.url, settings.key_prefix, METRICS_JOB_QUEUES=queue,
                    METRICS_NODE="node-1")  # fmt: skip
    with ApiProcess(env) as api_1, ApiProcess(env) as api_2, CliProcess(["sampler"], env), \
            CliProcess(["worker"], env), CliProcess(["simulate", "--rate", "20"], env):  # fmt: skip

        def total(api: ApiProcess) -> int:
            return int(api.get("/api/metrics/queries").json()["totalQueries"])

        wait_until(lambda: total(api_1) >= 10, 30, "queries on replica 1")
        first = total(api_1)
        wait_until(lambda: total(api_1) > first, 15, "the numbers to move")
        wait_until(lambda: total(api_2) >= first, 5, "replica 2 to see the same events")

        resources = api_2.get("/api/metrics/resources").json()
        assert [node["node"] for node in resources["nodes"]] == ["node-1"]
        assert resources["cpu"]["cores"] > 0
        routing = api_1.get("/api/metrics/routing").json()
        assert routing["accuracyMetrics"]["totalDecisions"] >= 10
        assert sum(a["total"] for a in routing["modelAvailability"]) == 6

    Queue(queue, connection=rq_connection(settings)).delete(delete_jobs=True)
