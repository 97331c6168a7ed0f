"""A demo LLM backend: scores a prompt's complexity, routes it to a tier, simulates generation.

It stands in for a real inference service so that `metrics-store up` shows moving numbers. It
records simulated times (not the shortened real sleep) through the public collector calls; a
real worker would rather wrap its work in metrics_store.record.instrument's trackers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from metrics_store.record.collector import MetricsCollector


class GenerationFailed(RuntimeError):
    """The simulated model failed to answer."""


@dataclass(frozen=True)
class TierProfile:
    """How a tier's models behave: typical speed, answer length, failure rate, model count."""

    tokens_per_s: float
    mean_tokens: int
    overhead_ms: float
    error_rate: float
    models: int


# Profiles by tier position (smallest first), from the guide's example figures.
PROFILES = (
    TierProfile(tokens_per_s=46.0, mean_tokens=50, overhead_ms=120.0, error_rate=0.015, models=3),
    TierProfile(tokens_per_s=38.0, mean_tokens=115, overhead_ms=250.0, error_rate=0.008, models=2),
    TierProfile(tokens_per_s=28.0, mean_tokens=230, overhead_ms=400.0, error_rate=0.005, models=1),
)


def profile_for(position: int) -> TierProfile:
    return PROFILES[min(position, len(PROFILES) - 1)]


@dataclass
class ModelPool:
    """Which models of each tier are up; they fail and recover now and then."""

    tiers: Sequence[str]
    rng: random.Random
    outage_chance: float = 0.02
    available: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.available = {t: self.total(t) for t in self.tiers}

    def total(self, tier: str) -> int:
        return profile_for(list(self.tiers).index(tier)).models

    def tick(self) -> None:
        """One step of weather: a model may go down, a down model comes back."""
        for tier in self.tiers:
            if self.available[tier] < self.total(tier):
                self.available[tier] += 1
            elif self.rng.random() < self.outage_chance:
                self.available[tier] -= 1

    def report(self, collector: MetricsCollector) -> None:
        for tier in self.tiers:
            collector.update_model_availability(tier, self.available[tier], self.total(tier))


@dataclass(frozen=True)
class Outcome:
    """One simulated prompt: its routing decision and how its generation went."""

    complexity: str
    tier: str
    score: float
    decision_ms: float
    fallback: bool
    tokens: int
    generation_ms: float
    latency_ms: float
    failed: bool
    ttft_ms: float = 0.0
    queue_time_ms: float = 0.0


class DemoBackend:
    """Route and answer prompts, recording each routing decision and query."""

    def __init__(
        self,
        tiers: Sequence[str],
        complexities: Sequence[str],
        collector: MetricsCollector,
        *,
        rng: random.Random | None = None,
        time_scale: float = 0.01,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.tiers = list(tiers)
        self.complexities = list(complexities)
        self.collector = collector
        self.rng = rng or random.Random()
        self.pool = ModelPool(self.tiers, self.rng)
        self.time_scale = time_scale
        self._sleep = sleep

    def score(self, prompt: str) -> tuple[str, float]:
        """A complexity class and a 0-10 score, from the prompt's length and some noise."""
        raw = min(10.0, max(0.0, len(prompt) / 40.0 + self.rng.gauss(0.0, 1.2)))
        index = min(int(raw / 10.0 * len(self.complexities)), len(self.complexities) - 1)
        return self.complexities[index], round(raw, 2)

    def route(self, complexity: str) -> tuple[str, bool]:
        """The tier for a complexity; the nearest tier with a model up if that one has none."""
        position = self.complexities.index(complexity)
        preferred = min(position * len(self.tiers) // len(self.complexities), len(self.tiers) - 1)
        by_distance = sorted(range(len(self.tiers)), key=lambda i: (abs(i - preferred), -i))
        for index in by_distance:
            if self.pool.available[self.tiers[index]] > 0:
                return self.tiers[index], index != preferred
        return self.tiers[preferred], False  # everything is down: try anyway

    def handle(self, prompt: str) -> str:
        """Answer one prompt as a worker would: take the time, record it, fail sometimes."""
        outcome = self.simulate(prompt)
        # Simulated time passes faster than real time, so the demo stays light on a laptop.
        self._sleep(outcome.latency_ms / 1000.0 * self.time_scale)
        self.record(outcome)
        if outcome.failed:
            raise GenerationFailed(f"{outcome.tier} model failed")
        return f"{outcome.tokens} tokens from {outcome.tier}"

    def record_direct(self, prompt: str) -> None:
        """Record one prompt's decision and query at once, without waiting (no rq, no sleep)."""
        self.record(self.simulate(prompt))

    def simulate(self, prompt: str) -> Outcome:
        """What serving this prompt would look like: route, timings, tokens, failure."""
        complexity, score = self.score(prompt)
        tier, fallback = self.route(complexity)
        profile = profile_for(self.tiers.index(tier))
        tokens = max(1, int(self.rng.gauss(profile.mean_tokens, profile.mean_tokens / 4)))
        speed = max(1.0, self.rng.gauss(profile.tokens_per_s, profile.tokens_per_s / 10))
        generation_ms = round(tokens / speed * 1000.0, 2)
        # A heavy-tailed wait in the queue (most prompts wait a few ms, some seconds), then the
        # overhead, then the tokens: the first token arrives one token's time after the overhead.
        queue_ms = round(min(30_000.0, self.rng.lognormvariate(1.5, 1.3)), 2)
        ttft_ms = round(queue_ms + profile.overhead_ms + generation_ms / tokens, 2)
        return Outcome(
            complexity=complexity,
            tier=tier,
            score=score,
            decision_ms=round(self.rng.uniform(2.0, 20.0), 2),
            fallback=fallback,
            tokens=tokens,
            generation_ms=generation_ms,
            latency_ms=round(queue_ms + profile.overhead_ms + generation_ms, 2),
            failed=self.rng.random() < profile.error_rate,
            ttft_ms=ttft_ms,
            queue_time_ms=queue_ms,
        )

    def record(self, outcome: Outcome) -> None:
        c = self.collector
        c.record_routing_decision(
            outcome.complexity, outcome.tier, outcome.score, outcome.decision_ms, outcome.fallback
        )
        c.record_query(
            outcome.tier,
            outcome.latency_ms,
            outcome.tokens,
            outcome.generation_ms,
            outcome.failed,
            ttft_ms=outcome.ttft_ms,
            queue_time_ms=outcome.queue_time_ms,
        )
