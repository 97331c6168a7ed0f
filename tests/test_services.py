"""FAISS index files, the cache Redis's used_memory, and rq's numbers against `rq info`."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from rq import Queue

from metrics_store.clock import SystemClock
from metrics_store.redis.topology import sync_client
from metrics_store.settings import Settings
from tests.waiting import wait_until
from workers.redis_process import RedisServerProcess, free_port
from workers.services import JobQueueSource, RedisMemorySource, faiss_index_bytes

RQ = str(Path(sys.executable).with_name("rq"))
REPO = Path(__file__).resolve().parent.parent


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)


def test_faiss_size_sums_the_files_a_glob_matches(tmp_path: Path) -> None:
    write(tmp_path / "index" / "shard-0.faiss", 1000)
    write(tmp_path / "index" / "shard-1.faiss", 2500)
    write(tmp_path / "index" / "ids.json", 77)
    write(tmp_path / "index" / "deep" / "shard-2.faiss", 40)
    assert faiss_index_bytes(str(tmp_path / "index" / "*.faiss")) == 3500
    assert faiss_index_bytes(str(tmp_path / "index" / "**" / "*.faiss")) == 3540
    assert faiss_index_bytes(str(tmp_path / "index" / "shard-1.faiss")) == 2500


def test_faiss_size_is_zero_when_unset_missing_or_a_directory(tmp_path: Path) -> None:
    write(tmp_path / "index" / "shard-0.faiss", 1000)
    assert faiss_index_bytes(None) == 0
    assert faiss_index_bytes("") == 0
    assert faiss_index_bytes(str(tmp_path / "nothing.faiss")) == 0
    assert faiss_index_bytes(str(tmp_path / "nothing" / "*")) == 0
    assert faiss_index_bytes(str(tmp_path / "index")) == 0  # a directory is not a file


def test_cache_size_is_redis_used_memory(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        used = RedisMemorySource(client).read()
        assert used > 0
        # The same figure INFO gives, give or take what the server allocated in between.
        assert abs(used - int(client.info("memory")["used_memory"])) < 1_000_000
    finally:
        client.close()


def test_cache_redis_away_reports_zero_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # Built as the sampler builds it: no hidden retries, bounded timeouts.
    client = sync_client(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    source = RedisMemorySource(client)
    with caplog.at_level(logging.WARNING, logger="workers.services"):
        assert [source.read(), source.read()] == [0, 0]
    assert len(caplog.records) == 1


@pytest.fixture
def rq_redis(tmp_path: Path) -> Iterator[RedisServerProcess]:
    """A redis-server of the test's own: rq's keys have no prefix of ours to clean up by."""
    with RedisServerProcess(tmp_path / "rq-redis") as server:
        yield server


def rq_info(url: str, queue: str) -> tuple[int, int]:
    """(executing, waiting) as `rq info` prints them."""
    out = subprocess.run(
        [RQ, "info", "--raw", "--only-queues", "-u", url, queue],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    match = re.search(rf"^queue {queue} (\d+), (\d+) executing", out, re.MULTILINE)
    assert match, out
    return int(match.group(2)), int(match.group(1))


@contextmanager
def rq_worker(url: str, queue: str, release: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `rq worker` (SimpleWorker: jobs run in the worker process, no fork).

    On the way out it touches `release`, so a held job ends and the worker stops at once.
    """
    command = [RQ, "worker", "-u", url, "-w", "rq.SimpleWorker", "-P", str(REPO), queue]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        release.touch()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_rq_numbers_match_rq_info(rq_redis: RedisServerProcess, tmp_path: Path) -> None:
    client = redis.Redis.from_url(rq_redis.url)
    queue = Queue("inference", connection=client)
    release = tmp_path / "release"
    jobs = [queue.enqueue("tests.rq_jobs.hold", str(release)) for _ in range(3)]
    source = JobQueueSource(client, ["inference", "idle"])
    assert source.read(SystemClock().now()) == (0, 3) == rq_info(rq_redis.url, "inference")

    try:
        with rq_worker(rq_redis.url, "inference", release):
            # One job runs (held until released), two wait behind it.
            wait_until(lambda: queue.started_job_registry.get_job_count(cleanup=False) == 1, 20)
            now_s = SystemClock().now()
            assert source.read(now_s) == (1, 2) == rq_info(rq_redis.url, "inference")
            release.touch()
            wait_until(lambda: all(job.get_status() == "finished" for job in jobs), 20)
            now_s = SystemClock().now()
            assert source.read(now_s) == (0, 0) == rq_info(rq_redis.url, "inference")
    finally:
        client.close()


def test_a_job_of_a_dead_worker_is_not_active(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = Queue(prefix, connection=client)
    registry_key = queue.started_job_registry.key
    now_s = SystemClock().now()
    try:
        # rq keeps a started job's score in the future while its worker lives (heartbeats).
        client.zadd(registry_key, {"live-job:exec-1": now_s + 60, "dead-job:exec-2": now_s - 60})
        assert JobQueueSource(client, [prefix]).read(now_s) == (1, 0)
    finally:
        client.delete(registry_key)
        client.close()
