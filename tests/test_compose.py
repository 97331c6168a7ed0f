"""docker-compose.yml (and its Sentinel variant): it parses, and every command it runs is a real
CLI subcommand.

No Docker engine runs here, so the topology itself is exercised as processes in
tests/test_topology.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.tools import require_tool
from workers.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def with_defaults(word: str) -> str:
    """Interpolate ${NAME:-default} as compose would with the variable unset."""
    return DEFAULT.sub(lambda m: m.group(2), word)


def metrics_services() -> dict[str, dict[str, Any]]:
    return {
        n: s for n, s in compose()["services"].items() if s.get("image") == "metrics-store:latest"
    }


def test_every_command_is_a_real_subcommand() -> None:
    services = metrics_services()
    assert set(services) >= {"api-1", "api-2", "sampler", "worker-1", "worker-2", "simulator"}
    parser = build_parser()
    for name, service in services.items():
        argv = [with_defaults(word) for word in service["command"]]
        args = parser.parse_args(argv)  # exits (fails the test) on an unknown command or flag
        assert args.command == argv[0], name


def test_apis_listen_on_all_interfaces_behind_the_proxy() -> None:
    services = compose()["services"]
    for name in ("api-1", "api-2"):
        command = services[name]["command"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert "ports" not in services[name]  # only the proxy is published
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server api-1:8000" in nginx and "server api-2:8000" in nginx
    assert "proxy_set_header Upgrade $http_upgrade" in nginx


def test_redis_persists_with_aof_and_has_a_healthcheck() -> None:
    redis = compose()["services"]["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "healthcheck" in redis
    assert any(v.endswith(":/data") for v in redis["volumes"])
    for service in metrics_services().values():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"]["REDIS_URL"].startswith("${REDIS_URL:-redis://redis:6379")


def test_simulator_only_runs_under_the_demo_profile() -> None:
    assert compose()["services"]["simulator"]["profiles"] == ["demo"]


def sentinel_override() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.sentinel.yml").read_text())
    return loaded


def test_the_sentinel_variant_configures_every_service_through_the_sentinels() -> None:
    services = sentinel_override()["services"]
    sentinels = {name for name in services if name.startswith("sentinel-")}
    assert len(sentinels) == 3
    conf = (ROOT / "deploy" / "sentinel.conf").read_text()
    assert "sentinel monitor mymaster redis 6379 2" in conf  # the main file's Redis, quorum 2
    for name in sentinels:
        assert "--sentinel" in " ".join(services[name]["command"])
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    assert set(metrics_services()) <= set(services)  # no service left on the single Redis
    for name in metrics_services():
        env = services[name]["environment"]
        listed = with_defaults(env["METRICS_REDIS_SENTINELS"]).split(",")
        assert {entry.split(":")[0] for entry in listed} == sentinels, name
        assert with_defaults(env["METRICS_REDIS_SENTINEL_MASTER"]) == "mymaster"
        assert set(services[name]["depends_on"]) >= sentinels


def test_the_cluster_variant_runs_every_service_on_a_six_node_cluster() -> None:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())
    services = loaded["services"]
    nodes = {name for name in services if name.startswith("redis-node-")}
    assert len(nodes) == 6
    for name in nodes:
        assert "--cluster-enabled" in services[name]["command"]
    create = " ".join(services["cluster-create"]["command"])
    assert "--cluster create" in create and "--cluster-replicas 1" in create
    assert set(services["cluster-create"]["depends_on"]) == nodes
    for name in metrics_services():
        env = services[name]["environment"]
        assert env["METRICS_REDIS_CLUSTER"] == "true", name
        assert with_defaults(env["REDIS_URL"]).startswith("redis://redis-node-"), name
        assert with_defaults(env["METRICS_JOBS_REDIS_URL"]) == "redis://redis:6379/0", name
        done = services[name]["depends_on"]["cluster-create"]["condition"]
        assert done == "service_completed_successfully", name


def test_docker_compose_validates_the_file() -> None:
    docker_compose = require_tool(
        "docker-compose", install_hint="apt-get install docker-compose (make test does)"
    )
    sentinel = ["-f", str(ROOT / "docker-compose.sentinel.yml")]
    cluster = ["-f", str(ROOT / "docker-compose.cluster.yml")]
    observability = ["--profile", "observability"]
    variants = ([], sentinel, cluster)
    demo = [[*v, "--profile", "demo"] for v in variants]
    for extra in [*variants, *demo, observability, [*sentinel, *observability]]:
        subprocess.run(
            [docker_compose, "-f", str(ROOT / "docker-compose.yml"), *extra, "config", "-q"],
            check=True,
            timeout=60,
        )


def test_prometheus_and_grafana_only_run_under_the_observability_profile() -> None:
    services = compose()["services"]
    for name, image in (("prometheus", "prom/prometheus:"), ("grafana", "grafana/grafana-oss:")):
        service = services[name]
        assert service["profiles"] == ["observability"]
        assert service["image"].startswith(image)  # the official images
        assert "healthcheck" in service
        # No login on Prometheus: both publish on loopback unless the operator says otherwise.
        assert all(with_defaults(port).startswith("127.0.0.1:") for port in service["ports"])
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_api_service_and_grafana_reads_that_prometheus() -> None:
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (target,) = [t for group in job["static_configs"] for t in group["targets"]]
    host, port = target.split(":")
    assert host == "proxy" and f"{port}:{port}" in with_defaults(services[host]["ports"][0])
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert "/etc/prometheus" in mounted  # prometheus.yml and its rules.yml, side by side
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "metrics-store.yml").read_text())
    dashboards_at = provider["providers"][0]["options"]["path"]
    assert dashboards_at in {v.split(":")[1] for v in services["grafana"]["volumes"]}
