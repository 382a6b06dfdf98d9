"""The commit watch: a partition with events waiting behind an unmoving commit is reported once, and recovers
by itself when the commit moves; idle partitions and moving commits are never stalls."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from stream.commit_watch import CommitWatch, PartitionCommit
from stream.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def at(committed: int | None, end: int | None) -> PartitionCommit:
    return PartitionCommit(committed=committed, end=end)


def test_a_commit_that_does_not_move_while_events_wait_is_reported_once_then_recovers():
    clock = Clock()
    watch = CommitWatch(stall_s=30, clock=clock)
    tp = ("in", 3)
    assert watch.check({tp: at(251, 300)}) == ([], [])
    clock.now = 29
    assert watch.check({tp: at(251, 400)}) == ([], [])
    clock.now = 31
    assert watch.check({tp: at(251, 500)}) == ([tp], [])
    assert watch.stalled == {tp: 31}
    clock.now = 60
    assert watch.check({tp: at(251, 500)}) == ([], []), "one report per stall"
    assert watch.stalled == {tp: 60}, "still stalled, and for longer"
    clock.now = 65
    assert watch.check({tp: at(480, 500)}) == ([], [tp]), "the commit moved: recovered, nobody restarted"
    assert watch.stalled == {}
    clock.now = 96
    assert watch.check({tp: at(480, 500)}) == ([tp], []), "stuck again: reported again"


def test_an_idle_partition_or_a_moving_commit_is_never_a_stall():
    clock = Clock()
    watch = CommitWatch(stall_s=30, clock=clock)
    for step in range(20):
        clock.now = step * 10.0
        assert watch.check({("in", 0): at(step * 100, step * 100 + 50), ("in", 1): at(7, 7),
                            ("in", 2): at(None, 0)}) == ([], [])


def test_the_stall_clock_starts_when_events_arrive_not_when_the_commit_last_moved():
    clock = Clock()
    watch = CommitWatch(stall_s=30, clock=clock)
    tp = ("in", 0)
    watch.check({tp: at(40, 40)})
    clock.now = 3600.0  # an hour idle, then an event arrives
    assert watch.check({tp: at(40, 41)}) == ([], [])
    clock.now = 3629.0
    assert watch.check({tp: at(40, 41)}) == ([], [])
    clock.now = 3631.0
    assert watch.check({tp: at(40, 41)}) == ([tp], [])


def test_a_partition_nobody_consumes_is_a_stall_and_an_unknown_end_changes_nothing():
    """Never committed and never consumed (no member holds it): the watch sees it from any worker."""
    clock = Clock()
    watch = CommitWatch(stall_s=30, clock=clock)
    tp = ("in", 2)
    watch.check({tp: at(None, 12)})
    clock.now = 40
    assert watch.check({tp: at(None, None)}) == ([], []), "the probe did not answer: no verdict"
    assert watch.check({tp: at(None, 12)}) == ([tp], [])


def test_the_metrics_say_which_partitions_are_stalled_and_where_every_partition_stands():
    metrics = Metrics(CollectorRegistry())
    sample = metrics.registry.get_sample_value
    commits = {("in", 0): at(10, 12), ("in", 1): at(None, 0)}
    metrics.observe_commits(commits, {("in", 0)}, {("in", 1): (None, None), ("in", 0): (11, 11)})
    assert sample("metarec_commit_stalled", {"topic": "in", "partition": "0"}) == 1
    assert sample("metarec_commit_stalled", {"topic": "in", "partition": "1"}) == 0
    assert sample("metarec_partition_offset", {"topic": "in", "partition": "0", "kind": "end"}) == 12
    assert sample("metarec_partition_offset", {"topic": "in", "partition": "0", "kind": "finished"}) == 11
    metrics.observe_commits({("in", 0): at(12, 12), ("in", 1): at(None, 0)}, set(), {})
    assert sample("metarec_commit_stalled", {"topic": "in", "partition": "0"}) == 0, "it clears by itself"
    assert sample("metarec_partition_offset", {"topic": "in", "partition": "0", "kind": "finished"}) is None, (
        "a partition no longer held loses this worker's series")
