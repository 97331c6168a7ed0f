"""The objectives as Prometheus rules, for teams that alert from Prometheus (`metrics-store slo
rules`): the same burn rates and alert pairs as `/api/metrics/slo`, computed by Prometheus from
the all-time counters `/metrics` exposes (`llm_slo_good_total`, `llm_slo_total`).

Per objective, one recording rule per burn window (its bad share) and one alert per pair of
the SRE workbook. Every API replica exposes the same fleet-wide counters, so a window's
increase is taken per replica and the largest kept (`max by (slo)`): scraping two replicas
must not count the fleet twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from metrics_store.slo.burn import BURN_PAIRS, BURN_WINDOWS_S, span
from metrics_store.slo.definitions import Objective

ERROR_RATIO = "llm_slo:error_ratio:increase{window}"
ALERT = "SLOBurn"


def prometheus_rules(objectives: Sequence[Objective]) -> dict[str, Any]:
    """A rule file (Prometheus's YAML, as a mapping): one group per objective."""
    return {"groups": [_group(objective) for objective in objectives]}


def _group(objective: Objective) -> dict[str, Any]:
    name = objective.name
    selector = f'{{slo="{name}"}}'
    rules: list[dict[str, Any]] = []
    for window_s in BURN_WINDOWS_S:
        window = span(window_s)
        good, total = (
            f"max by (slo) (increase({metric}{selector}[{window}]))"
            for metric in ("llm_slo_good_total", "llm_slo_total")
        )
        # The slo label stated as well: one record name serves every objective, told apart by
        # it (promtool refuses two rules of one name and the same static labels).
        rules.append(
            {
                "record": ERROR_RATIO.format(window=window),
                "expr": f"1 - {good} / {total}",
                "labels": {"slo": name},
            }
        )
    budget = 1.0 - objective.target
    for pair in BURN_PAIRS:
        threshold = f"{pair.factor * budget:.6g}"
        long_rule = ERROR_RATIO.format(window=span(pair.long_s)) + selector
        short_rule = ERROR_RATIO.format(window=span(pair.short_s)) + selector
        rules.append(
            {
                "alert": ALERT,
                "expr": f"{long_rule} >= {threshold} and {short_rule} >= {threshold}",
                "labels": {"slo": name, "severity": pair.severity, "windows": pair.label},
                "annotations": {
                    "summary": f"{name} burns its error budget {pair.factor:g}x too fast "
                    f"over {pair.label}",
                    "description": f"Bad share at least {threshold} (target {objective.target:g})"
                    f" over both {span(pair.long_s)} and {span(pair.short_s)}: at this rate the "
                    f"{span(objective.window_s)} budget lasts "
                    f"{span(int(objective.window_s / pair.factor))}.",
                },
            }
        )
    return {"name": f"metrics-store-slo-{name}", "rules": rules}
