"""Watch every partition of the group for a stalled commit: events wait (lag > 0) and the commit does not move.

A commit that stops moving is silent: the worker may go on processing, or the partition may not be consumed at
all (held by a member that hangs, or by none), and nothing after the committed offset would survive a restart
without being read again. The worker commits from its own record of finished offsets
(stream/finished_offsets.py), so no gap in the broker's offsets can hold a commit any more; this watch is the
check that it stays so, and it sees what the worker's own bookkeeping cannot:

- it looks at **every partition of the group's topics**, assigned to this worker, to another member or to
  none, reading the group's committed offset and the partition's true end from the broker (a small probe
  consumer on a thread; it never joins the group);
- a partition is **stalled** when its lag (end minus committed) stayed above 0 and its committed offset did not
  change for ``stall_s``; it **recovers** as soon as the commit moves or the lag is 0.

On a stall it logs one warning (with this worker's view of the partition when it holds it: what it read and
finished, Faust's acked offsets) and counts it in ``metarec_commit_stalls_total``; ``metarec_commit_stalled``
is 1 while it lasts and 0 again once the commit moves. ``metarec_partition_offset`` publishes what the watch
read (``committed``, ``end``) and, for the partitions this worker holds, how far it ``read`` and ``finished``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from stream.faust_compat import commit_bookkeeping, unacked_offsets
from stream.finished_offsets import FinishedOffsets, Partition

log = logging.getLogger(__name__)
_LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.librdkafka")

STALL_S = 30.0
INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartitionCommit:
    """What the broker says of one partition for the group."""

    committed: int | None  # the group's committed offset (the next to read); None: never committed
    end: int | None  # the offset after the partition's last record; None: not known (the probe timed out)

    @property
    def lag(self) -> int | None:
        return None if self.end is None else max(0, self.end - (self.committed or 0))


class CommitWatch:
    """Remembers since when each partition has had events waiting behind an unmoving commit."""

    def __init__(self, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._since: dict[Partition, tuple[int | None, float]] = {}  # tp -> (committed, waiting since)
        self.stalled: dict[Partition, float] = {}  # stalled partitions -> how long, as last reported

    def check(self, commits: Mapping[Partition, PartitionCommit]) -> tuple[list[Partition], list[Partition]]:
        """(partitions newly stalled, partitions recovered) after looking at ``commits``.

        A partition whose end is unknown keeps its state: the probe not answering says nothing about it.
        """
        now, new, recovered = self._clock(), [], []
        for tp, seen in commits.items():
            if seen.lag is None:
                continue
            committed, since = self._since.get(tp, (seen.committed, now))
            if seen.lag == 0 or seen.committed != committed:
                if seen.lag == 0:
                    self._since.pop(tp, None)  # nothing waits: the clock starts when something does
                else:
                    self._since[tp] = (seen.committed, now)
                if self.stalled.pop(tp, None) is not None:
                    recovered.append(tp)
                continue
            self._since[tp] = (committed, since)
            if now - since >= self.stall_s:
                if tp not in self.stalled:
                    new.append(tp)
                self.stalled[tp] = now - since
        return new, recovered


class GroupOffsets:
    """Reads, for every partition of ``topics``, the group's committed offset and the partition's true end.

    The end comes from a Fetch, not from ListOffsets: the embedded broker under-reports ListOffsets (the base
    offset of the last record batch plus one), while a Fetch at the committed offset either returns a record
    (events wait; the response's high watermark is the true end) or reports the partition's end right there.
    Blocking: call it off the event loop.
    """

    def __init__(self, kafka_config: Mapping[str, Any], group: str, topics: Iterable[str],
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.topics = sorted(set(topics))
        self.timeout_s = timeout_s
        self._consumer = Consumer({
            **kafka_config,
            "group.id": group,  # to read its commits; never subscribes, so it never joins the group
            "client.id": f"metarec-commit-watch-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "max.partition.fetch.bytes": 16384,  # one small fetch per partition says all it needs to
            "queued.max.messages.kbytes": 1024,
            "logger": _LIBRDKAFKA_LOG,
        })

    def read(self) -> dict[Partition, PartitionCommit]:
        tps = [TopicPartition(t, p) for t in self.topics for p in self._partitions(t)]
        if not tps:
            return {}
        committed = {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
            for tp in self._consumer.committed(tps, timeout=self.timeout_s)
        }
        ends = self._ends(committed)
        return {tp: PartitionCommit(committed[tp], ends.get(tp)) for tp in sorted(committed)}

    def close(self) -> None:
        self._consumer.close()

    def _partitions(self, topic: str) -> list[int]:
        meta = self._consumer.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    def _ends(self, committed: Mapping[Partition, int | None]) -> dict[Partition, int]:
        """Fetch once at each committed offset: a record means events wait, partition EOF means none do."""
        starts = {tp: OFFSET_BEGINNING if offset is None else offset for tp, offset in committed.items()}
        self._consumer.assign([TopicPartition(t, p, start) for (t, p), start in starts.items()])
        ends: dict[Partition, int] = {}
        deadline = time.monotonic() + self.timeout_s
        try:
            while len(ends) < len(starts) and (left := deadline - time.monotonic()) > 0:
                msg = self._consumer.poll(min(left, 0.5))
                if msg is None:
                    continue
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is None:
                    _low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
                    ends.setdefault(tp, max(high, msg.offset() + 1))
                elif err.code() == KafkaError._PARTITION_EOF:
                    ends.setdefault(tp, msg.offset())
        finally:
            self._consumer.unassign()
        return ends


def local_view(consumer: Any, finished: FinishedOffsets, tp: Any) -> dict[str, Any]:
    """This worker's view of a partition it holds: how far it read and finished, Faust's acked offsets."""
    committed, read, acked, gaps = commit_bookkeeping(consumer, tp)
    return {
        "read": read,
        "finished": finished.next_offset(tp),
        "faust_committed": committed,
        "faust_acked": sorted(acked)[:8],
        "faust_gaps": sorted(gaps)[:8],
        "unacked": sorted(unacked_offsets(consumer, tp))[:8],
    }


def install_commit_watch(app: Any, kafka_config: Mapping[str, Any], group: str, topics: Iterable[str],
                         finished: FinishedOffsets, metrics: Any, interval_s: float = INTERVAL_S,
                         stall_s: float = STALL_S) -> CommitWatch:
    """A Faust timer that checks every partition of ``topics`` for ``group`` every ``interval_s``.

    ``metrics`` is a :class:`stream.metrics.Metrics`; ``finished`` the worker's record of finished offsets.
    """
    watch, wanted = CommitWatch(stall_s), set(topics)
    probe: GroupOffsets | None = None

    @app.timer(interval_s)
    async def metarec_commit_watch() -> None:
        nonlocal probe
        if probe is None:
            probe = GroupOffsets(kafka_config, group, wanted)
        try:
            commits = await asyncio.to_thread(probe.read)
        except Exception as exc:  # noqa: BLE001 - a broker hiccup must not stop the worker; try again next time
            log.warning("commit watch could not read the group's offsets: %s", exc)
            return
        consumer = app.consumer
        held = {(tp.topic, tp.partition): tp for tp in consumer.assignment() if tp.topic in wanted}
        new, recovered = watch.check(commits)
        metrics.commit_stalls.inc(len(new))
        metrics.observe_commits(commits, set(watch.stalled), {
            tp: (commit_bookkeeping(consumer, held[tp])[1], finished.next_offset(tp)) for tp in held})
        for tp in new:
            seen = commits[tp]
            here = local_view(consumer, finished, held[tp]) if tp in held else "held by another member or none"
            log.warning("commit of %s:%d has not moved for %.0fs although %s events wait: committed %s, end %s; "
                        "this worker: %s", tp[0], tp[1], watch.stalled[tp], seen.lag, seen.committed, seen.end,
                        here)
        for tp in recovered:
            log.info("commit of %s:%d moves again: committed %s", tp[0], tp[1], commits[tp].committed)

    return watch
