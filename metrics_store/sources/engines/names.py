"""The metrics taken from each engine: one table, in code as in docs/engines.md.

A row names one figure of one engine, under each name the engine has given it, newest first.
The first of those names that a scrape finds is taken and the older ones are left, so an
engine that exposes a renamed metric under both names (vLLM keeps a deprecated name for a
release or two) is counted once, and an older engine still gives what it has.

Counters are named as prometheus_client's parsers name their families: without `_total`
(the exposition's `vllm:generation_tokens_total` is the family `vllm:generation_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metrics_store.sources.otlp.mapping import (
    ERRORS,
    FAILURES,
    LATENCY,
    QUEUE,
    TOKENS,
    TPOT,
    TTFT,
)


@dataclass(frozen=True)
class Taken:
    """One figure of one engine: its names (newest first) and the series taken from them."""

    engine: str
    role: str
    names: tuple[str, ...]
    # Only the series with these label values (vLLM's errors are one finished_reason).
    labels: Mapping[str, str] = field(default_factory=dict)
    # A histogram of counts (TGI's tokens per request): only its sum is taken.
    sum_only: bool = False


TABLE: tuple[Taken, ...] = (
    # vLLM (vllm/v1/metrics/loggers.py; labels model_name and engine)
    Taken("vllm", LATENCY, ("vllm:e2e_request_latency_seconds",)),
    Taken("vllm", TTFT, ("vllm:time_to_first_token_seconds",)),
    # time_in_queue_requests: deprecated in 0.8, hidden in 0.9 (vLLM PR #15458)
    Taken("vllm", QUEUE, ("vllm:request_queue_time_seconds", "vllm:time_in_queue_requests")),
    # request_time_per_output_token_seconds, one value per request, came in 0.11 (PR #24015);
    # time_per_output_token_seconds, one per token, was deprecated then and removed in 0.13.
    Taken(
        "vllm",
        TPOT,
        ("vllm:request_time_per_output_token_seconds", "vllm:time_per_output_token_seconds"),
    ),
    Taken("vllm", TOKENS, ("vllm:generation_tokens",)),
    # finished_reason: stop, length, abort (by the client), error (a 500), repetition
    Taken("vllm", ERRORS, ("vllm:request_success",), labels={"finished_reason": "error"}),
    # SGLang (python/sglang/srt/metrics/collector.py; label model_name)
    Taken("sglang", LATENCY, ("sglang:e2e_request_latency_seconds",)),
    Taken("sglang", TTFT, ("sglang:time_to_first_token_seconds",)),
    Taken("sglang", QUEUE, ("sglang:queue_time_seconds",)),
    # inter_token_latency_seconds replaced time_per_output_token_seconds; both per token
    Taken(
        "sglang",
        TPOT,
        ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    ),
    Taken("sglang", TOKENS, ("sglang:generation_tokens",)),
    # aborted requests are in no latency histogram: counted as queries and errors both
    Taken("sglang", FAILURES, ("sglang:num_aborted_requests",)),
    # TGI (router/src/server.rs, metrics-exporter-prometheus; no labels, no TTFT: TGI #2887)
    Taken("tgi", LATENCY, ("tgi_request_duration",)),
    Taken("tgi", QUEUE, ("tgi_request_queue_duration",)),
    Taken("tgi", TPOT, ("tgi_request_mean_time_per_token_duration",)),
    Taken("tgi", TOKENS, ("tgi_request_generated_tokens",), sum_only=True),
    # failed requests are in no latency histogram (tgi_request_duration counts successes)
    Taken("tgi", FAILURES, ("tgi_request_failure",)),
)

# Every family name the table knows: a scrape keeps only these.
KNOWN_FAMILIES = frozenset(name for row in TABLE for name in row.names)


def chosen(present: set[str]) -> list[tuple[Taken, str]]:
    """Each row with the newest of its names among `present` (rows with none are left)."""
    out = []
    for row in TABLE:
        name = next((n for n in row.names if n in present), None)
        if name is not None:
            out.append((row, name))
    return out
