"""Demo traffic: prompts at a steady rate with bursts, through rq or straight to the collector."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rq import Queue

from metrics_store.record.collector import get_metrics_collector
from metrics_store.settings import Settings
from workers.demo_backend import DemoBackend
from workers.jobs import AVAILABILITY_INTERVAL_S, enqueue_query, rq_connection

WORDS = ("explain", "compare", "summarise", "translate", "prove", "derive", "list", "design",
         "debug", "optimise")  # fmt: skip

# Every BURST_EVERY_S seconds the rate triples for BURST_LENGTH_S: traffic is never flat.
BURST_EVERY_S = 20.0
BURST_LENGTH_S = 3.0
BURST_FACTOR = 3.0


def random_prompt(rng: random.Random) -> str:
    """A prompt whose length (and so complexity) varies widely."""
    return " ".join(rng.choice(WORDS) for _ in range(int(rng.expovariate(1 / 25)) + 1))


def rate_at(elapsed_s: float, base_rate: float) -> float:
    in_burst = elapsed_s % BURST_EVERY_S < BURST_LENGTH_S
    return base_rate * BURST_FACTOR if in_burst else base_rate


@dataclass
class Progress:
    """One status line, rewritten in place on a terminal, printed every 10 s otherwise."""

    sent: int = 0
    started: float = 0.0
    last_print: float = 0.0

    def tick(self, now: float, force: bool = False) -> None:
        interactive = sys.stderr.isatty()
        if not force and now - self.last_print < (1.0 if interactive else 10.0):
            return
        self.last_print = now
        elapsed = max(now - self.started, 1e-9)
        line = f"simulate: {self.sent} queries in {elapsed:.0f} s ({self.sent / elapsed:.1f}/s)"
        print(f"\r{line}" if interactive else line, end="" if interactive else "\n",
              file=sys.stderr, flush=True)  # fmt: skip


def run_simulation(
    settings: Settings,
    rate: float,
    duration_s: float | None,
    direct: bool,
    rng: random.Random | None = None,
    stop: threading.Event | None = None,
    otlp_url: str | None = None,
) -> int:
    """Send prompts at `rate` per second (with bursts) until `duration_s` passes or `stop` is set.

    The loop only stops between two prompts, so every prompt counted as sent was enqueued
    (or recorded) whole, and the collector is flushed on the way out. With `otlp_url` the
    queries go over OTLP/HTTP to that API (workers/otlp_demo.py), exported on the way out.
    """
    rng = rng or random.Random()
    stop = stop or threading.Event()
    closers: list[Callable[[], None]] = []
    if otlp_url is not None:
        send = _otlp_sender(settings, rng, otlp_url, closers)
    else:
        send = _direct_sender(settings, rng) if direct else _queue_sender(settings)
    started = time.monotonic()
    progress = Progress(started=started, last_print=started)  # first line after one interval
    next_at = progress.started
    try:
        while not stop.is_set() and (
            duration_s is None or time.monotonic() - progress.started < duration_s
        ):
            now = time.monotonic()
            if now < next_at:
                stop.wait(min(next_at - now, 0.5))
                continue
            send(random_prompt(rng))
            progress.sent += 1
            progress.tick(now)
            next_at += rng.expovariate(rate_at(now - progress.started, rate))
    finally:
        progress.tick(time.monotonic(), force=True)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        for close in closers:
            close()
        get_metrics_collector().close()
    return progress.sent


def _queue_sender(settings: Settings) -> Callable[[str], None]:
    queue = Queue(settings.sampler.job_queues[0], connection=rq_connection(settings))
    return lambda prompt: enqueue_query(queue, prompt)


def _otlp_sender(
    settings: Settings, rng: random.Random, url: str, closers: list[Callable[[], None]]
) -> Callable[[str], None]:
    """Queries over OTLP; routing decisions and availability through the collector."""
    from workers.otlp_demo import OtlpQueries  # the OTel SDK: only this mode needs it

    backend = DemoBackend(settings.tiers, settings.complexities, get_metrics_collector(), rng=rng)
    queries = OtlpQueries(url, instance=settings.node)
    closers.append(queries.close)
    reported_at = 0.0

    def send(prompt: str) -> None:
        nonlocal reported_at
        now = time.monotonic()
        if now - reported_at >= AVAILABILITY_INTERVAL_S:
            backend.pool.tick()
            backend.pool.report(backend.collector)
            reported_at = now
        outcome = backend.simulate(prompt)
        backend.collector.record_routing_decision(
            outcome.complexity, outcome.tier, outcome.score, outcome.decision_ms, outcome.fallback
        )
        queries.record(outcome)

    return send


def _direct_sender(settings: Settings, rng: random.Random) -> Callable[[str], None]:
    backend = DemoBackend(settings.tiers, settings.complexities, get_metrics_collector(), rng=rng)
    reported_at = 0.0

    def send(prompt: str) -> None:
        nonlocal reported_at
        now = time.monotonic()
        if now - reported_at >= AVAILABILITY_INTERVAL_S:  # without workers, report for them
            backend.pool.tick()
            backend.pool.report(backend.collector)
            reported_at = now
        backend.record_direct(prompt)

    return send
