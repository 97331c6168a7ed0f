"""rq jobs and the worker process that runs them.

Workers are rq SimpleWorkers: jobs run in the worker process itself, so the process-wide
collector (and its flusher thread) lives as long as the worker, instead of dying with a forked
child after every job.
"""

from __future__ import annotations

import logging
import signal
import threading
from functools import cache
from types import FrameType

import redis
from rq import Queue, SimpleWorker

from metrics_store.loops import LoopGuard, run_forever
from metrics_store.record.collector import get_metrics_collector
from metrics_store.redis.topology import jobs_client
from metrics_store.settings import Settings, get_settings
from workers.demo_backend import DemoBackend, GenerationFailed

log = logging.getLogger(__name__)

# Finished and failed demo jobs are kept briefly: long enough for `rq info`, short enough
# that Redis memory stays flat under steady traffic.
RESULT_TTL_S = 60
FAILURE_TTL_S = 600
AVAILABILITY_INTERVAL_S = 2.0


@cache
def demo_backend() -> DemoBackend:
    """This process's demo backend, recording through the process-wide collector."""
    settings = get_settings()
    return DemoBackend(
        settings.tiers,
        settings.complexities,
        get_metrics_collector(),
        time_scale=settings.sampler.demo_time_scale,
    )


def process_query(prompt: str) -> str:
    """The rq job: route and answer one prompt through the demo backend."""
    return demo_backend().handle(prompt)


def rq_connection(settings: Settings) -> redis.Redis:
    """rq's Redis (METRICS_JOBS_REDIS_URL, else the store's): raw bytes, no client decoding."""
    return jobs_client(settings, command_timeout_s=max(settings.redis.command_timeout_s, 5.0))


def enqueue_query(queue: Queue, prompt: str) -> None:
    queue.enqueue(
        process_query, prompt, result_ttl=RESULT_TTL_S, failure_ttl=FAILURE_TTL_S, job_timeout=60
    )


def _report_availability(stop: threading.Event) -> None:
    backend = demo_backend()

    def step() -> float:
        backend.pool.tick()
        backend.pool.report(backend.collector)
        return AVAILABILITY_INTERVAL_S

    run_forever(LoopGuard("availability-reporter"), step, stop)


class _HideDemoFailures(logging.Filter):
    """Demo jobs fail on purpose now and then; those failures are metrics, not log noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return (
            not isinstance(exc, GenerationFailed) and "GenerationFailed" not in record.getMessage()
        )


def run_worker(settings: Settings, queue_names: list[str], burst: bool = False) -> None:
    """Serve the queues until SIGINT or SIGTERM, reporting model availability meanwhile.

    rq retries a lost connection while it waits for jobs; an outage anywhere else (starting
    up, registering, finishing a job) ends its loop with a connection error, and then the
    loop guard waits with backoff and starts a new one. Any other failure of rq's loop is
    counted and retried the same way. Either way the worker outlives it.
    """
    rq_connection(settings).close()  # no jobs Redis for this topology: stop here, at start
    logging.getLogger("rq.worker").addFilter(_HideDemoFailures())
    stop = threading.Event()
    reporter = threading.Thread(
        target=_report_availability, args=(stop,), name="availability", daemon=True
    )
    reporter.start()
    done = threading.Event()

    def serve() -> float:
        worker = _worker(settings, queue_names)
        try:
            worker.work(burst=burst, logging_level="WARNING")
        except Exception:
            if _stop_was_requested(worker):
                done.set()  # a stop during an outage: rq's goodbye to Redis failed, not us
                return 0.0
            # rq's handlers stay installed after its loop ends and would only set a flag
            # for a loop that no longer runs: between loops, a signal must stop us.
            signal.signal(signal.SIGTERM, _interrupt)
            signal.signal(signal.SIGINT, _interrupt)
            raise
        finally:
            worker.connection.close()
        if not burst and not _stop_was_requested(worker):
            # rq ends its loop by itself on some errors (a Redis timeout mid-heartbeat):
            # that is a failure to count and recover from, not a reason to exit.
            raise RuntimeError("rq's worker loop quit on its own")
        done.set()  # asked to stop, or (burst) the queues are empty
        return 0.0

    try:
        run_forever(LoopGuard("job-worker", base_s=0.2, cap_s=5.0), serve, done)
    finally:
        stop.set()
        get_metrics_collector().close()


def _stop_was_requested(worker: SimpleWorker) -> bool:
    """Whether SIGTERM or SIGINT reached rq's handler (it notes the moment; rq has no getter)."""
    return getattr(worker, "_shutdown_requested_date", None) is not None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _worker(settings: Settings, queue_names: list[str]) -> SimpleWorker:
    connection = rq_connection(settings)
    queues = [Queue(name, connection=connection) for name in queue_names]
    return SimpleWorker(queues, connection=connection)
