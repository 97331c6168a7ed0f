"""OTLP/HTTP ingest: the OpenTelemetry SDK exporting GenAI metrics to running API replicas.

Counts are exact; quantiles from exponential histograms lie within relativeError of numpy's;
an SDK restart, an exporter's retry and two replicas taking turns add each query once; a bad
body is refused whole and writes nothing.
"""

from __future__ import annotations

import gzip
import math
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from google.protobuf.json_format import MessageToJson
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import HistogramDataPoint
from opentelemetry.sdk.metrics.export import MetricsData

from api.main import create_app
from metrics_store.histogram import RELATIVE_ERROR, SCHEMA, bin_index
from metrics_store.settings import Settings
from metrics_store.sources.otlp.convert import BadPoint, Bins, from_explicit
from metrics_store.sources.otlp.mapping import Placed
from metrics_store.sources.otlp.temporality import Last, Step, decide, decode_state, encode_state
from tests.otlp_sdk import GenAiServer, export, request_of
from tests.processes import ApiProcess, CliProcess, child_env, start_replicas
from tests.waiting import wait_until
from workers.redis_process import free_port

TIER_ENV = {"METRICS_OTLP_TIER_MAP": "llama-8b=Q2,llama-70b=Q3"}
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def api(redis_url: str, prefix: str) -> Iterator[ApiProcess]:
    replica = ApiProcess(child_env(redis_url, prefix, **TIER_ENV))
    replica.start()
    yield replica
    replica.stop()


def latency(replica: ApiProcess, tier: str) -> dict[str, object]:
    answer = replica.get(f"/api/metrics/latency?tier={tier}").json()
    found: dict[str, object] = answer["tiers"][0]
    return found


def tier_count(replica: ApiProcess, tier: str) -> int:
    queries = replica.get("/api/metrics/queries").json()
    count: int = queries["tierDistribution"][tier]
    return count


def serve_many(server: GenAiServer, n: int, seed: int) -> list[float]:
    """n queries on llama-8b (Q2), one in ten failed; their latencies in ms."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        latency_s = rng.lognormvariate(-0.5, 0.8)
        server.serve("llama-8b", latency_s, latency_s * 0.2, rng.randint(2, 400), i % 10 == 0)
        out.append(latency_s * 1000.0)
    return out


def assert_within_bound(values_ms: list[float], answer: dict[str, object], e: float) -> None:
    """Each quantile between (1-e) x_lo and (1+e) x_hi (docs/latency.md)."""
    ordered = np.sort(np.array(values_ms))
    n = len(ordered)
    for name, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        rank = p * (n - 1)
        low, high = ordered[math.floor(rank)], ordered[math.ceil(rank)]
        got = float(answer[name])  # type: ignore[arg-type]
        assert (1 - e) * low <= got <= (1 + e) * high, (name, got, low, high)


def test_otel_scale_is_our_schema_with_the_index_one_up() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        seconds = rng.lognormvariate(0, 3)
        for scale in (SCHEMA, SCHEMA + 1, SCHEMA + 3, 20):
            otel_index = math.ceil(math.log2(seconds) * 2**scale) - 1
            ours = (otel_index >> (scale - SCHEMA)) + 1
            if abs(math.log2(seconds) * 2**scale - round(math.log2(seconds) * 2**scale)) > 1e-6:
                assert ours == bin_index(seconds * 1000.0)


def test_sdk_export_counts_exactly_and_quantiles_within_bound(api: ApiProcess) -> None:
    server = GenAiServer("vllm-0")
    values = serve_many(server, 2000, seed=1)
    export(api.base_url, server.collect())

    assert tier_count(api, "Q2") == 2000
    found = latency(api, "Q2")
    assert found["latencyMs"]["count"] == 2000  # type: ignore[index]
    assert found["relativeError"] == RELATIVE_ERROR
    assert_within_bound(values, found["latencyMs"], RELATIVE_ERROR)  # type: ignore[arg-type]
    assert found["ttftMs"]["count"] == 2000  # type: ignore[index]
    tiers = {t["name"]: t for t in api.get("/api/metrics/tiers").json()["tiers"]}
    assert tiers["Q2"]["requestCount"] == 2000
    assert tiers["Q2"]["errorRate"] == pytest.approx(0.1, abs=0.001)


@pytest.mark.parametrize("exponential", [True, False], ids=["sdk-default-160", "explicit"])
def test_coarser_histograms_state_their_error(api: ApiProcess, exponential: bool) -> None:
    """The SDK's default exponential histogram goes coarser than scale 5 for a wide spread;
    explicit buckets are coarser still: /latency states the error, and keeps to it."""
    server = GenAiServer("vllm-9", exponential=exponential, max_size=160)
    values = serve_many(server, 2000, seed=1)
    export(api.base_url, server.collect())
    found = latency(api, "Q2")
    bound = found["relativeError"]
    assert isinstance(bound, float) and bound > RELATIVE_ERROR
    answer = api.get("/api/metrics/latency").json()
    assert answer["relativeError"] == bound
    assert {t["name"]: t["relativeError"] for t in answer["tiers"]}["Q3"] == RELATIVE_ERROR
    if exponential:  # explicit buckets' open ends give error 1: true, but not worth checking
        assert_within_bound(values, found["latencyMs"], bound)  # type: ignore[arg-type]


def test_cumulative_across_sdk_restart_and_retry(api: ApiProcess) -> None:
    first = GenAiServer("vllm-0")
    serve_many(first, 300, seed=2)
    data = first.collect()
    export(api.base_url, data)
    export(api.base_url, data)  # the exporter's retry: the same export again
    serve_many(first, 200, seed=3)
    export(api.base_url, first.collect())
    assert tier_count(api, "Q2") == 500
    first.shutdown()

    restarted = GenAiServer("vllm-0")  # same stream, new start time: a reset, not a delta
    serve_many(restarted, 50, seed=4)
    export(api.base_url, restarted.collect())
    assert tier_count(api, "Q2") == 550
    assert latency(api, "Q2")["latencyMs"]["count"] == 550  # type: ignore[index]


def test_delta_temporality_retry_adds_nothing(api: ApiProcess) -> None:
    server = GenAiServer("vllm-1", delta=True)
    serve_many(server, 120, seed=6)
    data = server.collect()
    export(api.base_url, data)
    export(api.base_url, data)
    serve_many(server, 30, seed=7)
    export(api.base_url, server.collect())
    assert tier_count(api, "Q2") == 150


def test_json_body_and_gzip(api: ApiProcess) -> None:
    server = GenAiServer("vllm-2")
    serve_many(server, 40, seed=8)
    body = MessageToJson(request_of(server.collect())).encode()
    answer = httpx.post(f"{api.base_url}/v1/metrics", content=body, headers=JSON)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    again = httpx.post(
        f"{api.base_url}/v1/metrics",
        content=gzip.compress(body),
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert again.status_code == 200, again.text
    assert tier_count(api, "Q2") == 40


def test_unmapped_series_are_refused_and_counted(api: ApiProcess) -> None:
    server = GenAiServer("vllm-3")
    server.serve("mystery-model", 0.5, 0.1, 10)
    body = request_of(server.collect()).SerializeToString()
    answer = httpx.post(f"{api.base_url}/v1/metrics", content=body, headers=PROTOBUF)
    assert answer.status_code == 200
    response = ExportMetricsServiceResponse.FromString(answer.content)
    assert response.partial_success.rejected_data_points == 4  # duration, ttft, tpot, tokens
    assert "map to no tier" in response.partial_success.error_message
    health = api.get("/api/metrics/health").json()
    assert health["otlpUnmapped"]["gen_ai.server.request.duration mystery-model"] == 1


def test_two_replicas_taking_turns(redis_url: str, prefix: str) -> None:
    replicas = start_replicas(child_env(redis_url, prefix, **TIER_ENV), 2)
    try:
        server = GenAiServer("vllm-4")
        values: list[float] = []
        for turn in range(6):
            values += serve_many(server, 100, seed=10 + turn)
            export(replicas[turn % 2].base_url, server.collect())
        for replica in replicas:
            assert tier_count(replica, "Q2") == 600
            answer = latency(replica, "Q2")
            assert_within_bound(values, answer["latencyMs"], RELATIVE_ERROR)  # type: ignore[arg-type]
    finally:
        for replica in replicas:
            replica.stop()


def bad_bodies() -> dict[str, tuple[bytes, dict[str, str], int]]:
    server = GenAiServer("vllm-5")
    serve_many(server, 20, seed=20)
    good = request_of(server.collect())
    wire = good.SerializeToString()
    text = MessageToJson(good)
    nan = text.replace('"sum": ', '"sum": "NaN", "was": ', 1)
    return {
        "truncated protobuf": (wire[: len(wire) // 2], PROTOBUF, 400),
        "wrong types": (text.replace('"count": "', '"count": "many', 1).encode(), JSON, 400),
        "NaN": (nan.encode(), JSON, 400),
        "negative count": (text.replace('"count": "', '"count": "-', 1).encode(), JSON, 400),
        "10 MB": (b"\x0a" * 10_000_000, PROTOBUF, 413),
        "gzip bomb": (
            gzip.compress(b"\0" * 20_000_000),
            {**PROTOBUF, "Content-Encoding": "gzip"},
            413,
        ),
        "not OTLP": (b"hello", {"Content-Type": "text/plain"}, 415),
    }


def test_bad_bodies_get_a_clear_error_and_write_nothing(api: ApiProcess) -> None:
    for name, (body, headers, status) in bad_bodies().items():
        answer = httpx.post(f"{api.base_url}/v1/metrics", content=body, headers=headers)
        assert answer.status_code == status, (name, answer.text)
        if answer.headers["content-type"] == PROTOBUF["Content-Type"]:
            message = Status.FromString(answer.content).message
        else:
            message = answer.json()["message"]
        assert message, name
    assert tier_count(api, "Q2") == 0
    assert latency(api, "Q2")["latencyMs"]["count"] == 0  # type: ignore[index]


def test_bearer_token(redis_url: str, prefix: str) -> None:
    token = "t" * 24
    replica = ApiProcess(child_env(redis_url, prefix, METRICS_API_TOKEN=token, **TIER_ENV))
    replica.start()
    try:
        server = GenAiServer("vllm-6")
        serve_many(server, 10, seed=30)
        data = server.collect()
        body = request_of(data).SerializeToString()
        refused = httpx.post(f"{replica.base_url}/v1/metrics", content=body, headers=PROTOBUF)
        assert refused.status_code == 401
        export(replica.base_url, data, token=token)
        answer = httpx.get(
            f"{replica.base_url}/api/metrics/queries",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.json()["tierDistribution"]["Q2"] == 10
    finally:
        replica.stop()


# --- in-process replicas on every topology ----------------------------------------------------
def post(client: TestClient, data: MetricsData) -> ExportMetricsServiceResponse:
    body = request_of(data).SerializeToString()
    answer = client.post("/v1/metrics", content=body, headers=PROTOBUF)
    assert answer.status_code == 200, answer.text
    response: ExportMetricsServiceResponse = ExportMetricsServiceResponse.FromString(answer.content)
    return response


def test_every_answer_on_every_topology(topology_settings: Settings) -> None:
    """/queries, /tiers, /latency, /metrics and the WebSocket, on single, Sentinel and Cluster;
    two replicas take turns, one gets an older export after a newer one (stale: nothing added)."""
    settings = topology_settings.replace(otlp_tier_map="llama-8b=Q2")
    server = GenAiServer("vllm-7")
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        serve_many(server, 30, seed=40)
        older = server.collect()
        serve_many(server, 20, seed=41)
        assert post(b, server.collect()).partial_success.rejected_data_points == 0
        post(a, older)  # older than what b took: already inside it
        serve_many(server, 10, seed=42)
        post(a, server.collect())
        for replica in (a, b):
            assert replica.get("/api/metrics/queries").json()["tierDistribution"]["Q2"] == 60
            tiers = replica.get("/api/metrics/tiers").json()["tiers"]
            assert tiers[0]["requestCount"] == 60
            latency = replica.get("/api/metrics/latency?tier=Q2").json()["tiers"][0]
            assert latency["latencyMs"]["count"] == latency["tpotMs"]["count"] == 60
            exposition = replica.get("/metrics").text
            assert 'llm_queries_total{error="true",tier="Q2"} 6.0' in exposition
            assert 'llm_queries_total{error="false",tier="Q2"} 54.0' in exposition
        with a.websocket_connect("/api/metrics/ws") as ws:
            # The first update may predate the exports; one a second follows.
            seen = [ws.receive_json()["queries"]["tierDistribution"]["Q2"] for _ in range(3)]
            assert seen[-1] == 60


def test_exports_in_any_order_on_two_replicas_at_once(redis_url: str, prefix: str) -> None:
    """Eight servers' successive cumulative exports, sent at once from threads, in a shuffled
    order, to either replica: each stream's state is claimed by compare-and-set, an older point
    after a newer one is stale, so the store holds exactly every query once."""
    replicas = start_replicas(child_env(redis_url, prefix, **TIER_ENV), 2)
    try:
        bodies = []
        for s in range(8):
            server = GenAiServer(f"vllm-c{s}")
            for turn in range(3):
                serve_many(server, 25, seed=100 + 3 * s + turn)
                bodies.append(request_of(server.collect()).SerializeToString())
        random.Random(7).shuffle(bodies)

        def send(n: int) -> int:
            url = f"{replicas[n % 2].base_url}/v1/metrics"
            answer = httpx.post(url, content=bodies[n], headers=PROTOBUF, timeout=10)
            assert answer.status_code == 200, answer.text
            response: ExportMetricsServiceResponse = ExportMetricsServiceResponse.FromString(
                answer.content
            )
            return response.partial_success.rejected_data_points

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert sum(pool.map(send, range(len(bodies)))) == 0
        for replica in replicas:
            assert tier_count(replica, "Q2") == 8 * 3 * 25
            assert latency(replica, "Q2")["ttftMs"]["count"] == 8 * 3 * 25  # type: ignore[index]
    finally:
        for replica in replicas:
            replica.stop()


# --- the pieces -------------------------------------------------------------------------------
def placed(time_ns: int, count: int, start_ns: int = 1) -> Placed:
    bins = Bins(count=count, total=10.0 * count, bins={100: count})
    return Placed("s", "n", "Q2", "latency", False, True, start_ns, time_ns, bins)


def test_a_stream_that_goes_down_or_restarts_is_a_reset_never_a_negative_delta() -> None:
    def last(point: Placed) -> Last:
        return decode_state(encode_state(point).encode())[1]

    first = decide(placed(10, 5), None)
    assert first.claims and first.adds == placed(10, 5).bins  # all new
    state = last(placed(10, 5))
    grown = decide(placed(20, 8), state)
    assert grown.claims and grown.adds is not None and grown.adds.count == 3
    assert grown.adds.bins == {100: 3}
    state = last(placed(20, 8))
    assert decide(placed(20, 3), state) == Step(None, claims=False)  # same time, not its point
    assert decide(placed(30, 3), state).adds == placed(30, 3).bins  # went down: a reset
    restarted = placed(30, 9, start_ns=2)
    assert decide(restarted, state).adds == restarted.bins  # new start: a reset
    assert decide(placed(20, 8), state) == Step(None)  # a retry: recorded, its state re-asserted
    assert decide(placed(5, 9), state) == Step(None, claims=False)  # older: stale


def test_a_state_written_before_tokens_goes_on_exactly() -> None:
    old = orjson.dumps({"cur": {"s": 1, "t": 20, "c": 8, "m": 80.0, "b": {"100": 8}}, "prev": None})
    token, last = decode_state(old)
    assert token == old.decode()  # ingest.lua's token of a state with no space: all of it
    assert decide(placed(30, 10), last).adds == Bins(2, 20.0, {100: 2})


def test_explicit_buckets_convert_with_their_own_error() -> None:
    point = HistogramDataPoint(
        count=3, sum=1.5, explicit_bounds=[0.25, 0.5, 1.0], bucket_counts=[0, 1, 2, 0]
    )
    bins = from_explicit(point, "s")
    assert sum(bins.bins.values()) == 3 and bins.total == 1500.0
    assert bins.error == pytest.approx(1 / 3)  # (U - L) / (U + L) for a doubling
    assert bin_index(2 * 0.25 * 0.5 / 0.75 * 1000) in bins.bins
    with pytest.raises(BadPoint):
        from_explicit(HistogramDataPoint(count=1, sum=math.nan, bucket_counts=[1]), "s")


def test_metrics_store_otlp_serves_the_receiver_alone(redis_url: str, prefix: str) -> None:
    port = free_port()
    receiver = CliProcess(
        ["otlp", "--host", "127.0.0.1", "--port", str(port)],
        child_env(redis_url, prefix, **TIER_ENV),
    )
    receiver.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: httpx.post(f"{base}/v1/metrics", content=b"", headers=PROTOBUF).is_success,
            20,
            "the OTLP receiver",
            passing=(httpx.TransportError,),
        )
        server = GenAiServer("vllm-8")
        serve_many(server, 12, seed=50)
        export(base, server.collect())
        assert httpx.get(f"{base}/api/metrics/queries").status_code == 404  # the receiver only
    finally:
        receiver.stop()
    api = ApiProcess(child_env(redis_url, prefix, **TIER_ENV))
    api.start()
    try:
        assert tier_count(api, "Q2") == 12
    finally:
        api.stop()


def test_the_demo_sends_its_queries_over_otlp(redis_url: str, prefix: str) -> None:
    """`metrics-store simulate --otlp API` (what `up --demo otlp` runs): every query it sent
    reaches the store through the OTel SDK's exporter and /v1/metrics, beside the routing
    decisions its collector recorded, one each."""
    env = child_env(redis_url, prefix)
    with ApiProcess(env) as api:
        args = ["simulate", "--otlp", api.base_url, "--rate", "40", "--duration", "2"]
        with CliProcess(args, env) as simulate:
            process = simulate.process
            assert process is not None
            wait_until(lambda: process.poll() is not None, 30, "the 2-s simulation's end")
            assert process.returncode == 0, simulate.stderr_text()
            sent = int(simulate.stderr_text().strip().splitlines()[-1].split()[1])
            assert f"OTLP/HTTP {api.base_url}/v1/metrics" in simulate.stdout_text()
        assert sent > 0

        def stored() -> tuple[int, int]:
            queries = api.get("/api/metrics/queries").json()["totalQueries"]
            routing = api.get("/api/metrics/routing").json()["decisionMatrix"]
            return queries, sum(cell["count"] for cell in routing)

        wait_until(lambda: stored() == (sent, sent), what=f"{sent} queries and decisions")
        latency = api.get("/api/metrics/latency").json()
        counted = [tier for tier in latency["tiers"] if tier["latencyMs"]["count"]]
        assert sum(tier["latencyMs"]["count"] for tier in counted) == sent
        assert all(tier["ttftMs"] is not None for tier in counted)
