"""Engines that answer /metrics as vLLM, SGLang and TGI do, for the scraper's tests.

Each mimic keeps a prometheus_client registry with the engine's published metric names, labels
and bucket lists (vLLM vllm/v1/metrics/loggers.py, SGLang python/sglang/srt/metrics/
collector.py, TGI router/src/server.rs; docs/engines.md cites them), records the requests it is
told it served, and forgets everything on `restart()`, as a restarted engine does. TGI's
exposition comes from Rust's metrics-exporter-prometheus: no HELP, no `_created`, counters
without `_total`; its mimic writes prometheus_client's text in that form.

`EngineServer` serves whatever a callable returns on a real HTTP port in a thread, and can be
stopped and started again on the same port (an engine that cannot be reached, then is back).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from workers.redis_process import free_port

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

VLLM_LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                        50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip
VLLM_TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                     5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
VLLM_TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
                     5.0, 7.5, 10.0, 20.0, 40.0, 80.0]  # fmt: skip
SGLANG_TTFT_BUCKETS = [0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400]
SGLANG_E2E_BUCKETS = [0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400,
                      600, 1200, 1800, 2400]  # fmt: skip
SGLANG_ITL_BUCKETS = [0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035,
                      0.040, 0.060, 0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.0, 2.0, 4.0,
                      6.0, 8.0]  # fmt: skip
SGLANG_QUEUE_BUCKETS = [0.0, 0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80,
                        90, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]  # fmt: skip
# TGI: 35 durations, 0.0001 * 1.5^k; generated tokens in hundredths of max_total_tokens (2048)
TGI_DURATION_BUCKETS = [0.0001 * 1.5**k for k in range(1, 36)]
TGI_TOKEN_BUCKETS = [2048 / 100 * (x + 1) for x in range(100)]


@dataclass(frozen=True)
class Served:
    """One request as the test told the engine it went."""

    latency_s: float
    ttft_s: float
    queue_s: float
    tokens: int
    outcome: str = "stop"  # vLLM's finished_reason; "error" fails it, "abort" cancels it

    @property
    def tpot_s(self) -> float:
        return (self.latency_s - self.ttft_s) / max(1, self.tokens - 1)


@dataclass
class EngineMimic:
    """One engine's /metrics: `kind` vllm-0.10, vllm-0.11, sglang, sglang-old or tgi."""

    kind: str
    model: str = "llama-8b"
    registry: CollectorRegistry = field(init=False)
    metrics: dict[str, object] = field(init=False)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """A new process: every counter from zero, new `_created` stamps."""
        self.registry = CollectorRegistry()
        build = {"tgi": _tgi}.get(self.kind, _sglang if self.kind.startswith("sglang") else _vllm)
        self.metrics = build(self.kind, self.registry)

    def serve(self, request: Served) -> None:
        m: dict[str, object] = self.metrics
        if self.kind == "tgi":
            _serve_tgi(m, request)
        elif self.kind.startswith("sglang"):
            _serve_sglang(m, request, {"model_name": self.model})
        else:
            _serve_vllm(m, request, {"model_name": self.model, "engine": "0"})

    def exposition(self, openmetrics: bool = False) -> tuple[bytes, str]:
        """The body and Content-Type the engine answers with."""
        if openmetrics:
            return _colons_kept(generate_openmetrics(self.registry)), OPENMETRICS_TYPE
        text = generate_latest(self.registry)
        return (_as_rust_exporter(text) if self.kind == "tgi" else text), TEXT_TYPE


def _vllm(kind: str, registry: CollectorRegistry) -> dict[str, object]:
    labels = ["model_name", "engine"]

    def histogram(name: str, buckets: list[float]) -> Histogram:
        return Histogram(name, name, labels, buckets=buckets, registry=registry)

    m: dict[str, object] = {
        "e2e": histogram("vllm:e2e_request_latency_seconds", VLLM_LATENCY_BUCKETS),
        "queue": histogram("vllm:request_queue_time_seconds", VLLM_LATENCY_BUCKETS),
        "ttft": histogram("vllm:time_to_first_token_seconds", VLLM_TTFT_BUCKETS),
        # per token; deprecated in 0.11 and still shown there
        "tpot_token": histogram("vllm:time_per_output_token_seconds", VLLM_TPOT_BUCKETS),
        "tokens": Counter("vllm:generation_tokens", "x", labels, registry=registry),
        "success": Counter(
            "vllm:request_success", "x", [*labels, "finished_reason"], registry=registry
        ),
        "running": Gauge("vllm:num_requests_running", "x", labels, registry=registry),
    }
    if kind != "vllm-0.10":
        m["tpot"] = histogram("vllm:request_time_per_output_token_seconds", VLLM_TPOT_BUCKETS)
        m["itl"] = histogram("vllm:inter_token_latency_seconds", VLLM_TPOT_BUCKETS)
    return m


def _serve_vllm(m: dict[str, object], r: Served, labels: dict[str, str]) -> None:
    for name, value in (("e2e", r.latency_s), ("queue", r.queue_s), ("ttft", r.ttft_s)):
        _histogram(m, name).labels(**labels).observe(value)
    for _ in range(r.tokens - 1):
        _histogram(m, "tpot_token").labels(**labels).observe(r.tpot_s)
        if "itl" in m:
            _histogram(m, "itl").labels(**labels).observe(r.tpot_s)
    if "tpot" in m:
        _histogram(m, "tpot").labels(**labels).observe(r.tpot_s)
    _counter(m, "tokens").labels(**labels).inc(r.tokens)
    _counter(m, "success").labels(**labels, finished_reason=r.outcome).inc()


def _sglang(kind: str, registry: CollectorRegistry) -> dict[str, object]:
    labels = ["model_name"]

    def histogram(name: str, buckets: list[float]) -> Histogram:
        return Histogram(name, name, labels, buckets=buckets, registry=registry)

    per_token = "sglang:time_per_output_token_seconds" if kind == "sglang-old" else (
        "sglang:inter_token_latency_seconds"
    )  # fmt: skip
    return {
        "e2e": histogram("sglang:e2e_request_latency_seconds", SGLANG_E2E_BUCKETS),
        "ttft": histogram("sglang:time_to_first_token_seconds", SGLANG_TTFT_BUCKETS),
        "itl": histogram(per_token, SGLANG_ITL_BUCKETS),
        "queue": histogram("sglang:queue_time_seconds", SGLANG_QUEUE_BUCKETS),
        "tokens": Counter("sglang:generation_tokens", "x", labels, registry=registry),
        "requests": Counter("sglang:num_requests", "x", labels, registry=registry),
        "aborted": Counter("sglang:num_aborted_requests", "x", labels, registry=registry),
    }


def _serve_sglang(m: dict[str, object], r: Served, labels: dict[str, str]) -> None:
    if r.outcome != "stop":  # an aborted request: counted, in no histogram
        _counter(m, "aborted").labels(**labels).inc()
        return
    for name, value in (("e2e", r.latency_s), ("queue", r.queue_s), ("ttft", r.ttft_s)):
        _histogram(m, name).labels(**labels).observe(value)
    for _ in range(r.tokens - 1):
        _histogram(m, "itl").labels(**labels).observe(r.tpot_s)
    _counter(m, "tokens").labels(**labels).inc(r.tokens)
    _counter(m, "requests").labels(**labels).inc()


def _tgi(kind: str, registry: CollectorRegistry) -> dict[str, object]:
    def histogram(name: str, buckets: list[float]) -> Histogram:
        return Histogram(name, name, buckets=buckets, registry=registry)

    return {
        "duration": histogram("tgi_request_duration", TGI_DURATION_BUCKETS),
        "queue": histogram("tgi_request_queue_duration", TGI_DURATION_BUCKETS),
        "tpot": histogram("tgi_request_mean_time_per_token_duration", TGI_DURATION_BUCKETS),
        "tokens": histogram("tgi_request_generated_tokens", TGI_TOKEN_BUCKETS),
        "success": Counter("tgi_request_success", "x", registry=registry),
        "failure": Counter("tgi_request_failure", "x", ["err"], registry=registry),
    }


def _serve_tgi(m: dict[str, object], r: Served) -> None:
    if r.outcome != "stop":  # router/src/server.rs: a failure is counted, nothing observed
        _counter(m, "failure").labels(err="generation").inc()
        return
    _histogram(m, "duration").observe(r.latency_s)
    _histogram(m, "queue").observe(r.queue_s)
    _histogram(m, "tpot").observe(r.tpot_s)
    _histogram(m, "tokens").observe(r.tokens)
    _counter(m, "success").inc()


def _histogram(m: dict[str, object], name: str) -> Histogram:
    found = m[name]
    assert isinstance(found, Histogram)
    return found


def _counter(m: dict[str, object], name: str) -> Counter:
    found = m[name]
    assert isinstance(found, Counter)
    return found


def _as_rust_exporter(text: bytes) -> bytes:
    """prometheus_client's text as metrics-exporter-prometheus writes it."""
    kept = [
        line
        for line in text.decode().splitlines()
        if not line.startswith("# HELP") and "_created" not in line
    ]
    out = "\n".join(re.sub(r"(tgi_\w+?)_total\b", r"\1", line) for line in kept)
    return (out + "\n").encode()


def _colons_kept(text: bytes) -> bytes:
    """OpenMetrics with the engines' names as they are: prometheus_client 0.26 escapes a colon
    in a sample's name to `_` (`vllm_e2e_...`) but not in its TYPE line, which leaves samples
    outside their family; OpenMetrics 1.0 allows the colon, and older clients kept it."""
    return re.sub(rb"^(vllm|sglang)_", rb"\1:", text, flags=re.MULTILINE)


class EngineServer:
    """`answer()`'s body on http://127.0.0.1:<port>/metrics, in a thread; stop() and start()
    again keep the port (an engine down, then back)."""

    def __init__(self, answer: Callable[[], tuple[bytes, str]]) -> None:
        self.answer = answer
        self.port = free_port()
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> EngineServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body, content_type = owner.answer()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test's output is pytest's

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
