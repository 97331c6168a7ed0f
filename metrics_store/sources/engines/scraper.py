"""`metrics-store scrape`: each engine's /metrics, every interval, recorded as the OTLP receiver
records an export (sources/otlp/receiver.py `record`: deltas per stream, aggregate batches).

    scraper = EngineScraper(settings, ["http://10.0.0.3:8000/metrics"], tier="Q2")
    run_forever(LoopGuard("scrape"), scraper.scrape_all, stop)

An engine's first scrape takes its counters as a baseline and records nothing: what it counted
before anyone watched has no instant of its own, and would land as one burst. `{p}:engines:
seen:<id>` says a baseline was taken, for every scraper process, as long as its streams' states
live; a series that appears later on a seen engine is new since the scrape before, all of it.

An engine that cannot be reached (or answers an error, or text the parsers refuse) is counted
in `{p}:engines:failed` (/api/metrics/health `engineScrapesFailed`), logged once per streak of
failed scrapes, and asked again at the next interval. Redis trouble fails the pass: the loop's
guard (metrics_store/loops.py) counts, logs and backs off.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from metrics_store.live import process_health
from metrics_store.loops import LoopGuard, run_forever
from metrics_store.redis.keys import Keys
from metrics_store.redis.topology import sync_client
from metrics_store.settings import Settings
from metrics_store.sources.engines.convert import SeriesMapper
from metrics_store.sources.engines.names import KNOWN_FAMILIES
from metrics_store.sources.engines.parse import ACCEPT, parse
from metrics_store.sources.otlp.receiver import OtlpReceiver

log = logging.getLogger(__name__)

# An answer larger than this is refused: the largest engine's is well under a megabyte.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
ROLE = "scraper"

# (url, timeout_s) -> (text, Content-Type); EngineUnreachable when there is no answer to read.
Fetch = Callable[[str, float], tuple[str, str | None]]


class EngineUnreachable(Exception):
    """No exposition came back: connection refused or timed out, an HTTP error, too large."""


def metrics_url(url: str) -> str:
    """The engine's metrics URL: `/metrics` where the URL names no path (host:port alone)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fetch(url: str, timeout_s: float) -> tuple[str, str | None]:
    """GET the exposition (text preferred, OpenMetrics taken); EngineUnreachable if none."""
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            body = answer.read(MAX_ANSWER_BYTES + 1)
            content_type = answer.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        raise EngineUnreachable(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise EngineUnreachable(str(reason) or type(exc).__name__) from exc
    if len(body) > MAX_ANSWER_BYTES:
        raise EngineUnreachable(f"an answer over {MAX_ANSWER_BYTES} bytes")
    return body.decode("utf-8", errors="replace"), content_type


def engine_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


class EngineScraper:
    """Scrapes a set of engines into the store; one per process, one thread."""

    def __init__(
        self,
        settings: Settings,
        urls: Sequence[str],
        tier: str | None = None,
        *,
        fetcher: Fetch = fetch,
        clock: Callable[[], float] = time.time,
        receiver: OtlpReceiver | None = None,
    ) -> None:
        self._settings = settings
        self._urls = list(urls)
        self._fetch = fetcher
        self._clock = clock
        self._receiver = receiver or OtlpReceiver(settings, clock=clock)
        self._mapper = SeriesMapper(settings, tier)
        self._client = sync_client(settings)
        self._keys = Keys(settings.key_prefix)
        # As the streams' states (receiver.py): a baseline lives as long as they do.
        self._seen_ttl_s = max(settings.retention.history_s, settings.recording.batch_id_ttl_s)
        self._failing: dict[str, int] = {}  # url -> failed scrapes in the current streak
        self._told_unmapped: set[str] = set()
        self._passes = 0

    def close(self) -> None:
        self._receiver.close()
        self._client.close()

    def scrape_all(self) -> float:
        """Scrape every engine once; the pause (s) until the next pass is due."""
        started = time.monotonic()
        for url in self._urls:
            self.scrape(url)
        self._publish_health()
        return max(0.0, self._settings.scrape.interval_s - (time.monotonic() - started))

    def scrape(self, url: str) -> bool:
        """One engine, once: recorded (True), or counted as failed (False)."""
        try:
            text, content_type = self._fetch(url, self._settings.scrape.timeout_s)
            series = parse(text, content_type, KNOWN_FAMILIES)
            now_s = self._clock()
            placing = self._mapper.place(url, series, int(now_s * 1e9))
        except (EngineUnreachable, ValueError) as exc:  # Unreadable and BadPoint among them
            self._failed(url, exc)
            return False
        if placing.unmapped:
            self._count_unmapped(placing.unmapped)
        seen_key = self._keys.engine_seen(engine_id(url))
        baseline = not self._client.exists(seen_key)
        self._receiver.record(placing.points, now_s, take=not baseline)
        self._client.set(seen_key, int(now_s), ex=self._seen_ttl_s)
        self._recovered(url)
        return True

    def _failed(self, url: str, exc: Exception) -> None:
        self._client.hincrby(self._keys.engines_failed, url, 1)
        streak = self._failing.get(url, 0)
        if streak == 0:  # once per streak: an engine down for an hour is one line, not 720
            what = "unreadable" if isinstance(exc, ValueError) else "unreachable"
            log.warning("scrape: %s %s (%s); retrying every %g s", url, what, exc,
                        self._settings.scrape.interval_s)  # fmt: skip
        self._failing[url] = streak + 1

    def _recovered(self, url: str) -> None:
        streak = self._failing.pop(url, 0)
        if streak:
            log.info("scrape: %s answering again after %d failed scrapes", url, streak)

    def _count_unmapped(self, unmapped: dict[str, int]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for series, count in unmapped.items():
            pipe.hincrby(self._keys.engines_unmapped, series, count)
            if series not in self._told_unmapped:
                self._told_unmapped.add(series)
                log.warning("scrape: %s maps to no tier (--tier, or METRICS_OTLP_TIER_MAP); "
                            "counted in engineUnmapped, not recorded", series)  # fmt: skip
        pipe.execute()

    def _publish_health(self) -> None:
        """This process's loop health, for /api/metrics/health, as every process beats it."""
        self._passes += 1
        record = process_health.current_record(self._settings.node, ROLE, self._clock())
        prune = self._passes % process_health.PRUNE_EVERY_BEATS == 1
        process_health.publish(self._client, self._keys, record, prune=prune)


def run_scraper(
    settings: Settings, urls: Sequence[str], tier: str | None, stop: threading.Event
) -> None:
    """Scrape `urls` every interval until `stop` is set."""
    scraper = EngineScraper(settings, urls, tier)
    guard = LoopGuard("scrape", base_s=0.5, cap_s=max(5.0, settings.scrape.interval_s))
    try:
        run_forever(guard, scraper.scrape_all, stop)
    finally:
        scraper.close()
