"""metarec's record of finished offsets: what the worker commits, per source partition."""

from __future__ import annotations

from faust.types import TP

from stream.finished_offsets import FinishedOffsets, last_offsets


def test_a_finished_batch_makes_each_partition_committable_after_its_last_offset_gaps_or_not():
    finished = FinishedOffsets(["in"])
    finished.finish(last_offsets([("in", 0, 5), ("in", 1, 40), ("in", 0, 9), ("in", 1, 38)]))
    assert finished.next_offset(("in", 0)) == 10  # 6..8 never existed: nothing waits for them
    assert finished.next_offset(TP("in", 1)) == 41, "Faust's TP is the same key"
    assert finished.next_offset(("in", 2)) is None


def test_the_record_never_goes_back_and_forgets_revoked_partitions():
    finished = FinishedOffsets(["in"])
    finished.finish({("in", 0): 100, ("in", 1): 7})
    finished.finish({("in", 0): 60})  # a batch re-read after a restart, behind what was finished
    assert finished.next_offset(("in", 0)) == 101
    finished.forget([TP("in", 0)])
    assert finished.next_offset(("in", 0)) is None
    assert sorted(finished.partitions()) == [("in", 1)]
