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
        alerts.append(_alert(status.name, status.tier, previous, "resolved", since, iso_utc(now_s)))
        alerts[-1]["annotations"] = _annotations(status, previous, "resolved")
    if status.state != OK:
        alerts.append(_alert(status.name, status.tier, status.state, "firing", now_s, NOT_ENDED))
        alerts[-1]["annotations"] = _annotations(status, status.state, "firing")
    return _body(status.name, alerts)


def removal_body(name: str, tier: str, previous: str, since_s: float, now_s: float) -> bytes:
    """The webhook body of an objective removed while not ok: what was firing is resolved,
    or its receivers would hold the incident open for good."""
    alert = _alert(name, tier, previous, "resolved", since_s, iso_utc(now_s))
    alert["annotations"] = {
        "summary": f"{name}: {previous} (resolved)",
        "description": "the objective was removed from the definitions",
    }
    return _body(name, [alert])


def _body(name: str, alerts: list[dict[str, Any]]) -> bytes:
    firing = any(alert["status"] == "firing" for alert in alerts)
    common = dict(alerts[0]["labels"].items() & alerts[-1]["labels"].items())
    body = {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{ALERT}", slo="{name}"}}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": RECEIVER,
        "groupLabels": {"alertname": ALERT, "slo": name},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts,
    }
    return orjson.dumps(body)


def _alert(
    name: str, tier: str, severity: str, state: str, starts_s: float, ends_at: str
) -> dict[str, Any]:
    labels = {"alertname": ALERT, "slo": name, "tier": tier, "severity": severity}
    return {
        "status": state,
        "labels": labels,
        "annotations": {},
        "startsAt": iso_utc(starts_s),
        "endsAt": ends_at,
        "generatorURL": "",
        "fingerprint": _fingerprint(labels),
    }


def _annotations(status: ObjectiveStatus, severity: str, state: str) -> dict[str, str]:
    rates = ", ".join(f"{a.windows} {a.longRate:.3g}x" for a in status.alerts if a.firing)
    return {
        "summary": f"{status.name}: {severity} ({state})",
        "description": f"target {status.target:g} over {status.windowSeconds} s; error budget "
        f"left {status.errorBudgetRemaining:.3g}" + (f"; burning {rates}" if rates else ""),
    }


def _fingerprint(labels: dict[str, str]) -> str:
    text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
