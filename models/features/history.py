"""Users' item histories for offline replays: what the stream keeps in each user's state, kept in memory.

The item statistics learn from ``Learned`` records: a user's distinct items before a batch (first-arrival
order) and the batch's events. The stream worker builds them from the user's state, which arrives with every
event, so the worker keeps nothing per user. The trainer and the offline evaluation replay a log and have no
user state: a ``HistoryBook`` keeps the same lists for them, and turns a time-ordered run of events into the
same records, so training, evaluation and serving count exactly alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

SEEN_MAX = 2000  # as the stream state's ``seen`` bound (stream.state.Limits.seen_max)


@dataclass(frozen=True)
class Learned:
    """One user's newly learned events, and what the statistics knew of the user before them."""

    user: Hashable
    history: Sequence[int]  # the user's distinct items before these events, first arrival first (indices)
    events: Sequence[tuple]  # (item index, seconds, rating or None[, count weight]), in order


class HistoryBook:
    """Per user, distinct item indices in first-arrival order (bounded like the stream's ``seen``)."""

    def __init__(self, limit: int = SEEN_MAX) -> None:
        self.limit = limit
        self._items: dict[Hashable, list[int]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def history(self, user: Hashable) -> list[int]:
        return self._items.get(user, [])

    def users(self) -> list[Hashable]:
        return list(self._items)

    def forget(self, user: Hashable) -> None:
        self._items.pop(user, None)

    def set(self, user: Hashable, items: Sequence[int]) -> None:
        self._items[user] = list(items)

    def records(self, users: Sequence[Hashable], items: Sequence[int], ts: Sequence[float],
                values: Sequence[float | None] | None = None,
                weights: Sequence[float] | None = None) -> list[Learned]:
        """Time-ordered events -> one record per user (their events in order), and the book moved past them.

        ``weights``: each event's count weight (``ItemStats.learn``), carried as a fourth element."""
        grouped: dict[Hashable, list[tuple]] = {}
        for n, (user, item, t) in enumerate(zip(users, items, ts)):
            event = (int(item), float(t), None if values is None else values[n])
            grouped.setdefault(user, []).append(event if weights is None else (*event, float(weights[n])))
        out = []
        for user, events in grouped.items():
            before = self._items.get(user, [])
            out.append(Learned(user, tuple(before), tuple(events)))
            self._items[user] = extend_history(before, [e[0] for e in events], self.limit)
        return out


def extend_history(history: Sequence[int], items: Sequence[int], limit: int = SEEN_MAX) -> list[int]:
    """``history`` with ``items``' new ones appended in order (repeats keep their first place), bounded."""
    out = list(history)
    has = set(out)
    for item in items:
        if item not in has:
            has.add(item)
            out.append(item)
    return out[-limit:] if len(out) > limit else out
