"""Two `metrics-store sampler` processes as two nodes, read through a real API process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.processes import ApiProcess, CliProcess, child_env
from tests.waiting import wait_for

# Quick beats and a short node TTL, so a stopped node drops out of the test within a second
# or two; the API process reads with the same TTL.
FAST = {"METRICS_SAMPLE_INTERVAL_S": "0.2", "METRICS_NODE_TTL_S": "1.5"}


def poll_resources(
    api: ApiProcess, until: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0
) -> dict[str, Any]:
    """The first /resources body that satisfies `until`; fails after `timeout_s`."""
    body: dict[str, Any] = wait_for(
        lambda: api.get("/api/metrics/resources").json(), until, timeout_s, "a /resources body"
    )
    return body


def node_names(body: dict[str, Any]) -> list[str]:
    return [node["node"] for node in body["nodes"]]


def index_file(path: Path, size: int) -> str:
    path.write_bytes(b"\0" * size)
    return str(path)


def test_two_samplers_sum_and_a_stopped_one_drops_out(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    def sampler(node: str, index_bytes: int) -> CliProcess:
        index = index_file(tmp_path / f"{node}.faiss", index_bytes)
        env = child_env(redis_url, prefix, METRICS_NODE=node, METRICS_FAISS_INDEX_PATH=index,
                        **FAST)  # fmt: skip
        return CliProcess(["sampler"], env)

    with sampler("node-a", 1000) as a, sampler("node-b", 3000) as b, ApiProcess(
        child_env(redis_url, prefix, **FAST)
    ) as api:  # fmt: skip
        both = poll_resources(api, lambda body: node_names(body) == ["node-a", "node-b"])
        node_a, node_b = both["nodes"]
        cores = psutil.cpu_count(logical=True)
        assert both["cpu"]["cores"] == node_a["cpu"]["cores"] + node_b["cpu"]["cores"] == 2 * cores
        # Same machine, same cores: the core-weighted mean is the plain mean (give or take
        # the rounding of each node's figure to 2 decimals).
        mean = (node_a["cpu"]["percent"] + node_b["cpu"]["percent"]) / 2
        assert abs(both["cpu"]["percent"] - mean) <= 0.01
        total = node_a["memory"]["total"] + node_b["memory"]["total"]
        assert abs(both["memory"]["total"] - total) <= 0.01
        assert (node_a["faissIndexSize"], node_b["faissIndexSize"]) == (1000, 3000)
        assert both["faissIndexSize"] == 3000
        assert both["redisCacheSize"] > 0
        assert both["redisCacheSize"] == node_a["redisCacheSize"] == node_b["redisCacheSize"]

        b.stop()
        assert b.process is not None and b.process.returncode == 0  # SIGTERM: a clean stop
        poll_resources(api, lambda body: node_names(body) == ["node-a"])

        alone = api.get("/api/metrics/resources?node=node-a").json()
        assert node_names(alone) == ["node-a"]
        assert (alone["cpu"]["cores"], alone["faissIndexSize"]) == (cores, 1000)
        assert api.get("/api/metrics/resources?node=node-b").status_code == 404
        assert "Traceback" not in a.stderr_text()
