"""The commit watch reports a partition whose commit is stuck behind acked work, once, and only that."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from intervaltree import IntervalTree

from stream.commit_watch import CommitView, CommitWatch, unacked, view


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def v(committed: int | None, acked: int) -> CommitView:
    return CommitView(committed=committed, read=None, acked_min=None if not acked else 100, acked=acked, gaps=())


def test_a_commit_stuck_behind_acked_offsets_is_reported_once_after_the_stall_time():
    clock = Clock()
    watch = CommitWatch(stall_s=30, clock=clock)
    assert watch.check([("p0", v(251, 5))]) == []
    clock.now = 29
    assert watch.check([("p0", v(251, 40))]) == []
    clock.now = 31
    stalled = watch.check([("p0", v(251, 90))])
    assert [(tp, age) for tp, _, age in stalled] == [("p0", 31)]
    clock.now = 60
    assert watch.check([("p0", v(251, 120))]) == [], "one report per stall"


def test_a_moving_commit_or_an_idle_partition_is_not_a_stall():
    clock = Clock()
    watch = CommitWatch(stall_s=30, clock=clock)
    for step in range(10):
        clock.now = step * 10.0
        assert watch.check([("moving", v(step * 100, 5)), ("idle", v(7, 0))]) == []


def test_a_stall_is_reported_again_after_the_commit_moved_and_stuck_again():
    clock = Clock()
    watch = CommitWatch(stall_s=30, clock=clock)
    watch.check([("p0", v(1, 1))])
    clock.now = 40
    assert len(watch.check([("p0", v(1, 1))])) == 1
    clock.now = 41
    assert watch.check([("p0", v(9, 1))]) == []
    clock.now = 80
    assert len(watch.check([("p0", v(9, 1))])) == 1


def test_view_reads_faust_bookkeeping_without_changing_it():
    tp, other = ("t", 3), ("t", 0)
    gaps = IntervalTree()
    gaps.addi(260, 262)
    consumer = SimpleNamespace(
        _acked=defaultdict(list, {tp: [270, 265, 266]}),
        _gap=defaultdict(IntervalTree, {tp: gaps}),
        _read_offset=defaultdict(lambda: None, {tp: 280}),
        _committed_offset=defaultdict(lambda: None, {tp: 251}),
        _unacked_messages=[SimpleNamespace(tp=tp, offset=251), SimpleNamespace(tp=other, offset=1)],
    )
    got = view(consumer, tp)
    assert got == CommitView(committed=251, read=280, acked_min=265, acked=3, gaps=((260, 262),))
    assert unacked(consumer, tp) == [251]
    assert got.waiting
    assert view(consumer, other).waiting is False
    assert other not in consumer._acked and other not in consumer._gap, "reading must not create entries"
