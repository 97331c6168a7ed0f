"""The `metrics-store` command: up, api, otlp, scrape, sampler, worker, simulate, watch,
replay-deadletter, slo rules.

It imports with the core install alone (`pip install metrics-store`): each subcommand imports
what it runs inside its handler, and one whose extra is missing says which in one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from metrics_store.errors import MissingSetting
from metrics_store.redis.topology import describe_redis

# The private redis-server's data, relative to where `up` runs; a plain constant, so that the
# CLI's help does not import the process machinery.
DEFAULT_DATA_DIR = Path(".metrics-store")

log = logging.getLogger("metrics_store.cli")

Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:
    from metrics_store.settings import Settings
    from metrics_store.slo.definitions import Objective

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_WATCH_URL = "ws://127.0.0.1:8000/api/metrics/ws"

# The top-level modules that only the extras install (pyproject.toml). A subcommand that
# fails to import one of them reports its extra; any other missing module is a bug and raises.
OPTIONAL_MODULES = frozenset(
    {
        "fastapi",
        "starlette",
        "uvicorn",
        "websockets",
        "opentelemetry",
        "google",
        "prometheus_client",
        "rq",
        "psutil",
        "pynvml",
        "fakeredis",
        "yaml",
    }
)


def _bind_address(args: argparse.Namespace) -> tuple[str, int]:
    """--host and --port, else METRICS_API_HOST and METRICS_API_PORT (127.0.0.1:8000)."""
    from metrics_store.settings import get_settings

    settings = get_settings()
    host: str = args.host if args.host is not None else settings.api.host
    port: int = args.port if args.port is not None else settings.api.port
    return host, port


def _cmd_api(args: argparse.Namespace) -> int:
    from api.security import exposure_warning
    from api.serve import serve
    from metrics_store.settings import get_settings

    host, port = _bind_address(args)
    print(f"metrics-store API on http://{host}:{port}/  (docs: /api/docs)", flush=True)
    if warning := exposure_warning(host, get_settings()):
        log.warning(warning)
    serve(host, port)
    return 0


def _cmd_otlp(args: argparse.Namespace) -> int:
    import uvicorn

    from api.otlp import create_otlp_app
    from metrics_store.settings import get_settings

    settings = get_settings()
    host = args.host if args.host is not None else settings.api.host
    port = args.port if args.port is not None else settings.otlp.port
    print(f"metrics-store OTLP receiver on http://{host}:{port}/v1/metrics", flush=True)
    uvicorn.run(create_otlp_app(settings), host=host, port=port, log_level="warning")
    return 0


def _cmd_scrape(args: argparse.Namespace) -> int:
    from metrics_store.settings import get_settings
    from metrics_store.sources.engines.scraper import metrics_url, run_scraper
    from workers.stop_signals import stop_on_signals

    settings = get_settings()
    tier = args.tier or settings.scrape.tier
    if tier is not None and tier not in settings.tiers:
        tiers = ", ".join(settings.tiers)
        print(f"metrics-store scrape: --tier {tier} is not a tier ({tiers})", file=sys.stderr)
        return 2
    if args.interval is not None:
        settings = settings.replace(scrape_interval_s=args.interval)
    urls = [metrics_url(url) for url in args.urls]
    into = f"tier {tier}" if tier else f"the tier of each {settings.scrape.tier_label}"
    where = describe_redis(settings)
    every = f"{settings.scrape.interval_s:g} s"
    print(f"metrics-store scrape: {', '.join(urls)} every {every} into {into} on {where}",
          flush=True)  # fmt: skip
    run_scraper(settings, urls, tier, stop_on_signals())
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    import asyncio

    from workers.watch import Watcher, watch

    token = args.token or os.environ.get("METRICS_API_TOKEN") or None
    watcher = Watcher(args.url, args.count, token=token)
    return asyncio.run(watch(watcher, max_backoff_s=args.max_backoff))


def _cmd_up(args: argparse.Namespace) -> int:
    # Import what the children run, so that a missing extra stops `up` here, before it starts
    # Redis and children that would each fail with the same message.
    for module in ("api.serve", "workers.jobs", "workers.sampler", "workers.simulate"):
        importlib.import_module(module)
    from workers.up import run_up

    host, port = _bind_address(args)
    demo = None if args.no_demo else args.demo
    return run_up(host=host, port=port, demo=demo, data_dir=args.data_dir)


def _cmd_worker(args: argparse.Namespace) -> int:
    from metrics_store.settings import get_settings
    from workers.jobs import run_worker

    settings = get_settings()
    queues = args.queues.split(",") if args.queues else settings.sampler.job_queues
    where = describe_redis(settings)
    print(f"metrics-store worker on {where}, queues {', '.join(queues)}", flush=True)
    run_worker(settings, queues, burst=args.burst)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from metrics_store.settings import get_settings
    from workers.simulate import run_simulation
    from workers.stop_signals import stop_on_signals

    if args.rate <= 0:
        print("metrics-store simulate: --rate must be positive", file=sys.stderr)
        return 2
    settings = get_settings()
    target = "the collector" if args.direct else f"rq queue {settings.sampler.job_queues[0]!r}"
    if args.otlp:
        target = f"OTLP/HTTP {args.otlp.rstrip('/')}/v1/metrics (routing: the collector)"
    where = describe_redis(settings)
    print(f"metrics-store simulate: {args.rate}/s into {target} on {where}", flush=True)
    # Ctrl-C or SIGTERM ends the run between two prompts: the collector flushes, exit 0.
    stop = stop_on_signals()
    run_simulation(settings, args.rate, args.duration, args.direct, stop=stop, otlp_url=args.otlp)
    return 0


def _cmd_sampler(args: argparse.Namespace) -> int:
    from workers.sampler import run_sampler

    return run_sampler()


def _cmd_replay_deadletter(args: argparse.Namespace) -> int:
    from metrics_store.record.collector import MetricsCollector
    from metrics_store.record.deadletter import DeadLetters
    from metrics_store.redis.topology import sync_client
    from metrics_store.settings import get_settings

    settings = get_settings()
    client = sync_client(settings)
    letters = DeadLetters(client, settings)
    entries = list(letters.read())
    where = describe_redis(settings)
    print(f"metrics-store replay-deadletter: {len(entries)} batches on {where}", flush=True)
    for entry in entries if args.list else ():
        print(f"  {entry.entry_id}  {len(entry.events)} events from {entry.node}: {entry.error}")
    if args.list or not entries:
        client.close()
        return 0
    collector = MetricsCollector(settings, client=client)
    try:
        written, lost = letters.replay(collector)
    finally:
        collector.close()
    print(f"metrics-store replay-deadletter: {written} events written, {lost} refused again")
    return 1 if lost else 0


def _cmd_slo_rules(args: argparse.Namespace) -> int:
    import yaml

    from metrics_store.errors import InvalidObjectives
    from metrics_store.settings import get_settings
    from metrics_store.slo.files import read_objectives_file
    from metrics_store.slo.rules import prometheus_rules

    settings = get_settings()
    path = args.file or settings.slo.file
    try:
        objectives = read_objectives_file(path, settings) if path else _stored_objectives(settings)
    except InvalidObjectives as exc:
        print(f"metrics-store slo rules: {exc}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(prometheus_rules(objectives), sort_keys=False, width=100), end="")
    return 0


def _stored_objectives(settings: Settings) -> list[Objective]:
    import redis

    from metrics_store.redis.topology import sync_client
    from metrics_store.slo import store

    client = sync_client(settings)
    try:
        stored = store.load_sync(client, settings, known_version=-1)
    except redis.RedisError as exc:
        raise MissingSetting(
            f"cannot read the stored objectives from {describe_redis(settings)} ({exc}); "
            "give --file"
        ) from exc
    finally:
        client.close()
    return [] if stored is None else stored.objectives


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metrics-store", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_servers(sub)
    _add_traffic(sub)
    _add_watch(sub)
    replay = sub.add_parser(
        "replay-deadletter", help="write the batches Redis refused for their content again"
    )
    replay.add_argument("--list", action="store_true", help="list them, replay nothing")
    replay.set_defaults(handler=_cmd_replay_deadletter, extra="all")
    _add_slo(sub)
    return parser


def _add_slo(sub: Subparsers) -> None:
    slo = sub.add_parser("slo", help="service-level objectives (docs/slo.md)")
    slo_sub = slo.add_subparsers(dest="slo_command", required=True)
    rules = slo_sub.add_parser(
        "rules", help="print the objectives as Prometheus recording and alerting rules"
    )
    rules.add_argument(
        "--file",
        type=Path,
        help="the objectives' TOML or YAML file (default METRICS_SLO_FILE; unset: those "
        "stored in Redis)",
    )
    rules.set_defaults(handler=_cmd_slo_rules, extra="api")


def _add_servers(sub: Subparsers) -> None:
    up = sub.add_parser("up", help="start Redis (if needed), the API and the workers")
    up.add_argument("--host", help="API bind address (default METRICS_API_HOST, 127.0.0.1)")
    up.add_argument("--port", type=int, help="API port (default METRICS_API_PORT, 8000)")
    up.add_argument("--no-demo", action="store_true", help="do not generate demo traffic")
    up.add_argument(
        "--demo",
        choices=("rq", "otlp"),
        default="rq",
        help="demo traffic through rq workers and the collector (default), or its queries "
        "over OTLP/HTTP to the API (/v1/metrics)",
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"the private redis-server's data goes in DATA_DIR/redis (default {DEFAULT_DATA_DIR})",
    )
    up.set_defaults(handler=_cmd_up, extra="all")

    api = sub.add_parser("api", help="serve the REST and WebSocket API")
    api.add_argument(
        "--host", help="bind address (default METRICS_API_HOST, 127.0.0.1; 0.0.0.0 in a container)"
    )
    api.add_argument("--port", type=int, help="port (default METRICS_API_PORT, 8000)")
    api.set_defaults(handler=_cmd_api, extra="api")

    otlp = sub.add_parser("otlp", help="serve only the OTLP/HTTP receiver, POST /v1/metrics")
    otlp.add_argument("--host", help="bind address (default METRICS_API_HOST, 127.0.0.1)")
    otlp.add_argument("--port", type=int, help="port (default METRICS_OTLP_PORT, 4318)")
    otlp.set_defaults(handler=_cmd_otlp, extra="api")

    scrape = sub.add_parser(
        "scrape", help="record the Prometheus metrics of vLLM, SGLang or TGI engines"
    )
    scrape.add_argument(
        "urls", nargs="+", metavar="URL", help="an engine's metrics URL (host:port: /metrics)"
    )
    scrape.add_argument("--tier", help="the tier of every series (default: by model_name)")
    scrape.add_argument(
        "--interval",
        type=_duration_s,
        help="between two scrapes, as 5s, 500ms or 1m (default METRICS_SCRAPE_INTERVAL_S, 5)",
    )
    scrape.set_defaults(handler=_cmd_scrape, extra="api")

    sampler = sub.add_parser(
        "sampler", help="write this node's hardware snapshot to Redis every interval"
    )
    sampler.set_defaults(handler=_cmd_sampler, extra="sampler")


def _add_traffic(sub: Subparsers) -> None:
    worker = sub.add_parser("worker", help="run demo LLM jobs from the rq queues")
    worker.add_argument("--queues", help="comma-separated queue names (default METRICS_JOB_QUEUES)")
    worker.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    worker.set_defaults(handler=_cmd_worker, extra="worker")

    simulate = sub.add_parser("simulate", help="send demo traffic")
    simulate.add_argument("--rate", type=float, default=5.0, help="queries per second (default 5)")
    simulate.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    simulate.add_argument(
        "--direct", action="store_true", help="record events directly, without rq workers"
    )
    simulate.add_argument(
        "--otlp",
        metavar="API_URL",
        help="send the queries over OTLP/HTTP to this API (e.g. http://127.0.0.1:8000), "
        "as an OpenTelemetry-instrumented LLM server would",
    )
    simulate.set_defaults(handler=_cmd_simulate, extra="worker")


def _add_watch(sub: Subparsers) -> None:
    watch = sub.add_parser("watch", help="print the live stream, one line per update")
    watch.add_argument("--url", default=DEFAULT_WATCH_URL, help=f"default {DEFAULT_WATCH_URL}")
    watch.add_argument("--count", type=_positive_int, help="exit after this many updates")
    # Never the token itself as the default: argparse would show it in --help.
    watch.add_argument(
        "--token", help="the API's bearer token (default $METRICS_API_TOKEN; prefer the variable)"
    )
    watch.add_argument(
        "--max-backoff", type=float, default=30.0, help="longest reconnect wait, s (default 30)"
    )
    watch.set_defaults(handler=_cmd_watch, extra="api")


DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0}


def _duration_s(text: str) -> float:
    """'5s', '500ms', '1m' or a bare number of seconds, as seconds (> 0)."""
    number, unit = text.strip(), "s"
    for suffix in sorted(DURATION_UNITS_S, key=len, reverse=True):
        if number.endswith(suffix):
            number, unit = number.removesuffix(suffix), suffix
            break
    try:
        seconds = float(number) * DURATION_UNITS_S[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 5s") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return seconds


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def missing_extra_line(command: str, extra: str) -> str:
    """What a subcommand says when its extra is not installed: one line, with the fix."""
    install = f"pip install 'metrics-store[{extra}]'"
    return f"metrics-store {command}: needs the [{extra}] extra: {install}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in OPTIONAL_MODULES:
            raise
        print(missing_extra_line(args.command, args.extra), file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"metrics-store: invalid configuration: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    except MissingSetting as exc:
        print(f"metrics-store {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
