"""The ingest call: a versioned header read by name, refused whole when it is not what the
script reads, and the writes of a batch (single call, or split for Redis Cluster)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from metrics_store.record.batch import FORMAT_VERSION, BatchEncoder, EncodedBatch
from metrics_store.record.events import Event
from metrics_store.record.fold import fold_waiting
from metrics_store.redis.keys import Keys
from metrics_store.redis.scripts import INGEST, lua_script, lua_source
from metrics_store.settings import Settings


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _events(now: float) -> list[Event]:
    return [
        ("q", now, "Q2", 120.5, 40, 100.0, False, 30.0, 2.0),
        ("q", now, "Q3", 900.0, 10, 800.0, True, None, None),
        ("r", now, "SIMPLE", "Q2", 0.75, 1.5, False),
        ("a", now, "Q4", 2, 3),
    ]


def _batch(settings: Settings) -> EncodedBatch:
    now = time.time()
    return BatchEncoder(settings, Keys(settings.key_prefix)).encode(
        _events(now), uuid.uuid4().hex, now
    )


def _with_header(batch: EncodedBatch, **fields: object) -> list[str | int | float]:
    header = json.loads(str(batch.args[0]))
    header.update(fields)
    return [json.dumps(header), *batch.args[1:]]


def _stored(client: redis.Redis, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{{{prefix}*", count=1000))


def test_the_script_and_the_encoder_read_one_format_version() -> None:
    found = re.search(r"^local FORMAT = (\d+)$", lua_source(INGEST), re.MULTILINE)
    assert found is not None and int(found.group(1)) == FORMAT_VERSION


@pytest.mark.parametrize("version", [1, FORMAT_VERSION + 1])
def test_a_batch_of_another_version_is_refused_and_writes_nothing(
    client: redis.Redis, settings: Settings, prefix: str, version: int
) -> None:
    batch = _batch(settings)
    with pytest.raises(redis.ResponseError) as refused:
        lua_script(INGEST).run(client, batch.keys, _with_header(batch, version=version))
    expected = f"ingest batch format v{version}, this script reads v{FORMAT_VERSION}"
    assert str(refused.value) == expected
    assert _stored(client, prefix) == []


def test_the_positional_format_is_refused_by_name(
    client: redis.Redis, settings: Settings, prefix: str
) -> None:
    """A collector of the first format (19 positional values, then the sections)."""
    batch = _batch(settings)
    positional = [3600, 100000, 7200, 20, "node-a", time.time(), 3, 0, 0, 0, 0, 0, 0, 0, 0]
    with pytest.raises(redis.ResponseError, match=r"format v1 \(positional arguments\)"):
        lua_script(INGEST).run(client, batch.keys, positional)
    assert _stored(client, prefix) == []


@pytest.mark.parametrize(
    "sections, problem",
    [
        ([["queries", 2], ["bogus", 0]], "section bogus is unknown or repeated"),
        ([["queries", 2], ["queries", 0]], "section queries is unknown or repeated"),
        ([["queries", 2]], "sections span 2 values, ARGV holds"),
    ],
)
def test_sections_the_script_cannot_place_are_refused(
    client: redis.Redis, settings: Settings, prefix: str, sections: list[object], problem: str
) -> None:
    batch = _batch(settings)
    args = _with_header(batch, sections=sections)
    with pytest.raises(redis.ResponseError, match=re.escape(problem)):
        lua_script(INGEST).run(client, batch.keys, args)
    assert _stored(client, prefix) == []


def test_a_header_that_is_not_json_is_refused(
    client: redis.Redis, settings: Settings, prefix: str
) -> None:
    batch = _batch(settings)
    with pytest.raises(redis.ResponseError, match="header is not a JSON object"):
        lua_script(INGEST).run(client, batch.keys, ["{not json", *batch.args[1:]])
    assert _stored(client, prefix) == []


def test_a_batch_writes_its_events_once_and_every_bucket_expires(
    client: redis.Redis, settings: Settings
) -> None:
    keys = Keys(settings.key_prefix)
    batch = _batch(settings)
    ingest = lua_script(INGEST)
    assert ingest.run(client, batch.keys, batch.args) == 3  # stream entries
    assert ingest.run(client, batch.keys, batch.args) == -1  # the same id: nothing twice
    assert client.xlen(keys.query_stream) == 2 and client.xlen(keys.routing_stream) == 1
    assert client.hget(keys.availability, "node-a:Q4") == b"2/3"
    assert client.zscore(keys.live_nodes, "node-a") is not None
    buckets = [key.decode() for key in client.zrange(keys.bucket_index, 0, -1)]
    assert any(":h:" in key for key in buckets) and any(":r:" in key for key in buckets)
    histograms = [key for key in buckets if ":h:" in key]
    # The bins wait in the change feed until a fold; then every bucket expires.
    assert client.exists(*histograms) == 0
    assert fold_waiting(client, keys, min_age_ms=0).folded == 1
    assert all(client.ttl(key) > 0 for key in buckets)
    assert fold_waiting(client, keys, min_age_ms=0) == (0, 0)  # folded once, none waits


def test_a_split_batch_writes_data_on_the_shard_and_control_beside_it(
    client: redis.Redis, settings: Settings
) -> None:
    """Redis Cluster's two calls (here on one server): the shard's data, then the control."""
    control, shard = Keys(settings.key_prefix), Keys(settings.key_prefix, "0-test")
    now = time.time()
    batch = BatchEncoder(settings, shard, control).encode(_events(now), "split", now, refused=4)
    header = json.loads(str(batch.args[0]))
    assert header["heartbeat"] is False and header["refused"] == 0
    assert ["availability", 0] not in header["sections"]  # the control call carries it
    assert batch.control is not None
    ingest = lua_script(INGEST)
    for _ in range(2):  # a retry of both calls adds nothing: each call has its own marker
        ingest.run(client, batch.keys, batch.args)
        ingest.run(client, batch.control.keys, batch.control.args)
    assert client.xlen(shard.query_stream) == 2 and not client.exists(control.query_stream)
    assert client.hget(control.availability, "node-a:Q4") == b"2/3"
    assert client.hget(control.refused, "node-a") == b"4"
    assert client.zscore(control.live_nodes, "node-a") is None  # the flusher's own beat
