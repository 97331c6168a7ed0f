"""Memory: Redis used_memory after many events, and at steady state under retention, per raw
event and per retained bucket; steady state must not depend on the event rate."""

from __future__ import annotations

import uuid
from typing import Any

import redis

from bench.common import Table, private_redis, progress, write_results
from bench.load import load_events
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings


def memory_by_kind(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """MEMORY USAGE summed per kind of key: streams, buckets, the rest."""
    totals = {"streams": 0, "buckets": 0, "other": 0, "bucket_keys": 0, "stream_entries": 0}
    streams = {keys.query_stream, keys.routing_stream}
    for raw in client.scan_iter(match=keys.scan_pattern, count=1000):
        key = raw.decode()
        usage = int(client.memory_usage(key, samples=0) or 0)
        if key in streams:
            totals["streams"] += usage
            totals["stream_entries"] += int(client.xlen(key))
        elif (":q:" in key and ":recent:" not in key) or ":r:" in key:
            totals["buckets"] += usage
            totals["bucket_keys"] += 1
        else:
            totals["other"] += usage
    return totals


def store_after(events: int, span_s: float, stream_maxlen: int) -> dict[str, int]:
    """A fresh Redis holding `events` events spread over `span_s` seconds before now."""
    with private_redis() as server:
        client = redis.Redis.from_url(server.url)
        empty = int(client.info("memory")["used_memory"])
        settings = Settings(
            redis_url=server.url, key_prefix=f"m{uuid.uuid4().hex[:6]}", stream_maxlen=stream_maxlen
        )
        load_events(settings, events, span_s)
        figures = memory_by_kind(client, Keys(settings.key_prefix))
        figures["used_memory"] = int(client.info("memory")["used_memory"]) - empty
        client.close()
        return figures


def run(full: bool) -> dict[str, Any]:
    many = 10_000_000 if full else 1_000_000
    retention_s = Settings.default_of("retention_s")
    cap = Settings.default_of("stream_maxlen")
    progress(f"{many:,} events over the 30-minute window")
    bulk = store_after(many, 1790, cap)
    # Steady state: a full retention period of traffic at two rates ten times apart.
    rates = (50, 500)  # both fill the capped streams: what remains is the buckets
    steady = {}
    for rate in rates:
        progress(f"steady state: {rate} events/s over the {retention_s} s retention period")
        steady[rate] = store_after(rate * retention_s, retention_s, cap)

    table = Table(
        "Redis memory", ["store", "used_memory", "streams", "buckets", "per event", "per bucket"]
    )
    for name, fig in [(f"{many:,} events in 30 min", bulk)] + [
        (f"steady, {rate}/s over {retention_s // 3600} h", fig) for rate, fig in steady.items()
    ]:
        table.add(
            name,
            f"{fig['used_memory'] / 2**20:.1f} MiB",
            f"{fig['streams'] / 2**20:.1f} MiB ({fig['stream_entries']:,} entries)",
            f"{fig['buckets'] / 2**20:.1f} MiB ({fig['bucket_keys']:,} keys)",
            f"{fig['streams'] / max(fig['stream_entries'], 1):.0f} B/stream entry",
            f"{fig['buckets'] / max(fig['bucket_keys'], 1):.0f} B",
        )
    low, high = (steady[r]["used_memory"] for r in rates)
    table.add(
        f"steady-state ratio {rates[1]}/s : {rates[0]}/s", f"{high / low:.2f}", "", "", "", ""
    )
    print(table.render())
    results = {"bulk": bulk, "steady": {str(k): v for k, v in steady.items()}, "table": table.rows}
    write_results("memory", results)
    return results
