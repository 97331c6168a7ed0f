"""A Redis Cluster of real processes: three primaries and three replicas on loopback.

Each node is `redis-server --cluster-enabled yes` on a free port in its own directory;
`redis-cli --cluster create ... --cluster-replicas 1` joins them. The node timeout is short,
so a killed primary's replica takes over within seconds.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.waiting import wait_until
from workers.process_tree import StartedInWith
from workers.redis_process import RedisServerProcess, free_port

NODE_TIMEOUT_MS = 1500
NODES = 6  # three primaries, one replica each


class ClusterTopology(StartedInWith):
    """Six nodes under `root`; `url` names one of them, as REDIS_URL does in cluster mode.

    >>> with ClusterTopology(tmp_path) as cluster:
    ...     Settings(redis_url=cluster.url, redis_cluster=True)
    """

    def __init__(self, root: Path, nodes: int = NODES) -> None:
        self.nodes = [
            RedisServerProcess(
                root / f"node-{n}",
                extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # The bus port defaults to port + 10000, past 65535 for a high free port.
                    "--cluster-port", str(free_port()),
                ),
            )
            for n in range(nodes)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self, timeout_s: float = 60.0) -> None:
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise

    def _start(self, timeout_s: float) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        cli = shutil.which("redis-cli") or "redis-cli"
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Until every live node says the cluster is ok and each primary has a synced replica."""
        wait_until(self._healthy, timeout_s, "the cluster to be whole")

    def _healthy(self) -> bool:
        live = [node for node in self.nodes if node.running]
        for node in live:
            client = _client(node)
            try:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                info = client.info("replication")
                if info["role"] == "master" and int(info["connected_slaves"]) < 1:
                    return len(live) < len(self.nodes)  # after a kill: no spare replica left
                if info["role"] == "slave" and info["master_link_status"] != "up":
                    return False
            finally:
                client.close()
        return True

    def primaries(self) -> list[RedisServerProcess]:
        """The running nodes that serve slots now."""
        return [node for node in self.nodes if node.running and _role(node) == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _client(node: RedisServerProcess) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=1.0, decode_responses=True)


def _role(node: RedisServerProcess) -> str:
    client = _client(node)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()
