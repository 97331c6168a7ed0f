"""The collector under hypothesis: any input is refused whole, or stored exactly.

Each of the contract's three calls gets arguments drawn from valid values and from what a
caller gets wrong: wrong types, bools, numeric strings, NaN and infinities, negatives, huge
ints, wrong-case names, subclasses. An oracle written from the collector contract (not from
metrics_store.record.validation) says which field, if any, is bad. Then either
- the call raised ValueError naming the first bad field, and the store's data is unchanged; or
- the data changed by exactly that event: one new stream entry whose fields parse back to the
  same values (floats exactly, through repr), and bucket counters moved by exactly its amounts.

Examples per test come from the hypothesis profile (tests/conftest.py): HYPOTHESIS_PROFILE=deep
for a longer run. The harness is shared by a test's examples; each example diffs the store.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from metrics_store.buckets import bucket_levels
from metrics_store.histogram import bin_index
from metrics_store.record.batch import SUM_STEP_MS
from metrics_store.record.validation import MAX_COUNT, MAX_MS, MAX_SCORE
from metrics_store.redis.keys import (
    ALL_TIME_FIGURES,
    FIGURE_LATENCY,
    HISTOGRAM_SUM,
    QUERY_COUNT,
    QUERY_ERRORS,
    QUERY_LATENCY_MS,
    ROUTING_COUNT,
    ROUTING_DECISION_MS,
    ROUTING_FALLBACKS,
    ROUTING_SCORE,
    TOTAL_LATENCY_MS,
    TOTAL_QUERIES,
    TOTAL_ROUTING,
    TOTAL_TOKENS,
    member,
)
from metrics_store.settings import Settings
from tests.conftest import T0
from tests.harness import StoreHarness, make_harness

TIERS = ("Q2", "Q3", "Q4")
COMPLEXITIES = ("SIMPLE", "MODERATE", "COMPLEX")
Snapshot = dict[str, Any]


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyStr(str):
    pass


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 7


HUGE_INTS = [10**400, -(10**400), 10**5000, 2**63, MAX_COUNT + 1]
NOT_NUMBERS = [None, [1], {"v": 1}, b"1", Decimal("1"), Fraction(1, 2), 1j, object()]


def mostly(valid: st.SearchStrategy[object], *wrong: st.SearchStrategy[object]) -> Any:
    """Valid four times in five: so a call with several fields is often valid throughout."""
    return st.integers(0, 4).flatmap(lambda i: st.one_of(*wrong) if i == 0 else valid)


def numbers(maximum: float) -> st.SearchStrategy[object]:
    """Valid times or scores, and all the near misses."""
    return mostly(
        st.one_of(st.floats(0, maximum), st.integers(0, int(maximum))),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(),
        st.sampled_from([*HUGE_INTS, -0.0, math.nextafter(maximum, math.inf), maximum + 1]),
        st.booleans(),
        st.one_of(st.floats(0, maximum).map(repr), st.integers(0, 100).map(str)),
        st.floats(0, maximum).map(MyFloat),
        st.integers(0, int(maximum)).map(MyInt),
        st.sampled_from(Level),
        st.sampled_from(NOT_NUMBERS),
    )


def counts() -> st.SearchStrategy[object]:
    """Valid counts, and floats, bools, strings, negatives and huge ints."""
    return mostly(
        st.one_of(st.integers(0, MAX_COUNT), st.integers(0, 20)),
        st.integers(),
        st.sampled_from(HUGE_INTS),
        st.booleans(),
        st.floats(0, 100),
        st.integers(0, 100).map(str),
        st.integers(0, 100).map(MyInt),
        st.sampled_from(Level),
        st.sampled_from(NOT_NUMBERS),
    )


def names(allowed: Sequence[str]) -> st.SearchStrategy[object]:
    """The configured names, and wrong case, padding, subclasses, bytes and anything else."""
    near_misses = [
        variant
        for name in allowed
        for variant in (name.lower(), name.swapcase(), f" {name}", f"{name}\n", MyStr(name))
    ]
    return mostly(
        st.sampled_from(allowed),
        st.sampled_from(near_misses),
        st.sampled_from([name.encode() for name in allowed]),
        st.text(max_size=12),
        st.text(min_size=1000, max_size=2000),
        st.sampled_from([None, 2, 10**5000, ("Q2",)]),
    )


def flags() -> st.SearchStrategy[object]:
    return mostly(st.booleans(), st.sampled_from([0, 1, "true", None, MyInt(1), 1.0]))


# --- the oracle: the collector contract's rules, stated directly ----------------------------
def is_number(value: object, maximum: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return 0 <= value <= maximum  # False for NaN; exact for ints of any size


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def is_name(value: object, allowed: Sequence[str]) -> bool:
    return isinstance(value, str) and str.__str__(value) in allowed


def is_flag(value: object) -> bool:
    return value is True or value is False


def as_stored(number: Any) -> float:
    """The float a valid number is stored as: itself, except -0.0, which is stored as 0.0."""
    return float(number) + 0.0


def first_bad(checks: Sequence[tuple[str, bool]]) -> str | None:
    return next((field for field, ok in checks if not ok), None)


# --- the store, read whole ----------------------------------------------------------------
def snapshot(h: StoreHarness) -> Snapshot:
    """Every data key's content, decoded: streams as [(id, fields)], sorted sets as dicts.

    The change feed and its fold state are left out: they tell readers what a write added,
    whatever the write (tests/test_bucket_cache.py holds readers to it), and `settle` folds
    every histogram bin into its hash before a snapshot."""
    feed = {h.keys.change_feed, h.keys.change_head, h.keys.fold_state}
    keys = [key for key in h.data_keys() if key not in feed]
    kinds = [kind.decode() for kind in _pipelined(h, keys, lambda p, k: p.type(k))]
    readers: dict[str, Callable[[Any, str], Any]] = {
        "stream": lambda p, k: p.xrange(k),
        "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
        "list": lambda p, k: p.lrange(k, 0, -1),
        "hash": lambda p, k: p.hgetall(k),
        "string": lambda p, k: p.get(k),
    }
    pipe = h.client.pipeline(transaction=False)
    for key, kind in zip(keys, kinds, strict=True):
        readers[kind](pipe, key)
    return {
        key: _decoded(kind, raw) for key, kind, raw in zip(keys, kinds, pipe.execute(), strict=True)
    }


def _pipelined(h: StoreHarness, keys: list[str], call: Callable[[Any, str], Any]) -> list[Any]:
    pipe = h.client.pipeline(transaction=False)
    for key in keys:
        call(pipe, key)
    return list(pipe.execute())


def _decoded(kind: str, raw: Any) -> Any:
    if kind == "stream":
        return [(i.decode(), {f.decode(): v.decode() for f, v in d.items()}) for i, d in raw]
    if kind == "zset":
        return {m.decode(): score for m, score in raw}
    if kind == "list":
        return [item.decode() for item in raw]
    if kind == "hash":
        return {f.decode(): v.decode() for f, v in raw.items()}
    return raw.decode()


def add(after: Snapshot, key: str, counter: str, amount: float) -> None:
    bucket = after.setdefault(key, {})
    bucket[counter] = bucket.get(counter, 0.0) + amount  # ZINCRBY's double arithmetic


def add_totals(after: Snapshot, key: str, amounts: dict[str, float]) -> None:
    """The all-time totals an event adds (a zero amount is not written at all)."""
    for counter, amount in amounts.items():
        if amount:
            add(after, key, counter, amount)


def expect_stream_entry(before: Snapshot, after: Snapshot, stream: str) -> dict[str, str]:
    """The one entry added to `stream`; everything before it must be untouched."""
    old, new = before.get(stream, []), after.get(stream, [])
    assert new[:-1] == old and len(new) == len(old) + 1
    entry_id, fields = new[-1]
    assert entry_id not in {i for i, _ in old}
    return dict(fields)


def expect_buckets(
    h: StoreHarness, expected: Snapshot, ts: float, name: Callable[[int, int], str]
) -> list[str]:
    """The fine and rollup bucket keys holding `ts`, indexed with the epoch second they retire."""
    s = h.settings
    bucket_keys = []
    r = s.retention
    for level in bucket_levels(r.bucket_s, r.rollup_s, r.retention_s, r.history_s, s.slo.history_s):
        size = level.size_s
        start = int(ts // size) * size
        key = name(size, start)
        index = expected.setdefault(h.keys.bucket_index, {})
        index[key] = max(index.get(key, 0.0), float(start + size + level.retention_s))
        bucket_keys.append(key)
    return bucket_keys


def expect_histogram(
    h: StoreHarness, expected: Snapshot, ts: float, figure: str, tier: str, value_ms: float
) -> None:
    """The value counted in its bin, and added to the sum, in the histogram of every level."""

    def name(size: int, start: int) -> str:
        return h.keys.histogram_bucket(figure, tier, size, start)

    keys = expect_buckets(h, expected, ts, name)
    if figure in ALL_TIME_FIGURES:  # and for all time, for /metrics
        keys.append(h.keys.histogram_totals(figure, tier))
    for key in keys:
        histogram = expected.setdefault(key, {})
        histogram[str(bin_index(value_ms))] = int(histogram.get(str(bin_index(value_ms)), 0)) + 1
        histogram[HISTOGRAM_SUM] = float(histogram.get(HISTOGRAM_SUM, 0.0)) + value_ms


def assert_stored_exactly(before: Snapshot, after: Snapshot, expected: Snapshot) -> None:
    """Nothing but the expected changes: `expected` is `before` plus the event."""
    assert set(after) == set(expected)
    for key, value in expected.items():
        if ":h:" in key:  # a histogram: exact bins, and a sum kept to SUM_STEP_MS (batch.py)
            stored = {field: float(amount) for field, amount in after[key].items()}
            wanted = {field: float(amount) for field, amount in value.items()}
            stored_sum, wanted_sum = stored.pop(HISTOGRAM_SUM), wanted.pop(HISTOGRAM_SUM)
            assert stored_sum == pytest.approx(wanted_sum, abs=SUM_STEP_MS / 2), key
            assert stored == wanted, key
        else:
            assert after[key] == value, key


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def harness(settings: Settings) -> Iterator[StoreHarness]:
    h = make_harness("redis", settings, T0)
    yield h
    h.close()


OFFSETS = st.one_of(st.sampled_from([0.0, 4.75, 5.0, 34.999]), st.floats(0, 120))


def attempt(h: StoreHarness, call: Callable[[], None], bad: str | None) -> None:
    """Run the call; if `bad` names a field, assert the ValueError names it."""
    event(f"refused: {bad}" if bad else "stored")  # --hypothesis-show-statistics shows the mix
    if bad is None:
        call()
        return
    with pytest.raises(ValueError, match=rf"^{bad}: ") as raised:
        call()
    assert getattr(raised.value, "field", None) == bad


def settle(h: StoreHarness) -> Snapshot:
    h.collector.flush(timeout_s=10)
    assert h.collector.pending_events == 0
    h.fold()  # the bins the feed holds, into their hashes
    return snapshot(h)


# --- the properties -----------------------------------------------------------------------------
@given(
    offset=OFFSETS,
    tier=names(TIERS),
    latency_ms=numbers(MAX_MS),
    tokens=counts(),
    generation_ms=numbers(MAX_MS),
    is_error=flags(),
)
def test_record_query_refuses_whole_or_stores_exactly(
    harness: StoreHarness,
    offset: float,
    tier: object,
    latency_ms: object,
    tokens: object,
    generation_ms: object,
    is_error: object,
) -> None:
    h = harness
    h.clock.set(ts := T0 + offset)
    before = snapshot(h)
    bad = first_bad([
        ("tier", is_name(tier, TIERS)),
        ("latency_ms", is_number(latency_ms, MAX_MS)),
        ("tokens_generated", is_count(tokens)),
        ("generation_time_ms", is_number(generation_ms, MAX_MS)),
        ("is_error", is_flag(is_error)),
    ])  # fmt: skip
    call = lambda: h.collector.record_query(tier, latency_ms, tokens, generation_ms, is_error)  # type: ignore[arg-type]  # noqa: E731
    attempt(h, call, bad)
    after = settle(h)
    if bad is not None:
        assert after == before
        return
    assert isinstance(tier, str) and isinstance(is_error, bool)
    tier = str.__str__(tier)
    latency, generation = as_stored(latency_ms), as_stored(generation_ms)
    count = int(tokens)  # type: ignore[call-overload]
    entry = expect_stream_entry(before, after, h.keys.query_stream)
    assert entry == {
        "ts": repr(ts), "node": "node-a", "tier": tier, "latency_ms": repr(latency),
        "tokens": str(count), "generation_ms": repr(generation), "error": str(int(is_error)),
    }  # fmt: skip
    assert float(entry["latency_ms"]) == latency and float(entry["generation_ms"]) == generation
    assert float(entry["ts"]) == ts and int(entry["tokens"]) == count

    expected = copy.deepcopy(before)
    expected[h.keys.query_stream] = after[h.keys.query_stream]
    for key in expect_buckets(h, expected, ts, h.keys.query_bucket):
        add(expected, key, member(QUERY_COUNT, tier), 1)
        add(expected, key, member(QUERY_LATENCY_MS, tier), latency)
        if is_error:
            add(expected, key, member(QUERY_ERRORS, tier), 1)
    add_totals(expected, h.keys.totals, {
        member(TOTAL_QUERIES, tier, str(int(is_error))): 1,
        member(TOTAL_TOKENS, tier): count,
        member(TOTAL_LATENCY_MS, tier): latency,
    })  # fmt: skip
    expect_histogram(h, expected, ts, FIGURE_LATENCY, tier, latency)
    recent = h.keys.recent_queries(tier)
    newest = f"{count} {generation!r} {latency!r} {ts!r}"  # the stamp merges shards
    expected[recent] = [newest, *before.get(recent, [])][: h.settings.retention.sparkline_points]
    assert_stored_exactly(before, after, expected)


@given(
    offset=OFFSETS,
    complexity=names(COMPLEXITIES),
    tier=names(TIERS),
    score=numbers(MAX_SCORE),
    decision_ms=numbers(MAX_MS),
    is_fallback=flags(),
)
def test_record_routing_decision_refuses_whole_or_stores_exactly(
    harness: StoreHarness,
    offset: float,
    complexity: object,
    tier: object,
    score: object,
    decision_ms: object,
    is_fallback: object,
) -> None:
    h = harness
    h.clock.set(ts := T0 + offset)
    before = snapshot(h)
    bad = first_bad([
        ("complexity", is_name(complexity, COMPLEXITIES)),
        ("tier", is_name(tier, TIERS)),
        ("score", is_number(score, MAX_SCORE)),
        ("decision_time_ms", is_number(decision_ms, MAX_MS)),
        ("is_fallback", is_flag(is_fallback)),
    ])  # fmt: skip
    record = h.collector.record_routing_decision
    call = lambda: record(complexity, tier, score, decision_ms, is_fallback)  # type: ignore[arg-type]  # noqa: E731
    attempt(h, call, bad)
    after = settle(h)
    if bad is not None:
        assert after == before
        return
    assert isinstance(complexity, str) and isinstance(tier, str)
    assert isinstance(is_fallback, bool)
    complexity, tier = str.__str__(complexity), str.__str__(tier)
    points, ms = as_stored(score), as_stored(decision_ms)
    entry = expect_stream_entry(before, after, h.keys.routing_stream)
    assert entry == {
        "ts": repr(ts), "node": "node-a", "complexity": complexity, "tier": tier,
        "score": repr(points), "decision_ms": repr(ms), "fallback": str(int(is_fallback)),
    }  # fmt: skip
    assert float(entry["score"]) == points and float(entry["decision_ms"]) == ms

    expected = copy.deepcopy(before)
    expected[h.keys.routing_stream] = after[h.keys.routing_stream]
    for key in expect_buckets(h, expected, ts, h.keys.routing_bucket):
        add(expected, key, member(ROUTING_COUNT, complexity, tier), 1)
        add(expected, key, member(ROUTING_SCORE, complexity, tier), points)
        add(expected, key, ROUTING_DECISION_MS, ms)
        if is_fallback:
            add(expected, key, ROUTING_FALLBACKS, 1)
    fallback = str(int(is_fallback))  # type: ignore[call-overload]
    add_totals(expected, h.keys.totals, {member(TOTAL_ROUTING, complexity, tier, fallback): 1})
    assert_stored_exactly(before, after, expected)


@given(tier=names(TIERS), available=counts(), total=counts())
def test_update_model_availability_refuses_whole_or_stores_exactly(
    harness: StoreHarness, tier: object, available: object, total: object
) -> None:
    h = harness
    before = snapshot(h)
    bad = first_bad([
        ("tier", is_name(tier, TIERS)),
        ("available", is_count(available)),
        ("total", is_count(total)),
        ("available", is_count(available) and is_count(total) and available <= total),  # type: ignore[operator]
    ])  # fmt: skip
    call = lambda: h.collector.update_model_availability(tier, available, total)  # type: ignore[arg-type]  # noqa: E731
    attempt(h, call, bad)
    after = settle(h)
    if bad is not None:
        assert after == before
        return
    expected = copy.deepcopy(before)
    stored = f"{int(available)}/{int(total)}"  # type: ignore[call-overload]
    expected.setdefault(h.keys.availability, {})[f"node-a:{tier}"] = stored
    assert_stored_exactly(before, after, expected)
    parsed = after[h.keys.availability][f"node-a:{tier}"].split("/")
    assert [int(part) for part in parsed] == [available, total]
