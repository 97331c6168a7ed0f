"""The objectives every process shares, kept in Redis: one hash, its definitions and version.

The API replicas answer from them, the collectors count combined objectives with them, and a
PUT on any replica changes them for all: each process reads the version (one HGET) and
fetches the definitions again only when it moved. The version only grows, so a process never
takes an older set for a newer one.

    {p}:slo:definitions   hash  json -> {"objectives": [...]}, version -> n
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import redis
import redis.asyncio as aioredis

from metrics_store.errors import InvalidObjectives
from metrics_store.redis.keys import Keys
from metrics_store.settings import Settings
from metrics_store.slo.definitions import Objective, parse_objectives

log = logging.getLogger("metrics_store.slo")

DEFINITIONS_FIELD, VERSION_FIELD = "json", "version"


@dataclass(frozen=True)
class StoredObjectives:
    version: int  # 0: none were ever stored
    objectives: list[Objective]


def document(objectives: Sequence[Objective]) -> bytes:
    """The stored form: the definitions as given, in order."""
    return orjson.dumps({"objectives": [objective.as_json() for objective in objectives]})


def parse_stored(raw: object, version: object, settings: Settings) -> StoredObjectives:
    """What the hash holds, checked against this process's settings (tiers, history)."""
    if not isinstance(raw, (bytes, str)):
        return StoredObjectives(0, [])
    objectives = parse_objectives(orjson.loads(raw), settings.tiers, settings.slo.history_s)
    return StoredObjectives(int(version) if isinstance(version, (bytes, str)) else 0, objectives)


async def load(client: aioredis.Redis, settings: Settings) -> StoredObjectives:
    raw, version = await client.hmget(_key(settings), [DEFINITIONS_FIELD, VERSION_FIELD])
    return parse_stored(raw, version, settings)


async def version(client: aioredis.Redis, settings: Settings) -> int:
    return int(await client.hget(_key(settings), VERSION_FIELD) or 0)


async def save(client: aioredis.Redis, settings: Settings, objectives: Sequence[Objective]) -> int:
    """Store a checked set, whole, unless it equals the stored one; returns the version."""
    key, body = _key(settings), document(objectives)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hget(key, DEFINITIONS_FIELD)
        pipe.hget(key, VERSION_FIELD)
        stored, stored_version = await pipe.execute()
    if stored == body:  # every replica stores the same file at start: one version for it
        return int(stored_version or 0)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(key, DEFINITIONS_FIELD, body)
        pipe.hincrby(key, VERSION_FIELD, 1)
        _, new_version = await pipe.execute()
    return int(new_version)


def stored_version(client: redis.Redis, settings: Settings) -> int:
    return int(client.hget(_key(settings), VERSION_FIELD) or 0)


def load_sync(
    client: redis.Redis, settings: Settings, known_version: int
) -> StoredObjectives | None:
    """For the collectors: the stored set if its version moved past `known_version`, else
    None (one HGET)."""
    key = _key(settings)
    current = int(client.hget(key, VERSION_FIELD) or 0)
    if current == known_version:
        return None
    raw, stored_version = client.hmget(key, [DEFINITIONS_FIELD, VERSION_FIELD])
    return parse_stored(raw, stored_version, settings)


def _key(settings: Settings) -> str:
    return Keys(settings.key_prefix).slo_definitions


class SharedObjectives:
    """An API replica's view of the stored objectives: the version checked on each use (one
    HGET), the definitions fetched again only when it moved. With METRICS_SLO_FILE set, the
    file's objectives are stored first, once Redis answers (every replica stores the same
    set; an equal set is not stored again)."""

    def __init__(
        self, client: aioredis.Redis, settings: Settings, from_file: list[Objective] | None
    ) -> None:
        self._client = client
        self._settings = settings
        self._from_file = from_file
        self._known = StoredObjectives(0, [])
        self._refused = -1  # a stored version this replica's settings refuse

    async def current(self) -> StoredObjectives:
        """The stored set; if this replica's settings refuse it (other tiers, a shorter
        history), the last set it took, logged once per version: the live tick and the other
        endpoints go on."""
        if self._from_file is not None:
            await save(self._client, self._settings, self._from_file)
            self._from_file = None
        stored_version = await version(self._client, self._settings)
        if stored_version not in (self._known.version, self._refused):
            try:
                self._known = await load(self._client, self._settings)
            except InvalidObjectives as exc:
                self._refused = stored_version
                log.error("objectives version %d refused by this replica: %s", stored_version, exc)
        return self._known

    async def replace(self, objectives: Sequence[Objective]) -> StoredObjectives:
        """Store a checked set (PUT); every replica sees it on its next use."""
        stored_version = await save(self._client, self._settings, objectives)
        self._known = StoredObjectives(stored_version, list(objectives))
        return self._known
