"""The pieces of the replay after a failover, on their own (tests/test_failover.py runs the
whole of it against a real Sentinel group)."""

from __future__ import annotations

from metrics_store.record.event_buffer import FlushMarker
from metrics_store.record.events import Event
from metrics_store.record.in_hand import Batch
from metrics_store.record.replay import PrimaryWatch, RecentlyWritten


def query(ts_s: float) -> Event:
    return ("q", ts_s, "Q2", 10.0, 1, 1.0, False, None, None)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_the_watch_tells_each_move_of_the_primary_once() -> None:
    watch = PrimaryWatch()
    watch.look("10.0.0.1:6379")  # the first answer is where the collector starts, no move
    assert not watch.take_change()
    watch.look(None)  # no answer (the sentinels unreachable) says nothing
    watch.look("10.0.0.1:6379")
    assert not watch.take_change()
    watch.look("10.0.0.2:6379")
    watch.look("10.0.0.2:6379")
    assert watch.take_change()
    assert not watch.take_change()
    watch.look("10.0.0.1:6379")  # and back
    assert watch.take_change()


def test_written_batches_are_kept_for_the_replay_window_and_then_forgotten() -> None:
    ticks = Ticks()
    recent = RecentlyWritten(keep_s=10.0, now=ticks)
    first = Batch([query(1.0), query(2.0)], [FlushMarker(0)], batch_id="first", refused=3)
    recent.add(first)
    ticks.now_s += 6.0
    recent.add(Batch([query(3.0)], [], batch_id="second"))
    recent.add(Batch([], [FlushMarker(0)], batch_id="only a marker"))  # nothing to write again
    assert recent.events == 3
    ticks.now_s += 5.0
    recent.add(Batch([query(4.0)], [], batch_id="third"))  # the first is 11 s older: gone
    kept = recent.take_all()
    assert [batch.batch_id for batch in kept] == ["second", "third"]
    assert recent.take_all() == [] and recent.events == 0  # taken: the keeper starts over


def test_an_outage_keeps_the_last_batches_however_long_it_lasts() -> None:
    # Nothing is written while the primary is down: the window counts back from the newest
    # batch, so what the dying primary took last is still there when the new one is named.
    ticks = Ticks()
    recent = RecentlyWritten(keep_s=10.0, max_age_s=1800.0, now=ticks)
    recent.add(Batch([query(1.0)], [], batch_id="before the crash"))
    ticks.now_s += 300.0  # five minutes of outage, longer than the window
    assert [batch.batch_id for batch in recent.take_all()] == ["before the crash"]
    recent.add(Batch([query(2.0)], [], batch_id="old"))
    ticks.now_s += 1801.0  # but never past half the id markers' life: it could count twice
    assert recent.take_all() == []


def test_the_keeper_holds_at_most_its_cap_of_events() -> None:
    ticks = Ticks()
    recent = RecentlyWritten(keep_s=60.0, max_events=5, now=ticks)
    for n in range(4):
        recent.add(Batch([query(1.0), query(2.0)], [], batch_id=f"b{n}"))
    assert recent.events == 4 and recent.dropped == 4  # the oldest two let go, counted
    assert [batch.batch_id for batch in recent.take_all()] == ["b2", "b3"]


def test_a_kept_batch_is_the_same_write_without_its_settled_markers() -> None:
    recent = RecentlyWritten(keep_s=60.0, now=Ticks())
    batch = Batch([query(1.0)], [FlushMarker(0)], shard=2, batch_id="b1", refused=1, faults=1)
    recent.add(batch)
    (kept,) = recent.take_all()
    # The same id and content, so Redis's id marker makes it count once wherever it survived.
    assert (kept.events, kept.shard, kept.batch_id, kept.refused) == (batch.events, 2, "b1", 1)
    assert kept.markers == [] and kept.faults == 0


def test_a_window_of_zero_keeps_nothing() -> None:
    recent = RecentlyWritten(keep_s=0.0, now=Ticks())
    recent.add(Batch([query(1.0)], []))
    assert recent.take_all() == []
