"""Readings of what the node serves from: the FAISS index files, the cache Redis, the rq queues.

Each is a small object with one `read()` so the sampler can be handed others in tests. A source
that cannot be read reports 0 and logs once until it can be read again.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections.abc import Sequence

import redis
from rq import Queue

from metrics_store.redis.client import UsedMemory, server_used_memory

log = logging.getLogger(__name__)


def faiss_index_bytes(pattern: str | None) -> int:
    """Total bytes of the regular files matched by a path or glob; 0 when unset or missing.

    `**` matches across directories. A file that vanishes while being measured counts 0.
    """
    if not pattern:
        return 0
    total = 0
    for path in glob.iglob(os.path.expanduser(pattern), recursive=True):
        try:
            info = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            total += info.st_size
    return total


class FaissIndexSource:
    """faissIndexSize: the configured index file(s), measured each sample (a few stat calls)."""

    def __init__(self, pattern: str | None) -> None:
        self.pattern = pattern

    def read(self) -> int:
        return faiss_index_bytes(self.pattern)


class _OnceLog:
    """Logs a failure once per run of failures, and the recovery after it."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = False

    def failed(self, exc: Exception) -> None:
        if not self.failing:
            log.warning("%s unavailable (%s); reporting 0 until it is back", self.what, exc)
        self.failing = True

    def succeeded(self) -> None:
        if self.failing:
            log.info("%s is back", self.what)
        self.failing = False


class RedisMemorySource:
    """redisCacheSize: `used_memory` from INFO memory of the cache Redis.

    On a Redis Cluster, the sum over its primaries: the memory the data takes cluster-wide
    (each replica holds a copy of its primary's).
    """

    def __init__(self, client: redis.Redis, used_memory: UsedMemory = server_used_memory) -> None:
        self._client = client
        self._used_memory = used_memory
        self._log = _OnceLog("cache Redis (INFO memory)")

    def read(self) -> int:
        try:
            used = self._used_memory(self._client)
        except (redis.RedisError, OSError, KeyError, ValueError) as exc:
            self._log.failed(exc)
            return 0
        self._log.succeeded()
        return used


class JobQueueSource:
    """threadPoolStatus from rq: (jobs being run now by live workers, jobs waiting).

    Read-only: `rq info` counts the same things but first cleans up the registries (moving
    abandoned jobs to the failed registry and running their callbacks), which a monitor must
    not do. Instead, a started job counts only while its worker keeps its entry's expiry
    score in the future, which is what a live worker's heartbeat does.
    """

    def __init__(self, client: redis.Redis, queue_names: Sequence[str]) -> None:
        self._client = client
        # Key names come from rq itself, so they follow rq's layout; building them connects
        # to nothing.
        queues = [Queue(name, connection=client) for name in queue_names]
        self._waiting_keys = [queue.key for queue in queues]
        self._started_keys = [queue.started_job_registry.key for queue in queues]
        self._log = _OnceLog("rq queues")

    def read(self, now_s: float) -> tuple[int, int]:
        """(active, queued) summed over the queues, in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for waiting, started in zip(self._waiting_keys, self._started_keys, strict=True):
            pipe.llen(waiting)
            pipe.zcount(started, now_s, "+inf")
        try:
            replies = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._log.failed(exc)
            return 0, 0
        self._log.succeeded()
        return sum(replies[1::2]), sum(replies[0::2])


class NoJobQueues:
    """No jobs Redis to read: no job running, none waiting."""

    def read(self, now_s: float) -> tuple[int, int]:
        return 0, 0
