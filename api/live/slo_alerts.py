"""Alerts by webhook: each change of an objective's state, POSTed once, from whichever replica.

After publishing its update, the tick's winner (ticker.py) hands it here. The changes it sees
against the stored states become notices in Redis's outbox (metrics_store/slo/outbox.py), so
each is noticed once for the whole cluster; then the replica holding the webhook lease sends
the notices due, oldest first. A receiver that fails (an error status, no answer within
METRICS_SLO_WEBHOOK_TIMEOUT_S) is tried again after 1, 2, 4 ... 60 s, by any replica, and
each failure is counted in /api/metrics/health (`sloWebhookFailures`). This runs beside the
tick, never in it: a slow receiver delays no update.
"""

from __future__ import annotations

import asyncio
import logging

import httpx

from api.live.alertmanager import change_body, removal_body
from metrics_store.loops import LoopGuard
from metrics_store.read.shapes import SloMetrics
from metrics_store.settings import Settings
from metrics_store.slo.burn import OK
from metrics_store.slo.outbox import Outbox

log = logging.getLogger(__name__)


class SloAlerts:
    def __init__(self, outbox: Outbox, settings: Settings, replica_id: str) -> None:
        self._outbox = outbox
        self._url = settings.slo.webhook_url
        self._timeout_s = settings.slo.webhook_timeout_s
        self._replica_id = replica_id
        self._guard = LoopGuard("slo-webhook")
        self._http: httpx.AsyncClient | None = None
        self._running: asyncio.Task[None] | None = None

    def after_tick(self, slo: SloMetrics | None, now_s: float) -> None:
        """Notice and send, on a task of its own (one at a time: a slow one is not doubled)."""
        if self._url is None or slo is None:
            return
        if self._running is not None and not self._running.done():
            return
        self._running = asyncio.create_task(self._after_tick(slo, now_s), name="slo-webhook")

    async def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    async def _after_tick(self, slo: SloMetrics, now_s: float) -> None:
        try:
            await self._notice_changes(slo, now_s)
            await self._send_due(now_s)
        except Exception as exc:  # Redis away, a bug: counted, and the next tick tries again
            self._guard.failed(exc)
        else:
            self._guard.succeeded()

    async def _notice_changes(self, slo: SloMetrics, now_s: float) -> None:
        seen = await self._outbox.seen()
        names = {status.name for status in slo.objectives}
        for name, gone in seen.items():  # removed: forgotten, and resolved where not ok
            if name not in names:
                body = None
                if gone.state != OK:
                    body = removal_body(name, gone.tier, gone.state, gone.since_s, now_s)
                await self._outbox.change(name, gone.tier, gone.state, "", now_s, body)
        for status in slo.objectives:
            before = seen.get(status.name)
            previous = OK if before is None else before.state
            if before is not None and previous == status.state:
                continue
            body = None
            if status.state != previous:  # first sight of an ok objective: nothing to tell
                since = None if before is None else before.since_s
                body = change_body(status, previous, since, now_s)
            stored = "" if before is None else before.state
            await self._outbox.change(status.name, status.tier, stored, status.state, now_s, body)

    async def _send_due(self, now_s: float) -> None:
        """Send the notices due, oldest first, each under the lease; stop at a failure."""
        assert self._url is not None
        lease_ms = int((4 * self._timeout_s + 2) * 1000)  # past any one POST's timeouts
        while await self._outbox.take_lease(self._replica_id, lease_ms):
            try:
                if not await self._send_next(self._url, now_s):
                    return
            finally:
                await self._outbox.release_lease(self._replica_id)

    async def _send_next(self, url: str, now_s: float) -> bool:
        """Send the next notice if one is due; True if one was sent and more may follow."""
        progress = await self._outbox.progress()
        if progress.retry_at_s > now_s:
            return False
        notice = await self._outbox.next_notice(progress.sent_id)
        if notice is None:
            return False
        entry_id, body = notice
        problem = await self._post(url, body)
        if problem is None:
            return await self._outbox.sent(self._replica_id, entry_id)
        retry_at = await self._outbox.failed(progress.attempts + 1, now_s)
        log.warning("the SLO webhook failed (%s); next try in %.0f s", problem, retry_at - now_s)
        return False

    async def _post(self, url: str, body: bytes) -> str | None:
        """POST the body; None if the receiver took it, else what went wrong."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout_s)
        try:
            response = await self._http.post(
                url, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if response.is_success else f"HTTP {response.status_code}"
