"""Live: WebSocket clients over 2 replicas at 1 Hz, publish-to-receive latency and server CPU,
against a bare Starlette broadcast (also 2 replicas, fed by the same kind of pub/sub channel)
measured in the same run.

Latency of one delivery = a client's receive time - the reference time of that update, both
`time.time_ns()` on this host. The reference is when the bench's own subscriber to the channel
got the update's bytes: the same instant the replicas' relays get them, taken identically for
both systems. For the baseline the bench publishes too, so the run also reports how far its
subscriber lags its publish call (the error of the reference). Only updates whose reference
falls inside the measurement window count, so connect-time traffic is left out.
"""

from __future__ import annotations

import calendar
import multiprocessing
import re
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis

from bench.common import Summary, Table, private_redis, progress, write_results
from bench.load import load_events, load_snapshots
from bench.servers import metrics_api, pid_listening, serve
from bench.ws_clients import ClientReport, client_process, raise_fd_limit, timestamp_of
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings

REPLICAS = 2
CLIENT_PROCESSES = 2
TARGET_P99_RATIO = 1.25
ISO = "%Y-%m-%dT%H:%M:%SZ"
# After the window, wait this long for its last update to reach every client.
GRACE_S = 2.0


@dataclass(frozen=True)
class Mode:
    clients: int
    runs: int
    window_s: float


QUICK = Mode(clients=200, runs=3, window_s=10.0)
FULL = Mode(clients=1000, runs=3, window_s=20.0)


@dataclass
class Window:
    """One system measured once."""

    latencies_ms: list[float]  # one per delivery
    clients: int
    updates: int  # distinct updates published in the window
    duplicates: int  # the same timestamp published more than once
    window_s: float
    server_cpu_pct: float  # both replicas together, % of one core
    client_cpu_pct: float  # all client processes, % of one core
    host_busy_pct: float  # the whole host, % of all its cores: what else was running shows here
    reference_lag_ms: list[float] = field(default_factory=list)  # baseline: publish -> bench sub
    winners: Counter[str] = field(default_factory=Counter)  # live: tick lock holder per update

    @property
    def expected(self) -> int:
        """Deliveries if every client got every update of the window."""
        return self.clients * self.updates

    def percentile_ms(self, q: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


class Reference(threading.Thread):
    """The bench's subscriber: when each update's bytes arrived, by timestamp."""

    def __init__(self, redis_url: str, channel: str, tick_lock: Callable[[int], str] | None):
        super().__init__(daemon=True)
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._pubsub.subscribe(channel)
        self._tick_lock = tick_lock
        self.tracks_winners = tick_lock is not None
        self.arrivals: list[tuple[str, int]] = []
        self.winners: dict[str, str] = {}
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "message":
                continue
            arrived = time.time_ns()  # first thing: this is the reference instant
            stamp = timestamp_of(message["data"])
            self.arrivals.append((stamp, arrived))
            if self._tick_lock is not None:  # which replica computed it (the lock lives 5 s)
                winner = self._client.get(self._tick_lock(epoch_s(stamp)))
                self.winners[stamp] = winner.decode() if isinstance(winner, bytes) else "?"

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)
        self._pubsub.close()
        self._client.close()


class Publisher(threading.Thread):
    """The baseline's source: at each whole second, the real update's bytes re-stamped."""

    def __init__(self, redis_url: str, channel: str, template: bytes):
        super().__init__(daemon=True)
        self._client = redis.Redis.from_url(redis_url)
        self._channel = channel
        self._template = template
        self.published: dict[str, int] = {}
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(1.0 - time.time() % 1.0):
            stamp = time.strftime(ISO, time.gmtime(round(time.time())))
            payload = re.sub(rb'"timestamp":"[^"]*"', f'"timestamp":"{stamp}"'.encode(),
                             self._template, count=1)  # fmt: skip
            self.published[stamp] = time.time_ns()
            self._client.publish(self._channel, payload)

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)
        self._client.close()


def epoch_s(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, ISO))


def host_busy_s() -> float:
    """CPU seconds the whole host spent busy, all cores together."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def cpu_s(pids: list[int]) -> float:
    times = [psutil.Process(pid).cpu_times() for pid in pids]
    return sum(t.user + t.system for t in times)


@contextmanager
def live_replicas(redis_url: str, prefix: str) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(metrics_api(redis_url, prefix)) for _ in range(REPLICAS)]


@contextmanager
def bare_replicas(redis_url: str, channel: str) -> Iterator[list[str]]:
    args = ["uvicorn", "bench.baseline_ws:app", "--log-level", "warning", "--ws-max-size", "4096"]
    env = {"REDIS_URL": redis_url, "BENCH_CHANNEL": channel}
    with ExitStack() as stack:
        yield [stack.enter_context(serve(args, env, "/health")) for _ in range(REPLICAS)]


def start_clients(urls: list[str], clients: int) -> tuple[list[Any], Any, Any]:
    """Client processes with `clients` connections in all; returns once all are open."""
    context = multiprocessing.get_context("spawn")
    ready, stop, out = context.Queue(), context.Event(), context.Queue()
    shares = [clients // CLIENT_PROCESSES + (i < clients % CLIENT_PROCESSES)
              for i in range(CLIENT_PROCESSES)]  # fmt: skip
    processes = [
        context.Process(target=client_process, args=(urls, share, ready, stop, out))
        for share in shares
    ]
    for process in processes:
        process.start()
    opened = sum(ready.get(timeout=180) for _ in processes)
    if opened != clients:
        raise RuntimeError(f"only {opened} of {clients} clients connected")
    return processes, stop, out


def stop_clients(processes: list[Any], stop: Any, out: Any) -> list[ClientReport]:
    stop.set()
    reports: list[ClientReport] = [out.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
    return reports


def measure(
    urls: list[str],
    server_pids: list[int],
    mode: Mode,
    reference: Reference,
    publisher: Publisher | None = None,
) -> Window:
    """Connect the clients, measure one window, and join receipts to reference times."""
    reference.start()
    processes, stop, out = start_clients(urls, mode.clients)
    try:
        if publisher is not None:
            publisher.start()
        time.sleep(2.0)  # let the connect burst and the first updates settle
        client_pids = [p.pid for p in processes]
        start_ns, host0 = time.time_ns(), host_busy_s()
        servers0, clients0 = cpu_s(server_pids), cpu_s(client_pids)
        time.sleep(mode.window_s)
        end_ns, host1 = time.time_ns(), host_busy_s()
        servers1, clients1 = cpu_s(server_pids), cpu_s(client_pids)
        time.sleep(GRACE_S)
        reports = stop_clients(processes, stop, out)
    finally:
        for process in processes:  # only left running if something failed
            if process.is_alive():
                process.terminate()
        if publisher is not None:
            publisher.stop()
        reference.stop()
    window_s = (end_ns - start_ns) / 1e9
    return joined(
        reference,
        publisher,
        reports,
        (start_ns, end_ns),
        server_cpu_pct=100 * (servers1 - servers0) / window_s,
        client_cpu_pct=100 * (clients1 - clients0) / window_s,
        host_busy_pct=100 * (host1 - host0) / window_s / (psutil.cpu_count() or 1),
    )


def joined(
    reference: Reference,
    publisher: Publisher | None,
    reports: list[ClientReport],
    window: tuple[int, int],
    server_cpu_pct: float,
    client_cpu_pct: float,
    host_busy_pct: float,
) -> Window:
    """The window's deliveries: latency of each receipt of each update referenced inside it."""
    counts = Counter(stamp for stamp, _ in reference.arrivals)
    refs = {stamp: ns for stamp, ns in reference.arrivals if window[0] <= ns <= window[1]}
    latencies = [
        (received - ref) / 1e6
        for report in reports
        for stamp, ref in refs.items()
        for received in report.received.get(stamp, [])
    ]
    published = publisher.published if publisher else {}
    return Window(
        latencies_ms=latencies,
        clients=sum(r.connections for r in reports),
        updates=len(refs),
        duplicates=sum(counts[s] - 1 for s in refs),
        window_s=(window[1] - window[0]) / 1e9,
        server_cpu_pct=server_cpu_pct,
        client_cpu_pct=client_cpu_pct,
        host_busy_pct=host_busy_pct,
        reference_lag_ms=[(refs[s] - ns) / 1e6 for s, ns in published.items() if s in refs],
        winners=Counter(reference.winners.get(s, "?") for s in refs if reference.tracks_winners),
    )


def measure_live(redis_url: str, prefix: str, mode: Mode) -> tuple[Window, bytes]:
    """The live stream once; also the latest update's bytes, the baseline's payload."""
    keys = Keys(prefix)
    with live_replicas(redis_url, prefix) as bases:
        urls = [base.replace("http://", "ws://") + "/api/metrics/ws" for base in bases]
        reference = Reference(redis_url, keys.updates_channel, keys.tick_lock)
        window = measure(urls, server_pids(bases), mode, reference)
        payload = redis.Redis.from_url(redis_url).get(keys.latest_update)
    if not isinstance(payload, bytes):
        raise RuntimeError("the live stream published nothing")
    return window, payload


def measure_bare(redis_url: str, template: bytes, mode: Mode) -> Window:
    channel = f"bench:bare:{uuid.uuid4().hex[:6]}"
    with bare_replicas(redis_url, channel) as bases:
        urls = [base.replace("http://", "ws://") + "/ws" for base in bases]
        reference = Reference(redis_url, channel, tick_lock=None)
        publisher = Publisher(redis_url, channel, template)
        return measure(urls, server_pids(bases), mode, reference, publisher)


def server_pids(bases: list[str]) -> list[int]:
    pids = [pid_listening(base) for base in bases]
    if None in pids:
        raise RuntimeError(f"cannot find the pids serving {bases}")
    return [pid for pid in pids if pid is not None]


def figures(windows: list[Window]) -> dict[str, Summary]:
    """Each figure of one system as the median of its runs, with min and max."""
    per_run: dict[str, Callable[[Window], float]] = {
        "p50_ms": lambda w: w.percentile_ms(50),
        "p99_ms": lambda w: w.percentile_ms(99),
        "msgs_per_client_s": lambda w: len(w.latencies_ms) / w.clients / w.window_s,
        "delivered_pct": lambda w: 100 * len(w.latencies_ms) / w.expected,
        "server_cpu_pct": lambda w: w.server_cpu_pct,
        "client_cpu_pct": lambda w: w.client_cpu_pct,
        "host_busy_pct": lambda w: w.host_busy_pct,
        "updates_per_s": lambda w: w.updates / w.window_s,
        "duplicates": lambda w: float(w.duplicates),
    }
    return {name: Summary.of([f(w) for w in windows]) for name, f in per_run.items()}


def results_table(mode: Mode, live: dict[str, Summary], bare: dict[str, Summary]) -> Table:
    table = Table(
        f"Live: {mode.clients:,} WebSocket clients over {REPLICAS} replicas at 1 Hz, "
        f"{mode.runs} runs of {mode.window_s:.0f} s (median [min-max])",
        ["system", "p50 ms", "p99 ms", "msgs/client/s", "delivered %", "updates/s",
         "server CPU % (2 replicas)", "client CPU %", "host busy %"],
    )  # fmt: skip
    for name, f in (("bare broadcast", bare), ("live stream", live)):
        table.add(
            name, f["p50_ms"].show(1), f["p99_ms"].show(1), f["msgs_per_client_s"].show(2),
            f["delivered_pct"].show(1), f["updates_per_s"].show(2),
            f["server_cpu_pct"].show(1), f["client_cpu_pct"].show(1),
            f["host_busy_pct"].show(0),
        )  # fmt: skip
    return table


def target_table(live: list[Window], bare: list[Window]) -> Table:
    ratios = Summary.of([lw.percentile_ms(99) / bw.percentile_ms(99)
                         for lw, bw in zip(live, bare, strict=True)])  # fmt: skip
    updates = sum(w.updates for w in live)
    duplicates = sum(w.duplicates for w in live)
    split = ", ".join("+".join(str(n) for n in sorted(w.winners.values())) for w in live)
    lag = [x for w in bare for x in w.reference_lag_ms]
    table = Table("Live targets", ["check", "measured", "target", "status"])
    table.add("live p99 / bare p99 (paired runs)", ratios.show(2), f"<= {TARGET_P99_RATIO}",
              "met" if ratios.median <= TARGET_P99_RATIO else "MISSED")  # fmt: skip
    table.add(
        "updates computed per second (cluster)",
        f"{updates} updates in {sum(w.window_s for w in live):.0f} s, {duplicates} repeated; "
        f"won by replica A+B per run: {split}",
        "1 per second",
        "met" if duplicates == 0 and all("?" not in w.winners for w in live) else "MISSED",
    )
    table.add("reference lag: publish -> bench subscriber (baseline)",
              f"p50 {statistics.median(lag):.2f} ms, max {max(lag):.2f} ms", "-", "-")  # fmt: skip
    return table


def run(full: bool) -> dict[str, Any]:
    mode = FULL if full else QUICK
    raise_fd_limit()  # the servers inherit it: each holds half the connections
    live: list[Window] = []
    bare: list[Window] = []
    with private_redis() as server:
        settings = Settings(redis_url=server.url, key_prefix=f"b{uuid.uuid4().hex[:6]}")
        # Enough data for a realistic update (~4.5 KB), whose bytes the baseline sends too.
        load_events(
            settings, 10_000, span_s=settings.retention.window_s - settings.retention.bucket_s
        )
        load_snapshots(settings, nodes=4)
        for i in range(mode.runs):
            progress(f"run {i + 1}/{mode.runs}: live stream, {mode.clients} clients")
            window, payload = measure_live(server.url, settings.key_prefix, mode)
            live.append(window)
            progress(f"run {i + 1}/{mode.runs}: bare broadcast ({len(payload):,} B payload)")
            bare.append(measure_bare(server.url, payload, mode))
    live_figures, bare_figures = figures(live), figures(bare)
    print(results_table(mode, live_figures, bare_figures).render())
    targets = target_table(live, bare)
    print(targets.render())
    payload_out = {"mode": mode, "live": live_figures, "bare": bare_figures,
                   "targets": targets.rows, "winners": [dict(w.winners) for w in live]}  # fmt: skip
    write_results("live", payload_out)
    return payload_out
