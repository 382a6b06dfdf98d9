"""metarec's own record of how far each source partition is finished: what the worker commits.

The handler (stream/handler.py) finishes batches one at a time and in order, and a batch holds each partition's
messages in offset order, so once a batch is flushed and acked, every message of its partitions up to the
batch's last offset is done. That offset + 1 is what may be committed, whatever offsets the broker left out
between messages (the embedded broker leaves such gaps) and whatever Faust's own bookkeeping holds: Faust's
commit rule (``Consumer._new_offset``) walks its acked offsets from the committed one and stalls at a missing
offset it has no gap record for, or steps over one it never saw acked (tests/unit/stream/test_faust_pins.py pins
both). stream/faust_compat.py makes the consumer commit from this record instead.

Keys are ``(topic, partition)`` tuples, which compare and hash like Faust's ``TP``.
"""

from __future__ import annotations

import logging
from typing import Iterable, Iterator, Mapping

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class FinishedOffsets:
    """Per source partition, the offset after the last message whose batch is finished (flushed and acked)."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)  # the topics whose commits follow this record
        self._next: dict[Partition, int] = {}

    def finish(self, last: Mapping[Partition, int]) -> None:
        """A batch is finished: ``last`` is its highest offset per partition. The record never goes back: a
        batch re-read after a rebalance or restart is behind what was finished before."""
        for tp, offset in last.items():
            if offset + 1 > self._next.get(tp, -1):
                self._next[tp] = offset + 1

    def next_offset(self, tp: Partition) -> int | None:
        """The offset to commit for ``tp`` (every message before it is finished), or None if none is known."""
        return self._next.get(tp)

    def forget(self, tps: Iterable[Partition]) -> None:
        """The partitions were revoked: another member may go on with them, so what we finished is no longer
        where they stand. After the next assignment the record starts again from what is finished then."""
        for tp in tps:
            self._next.pop(tp, None)

    def partitions(self) -> Iterator[Partition]:
        return iter(list(self._next))


def last_offsets(positions: Iterable[tuple[str, int, int]]) -> dict[Partition, int]:
    """The highest offset per partition among ``(topic, partition, offset)`` positions."""
    last: dict[Partition, int] = {}
    for topic, partition, offset in positions:
        tp = (topic, partition)
        if offset > last.get(tp, -1):
            last[tp] = offset
    return last
