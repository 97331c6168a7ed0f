"""A real Prometheus (Debian's package) for the tests: free loopback port, temporary storage."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.waiting import wait_until
from workers.process_tree import stop_process_tree
from workers.redis_process import free_port

PROMETHEUS_HINT = "apt-get install prometheus (make test does)"


def scrape_config(targets: list[str], interval_s: int = 1) -> str:
    """A config that scrapes `targets` (host:port) every `interval_s` seconds."""
    listed = ", ".join(f'"{target}"' for target in targets)
    return (
        "global:\n"
        f"  scrape_interval: {interval_s}s\n"
        f"  evaluation_interval: {interval_s}s\n"
        "scrape_configs:\n"
        "  - job_name: metrics-store\n"
        f"    static_configs:\n      - targets: [{listed}]\n"
    )


class PrometheusServer:
    """`prometheus` as a child process; `query()` asks its HTTP API."""

    def __init__(
        self, binary: str, workdir: Path, targets: list[str], config_text: str | None = None
    ) -> None:
        """`config_text`, when given, replaces the generated config (then `targets` is unused)."""
        self.port = free_port()
        self.workdir = workdir
        config = workdir / "prometheus.yml"
        config.write_text(config_text if config_text is not None else scrape_config(targets))
        self._command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        with (self.workdir / "prometheus.log").open("wb") as log:  # the child keeps its copy
            self._process = subprocess.Popen(
                self._command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_until(self._ready, timeout_s, "prometheus to be ready", passing=(httpx.HTTPError,))
        except AssertionError as exc:
            raise RuntimeError(f"prometheus did not start: {self.log_text()[-2000:]}") from exc

    def _ready(self) -> bool:
        return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200

    def log_text(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of `promql`; raises on a query error."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10.0)
        body = answer.json()
        if body.get("status") != "success":
            raise AssertionError(f"{promql}: {body}")
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def stop(self) -> None:
        if self._process is not None:
            stop_process_tree(self._process, timeout_s=10.0)
            self._process = None
