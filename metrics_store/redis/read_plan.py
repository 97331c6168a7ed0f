"""Reads gathered for one call of lua/read.lua: an answer is one command and one round trip."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Key = str | bytes
Arg = str | bytes | int | float
T = TypeVar("T")


@dataclass(frozen=True)
class Staged(Generic[T]):
    """Reads put on a ReadPlan, and how to read their replies.

    The module that owns a key group stages its reads this way, so the reader can gather
    every owner's reads into one script call and still leave each format to its owner.
    """

    commands: int
    parse: Callable[[Sequence[Any]], T]


def parse_staged(replies: Sequence[Any], staged: Sequence[Staged[Any]]) -> list[Any]:
    """Each staged read's result, from the replies of the plan they were put on, in order."""
    results, offset = [], 0
    for item in staged:
        results.append(item.parse(replies[offset : offset + item.commands]))
        offset += item.commands
    return results


class ReadPlan:
    """The reads of one answer, in order; `keys` and `args` are the script's KEYS and ARGV.

    >>> plan = ReadPlan()
    >>> plan.hgetall("{metrics}:availability")
    >>> plan.lrange(recent_key, 0, 19)
    """

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.args: list[Arg] = []

    def lrange(self, key: Key, start: int, stop: int) -> None:
        self._add("LRANGE", (key,), (start, stop))

    def zrangebyscore(self, key: Key, low: float | str, high: float | str) -> None:
        self._add("ZRANGEBYSCORE", (key,), (repr(low) if isinstance(low, float) else low, high))

    def zcount(self, key: Key, low: float | str, high: float | str) -> None:
        self._add("ZCOUNT", (key,), (repr(low) if isinstance(low, float) else low, high))

    def time(self) -> None:
        """Redis's clock (epoch seconds, as a string): the clock liveness is judged by."""
        self._add("TIME", (), ())

    def since(self, key: Key, age_s: float) -> None:
        """The members of sorted set `key` scored within `age_s` of Redis's clock."""
        self._add("SINCE", (key,), (repr(float(age_s)),))

    def exists(self, keys: Sequence[Key]) -> None:
        """For each key, 1 if it exists, else 0."""
        self._add("EXISTS", keys, ())

    def fetch(self, keys: Sequence[Key]) -> None:
        """Each key's content: flat [kind, pairs, ...], kind b"h" (hash), b"z" (sorted set) or
        b"n" (no such key)."""
        self._add("FETCH", keys, ())

    def changes(
        self, feed: Key, head: Key, fold_state: Key, last_id: str, max_entries: int
    ) -> None:
        """The change feed's entries after `last_id`: [status, newest id, folded id, [id,
        fields, ...]] (read.lua's CHANGES; `head` holds the feed's newest id, `fold_state` the
        id of the newest entry whose bins the histogram hashes hold)."""
        self._add("CHANGES", (feed, head, fold_state), (last_id, max_entries))

    def hgetall(self, key: Key) -> None:
        """Flat [field, value, ...]."""
        self._add("HGETALL", (key,), ())

    def _add(self, name: str, keys: Sequence[Key], args: Sequence[Arg]) -> None:
        self.keys.extend(keys)
        self.args += (name, len(keys), len(args), *args)


def pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """A flat [field, value, ...] reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
