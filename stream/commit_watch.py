"""Watch for a stalled commit: events were processed and acked, but the committed offset does not move.

Faust commits a partition up to the first offset it has not seen acked (``Consumer._new_offset``). One event that
is never acked (lost between the fetcher and the agent, or held by a batch that never finishes) therefore holds
the partition's commit where it is forever, silently: the worker keeps processing, and only a restart re-reads
everything after the hole. This watch makes that visible. It reads Faust's offset bookkeeping (private: read
through stream/faust_compat.py) and, when a partition has acked offsets beyond its committed one but its
commit has not moved for ``stall_s``, logs one warning with what it saw and counts it in
``metarec_commit_stalls_total``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from stream.faust_compat import commit_bookkeeping, unacked_offsets

log = logging.getLogger(__name__)

STALL_S = 30.0


@dataclass(frozen=True)
class CommitView:
    """What Faust's consumer knows about one partition's commit."""

    committed: int | None  # next offset to read, as last committed
    read: int | None  # highest offset handed to the streams
    acked_min: int | None  # lowest acked offset waiting to be committed
    acked: int  # how many acked offsets wait
    gaps: tuple[tuple[int, int], ...]  # offset ranges known not to exist, [begin, end)

    @property
    def waiting(self) -> bool:
        """Acked work lies beyond the committed offset: the commit should move."""
        return self.acked > 0


def view(consumer: Any, tp: Any) -> CommitView:
    """Faust's bookkeeping for ``tp``, read without changing it."""
    committed, read, acked, gaps = commit_bookkeeping(consumer, tp)
    return CommitView(
        committed=committed,
        read=read,
        acked_min=min(acked) if acked else None,
        acked=len(acked),
        gaps=tuple(sorted(gaps))[:8],
    )


def unacked(consumer: Any, tp: Any) -> list[int]:
    """The lowest offsets of ``tp`` handed to the streams and not acked yet: read only for a stalled partition
    (it walks every message in flight)."""
    return sorted(unacked_offsets(consumer, tp))[:8]


class CommitWatch:
    """Remembers when each partition's commit last moved; reports partitions stalled with acked work waiting."""

    def __init__(self, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._last: dict[Any, tuple[int | None, float]] = {}  # tp -> (committed, since when)
        self._reported: set[Any] = set()

    def check(self, views: Iterable[tuple[Any, CommitView]]) -> list[tuple[Any, CommitView, float]]:
        """The partitions newly found stalled, with how long their commit has not moved."""
        now, stalled = self._clock(), []
        for tp, v in views:
            committed, since = self._last.get(tp, (None, now))
            if v.committed != committed or not v.waiting:
                self._last[tp] = (v.committed, now)
                self._reported.discard(tp)
                continue
            self._last[tp] = (committed, since)
            if now - since >= self.stall_s and tp not in self._reported:
                self._reported.add(tp)
                stalled.append((tp, v, now - since))
        return stalled


def install_commit_watch(app: Any, topics: Iterable[str], on_stall: Callable[[], None],
                         interval_s: float = 5.0, stall_s: float = STALL_S) -> CommitWatch:
    """A Faust timer that checks the app's assigned partitions of ``topics`` every ``interval_s``."""
    watch, wanted = CommitWatch(stall_s), set(topics)

    @app.timer(interval_s)
    async def metarec_commit_watch() -> None:
        consumer = app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic in wanted]
        for tp, v, age in watch.check((tp, view(consumer, tp)) for tp in tps):
            on_stall()
            log.warning("commit of %s:%d has not moved for %.0fs although %d acked offsets wait beyond it: "
                        "committed %s, lowest acked %s, read up to %s, gaps %s, lowest unacked %s", tp.topic,
                        tp.partition, age, v.acked, v.committed, v.acked_min, v.read, list(v.gaps), unacked(consumer, tp))

    return watch
