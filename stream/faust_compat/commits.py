"""The consumer's commit bookkeeping, and commits from metarec's record of finished offsets (points 5, 6).

Why each reach into Faust is needed: the package docstring (stream/faust_compat/__init__.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import faust
from faust.types import TP

from stream.finished_offsets import FinishedOffsets


# --- 5. the consumer's commit bookkeeping ------------------------------------------------------------------
def commit_bookkeeping(consumer: Any,
                       tp: Any) -> tuple[int | None, int | None, list[int], list[tuple[int, int]]]:
    """(committed offset, highest offset read, acked offsets waiting, offset gaps [begin, end)) of ``tp``.

    Faust commits a partition up to the first offset it has not seen acked (``Consumer._new_offset``). Its
    fields are defaultdicts: read with ``get`` so that looking does not create entries.
    """
    acked = consumer._acked.get(tp) or ()
    gap_tree = consumer._gap.get(tp)
    gaps = [(iv.begin, iv.end) for iv in gap_tree] if gap_tree else []
    return consumer._committed_offset.get(tp), consumer._read_offset.get(tp), list(acked), gaps


def unacked_offsets(consumer: Any, tp: Any) -> list[int]:
    """Offsets of ``tp`` handed to the streams and not acked yet (walks every message in flight)."""
    return [m.offset for m in list(consumer._unacked_messages) if m.tp == tp]


# --- 6. commits from metarec's record of finished offsets --------------------------------------------------
def commit_finished_offsets(app: faust.App, finished: FinishedOffsets) -> None:
    """Make ``app``'s consumer commit each partition of ``finished.topics`` up to where the worker finished it.

    Faust's commit (``Consumer.force_commit``) asks ``_filter_tps_with_pending_acks`` which partitions to look
    at, ``_new_offset`` where each may be committed, keeps the offsets beyond the committed one
    (``_should_commit``) and sends those of assigned partitions. Here ``_new_offset`` answers from ``finished``
    for our topics (and trims Faust's acked list, which its own rule would have consumed), every partition in
    ``finished`` is looked at, and revoked partitions are forgotten once Faust has committed them on the way
    out. Other topics keep Faust's rule.
    """
    base: type = app.transport.Consumer

    class FinishedOffsetsConsumer(base):  # type: ignore[misc, valid-type]
        def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
            tps = set(super()._filter_tps_with_pending_acks(topics))
            for topic, partition in finished.partitions():
                tp = TP(topic, partition)
                if topics is None or tp in topics or topic in topics:
                    tps.add(tp)
            return iter(tps)

        def _new_offset(self, tp: TP) -> int | None:
            if tp.topic not in finished.topics:
                return super()._new_offset(tp)
            done = finished.next_offset(tp)
            if done is not None:
                _drop_acked_below(self, tp, done)
            return done

        async def on_partitions_revoked(self, revoked: set[TP]) -> None:
            await super().on_partitions_revoked(revoked)  # waits for the streams and commits, then lets go
            finished.forget(revoked)

    app.transport.Consumer = FinishedOffsetsConsumer


def _drop_acked_below(consumer: Any, tp: TP, offset: int) -> None:
    """Forget Faust's acked offsets and gap records of ``tp`` below ``offset`` (committed: nothing reads them)."""
    acked = consumer._acked.get(tp)
    if acked and min(acked) < offset:
        acked[:] = [o for o in acked if o >= offset]
        index = consumer._acked_index.get(tp)
        if index:
            index.intersection_update(acked)
    gaps = consumer._gap.get(tp)
    if gaps:
        gaps.chop(0, offset)
