"""An objective's change of state as the body Alertmanager POSTs to its webhook receivers
(version 4), so that what already takes Alertmanager's webhooks (PagerDuty and Slack bridges,
incident tools, a plain HTTP endpoint) takes the store's alerts unchanged.

One change is one POST: the state left is `resolved` (unless it was `ok`), the state entered
is `firing` (unless it is `ok`). An alert's labels name the objective and the severity; its
fingerprint is a digest of its labels, as Alertmanager's identifies an alert.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from metrics_store.read.shapes import ObjectiveStatus
from metrics_store.slo.burn import OK
from metrics_store.slo.rules import ALERT
from metrics_store.timefmt import iso_utc

RECEIVER = "metrics-store"
NOT_ENDED = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


def change_body(
    status: ObjectiveStatus, previous: str, previous_since_s: float | None, now_s: float
) -> bytes:
    """The webhook body of `status`'s objective moving from `previous` to its state now."""
    alerts = []
    if previous != OK:
        since = now_s if previous_since_s is None else previous_since_s
        alerts.append(_alert(status, previous, "resolved", since, iso_utc(now_s)))
    if status.state != OK:
        alerts.append(_alert(status, status.state, "firing", now_s, NOT_ENDED))
    common = dict(alerts[0]["labels"].items() & alerts[-1]["labels"].items())
    body = {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{ALERT}", slo="{status.name}"}}',
        "truncatedAlerts": 0,
        "status": "resolved" if status.state == OK else "firing",
        "receiver": RECEIVER,
        "groupLabels": {"alertname": ALERT, "slo": status.name},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts,
    }
    return orjson.dumps(body)


def _alert(
    status: ObjectiveStatus, severity: str, state: str, starts_s: float, ends_at: str
) -> dict[str, Any]:
    labels = {"alertname": ALERT, "slo": status.name, "tier": status.tier, "severity": severity}
    rates = ", ".join(f"{a.windows} {a.longRate:.3g}x" for a in status.alerts if a.firing)
    annotations = {
        "summary": f"{status.name}: {severity} ({state})",
        "description": f"target {status.target:g} over {status.windowSeconds} s; error budget "
        f"left {status.errorBudgetRemaining:.3g}" + (f"; burning {rates}" if rates else ""),
    }
    return {
        "status": state,
        "labels": labels,
        "annotations": annotations,
        "startsAt": iso_utc(starts_s),
        "endsAt": ends_at,
        "generatorURL": "",
        "fingerprint": _fingerprint(labels),
    }


def _fingerprint(labels: dict[str, str]) -> str:
    text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
