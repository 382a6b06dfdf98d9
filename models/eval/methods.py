"""What a method must offer to be replayed by the stream-order (test-then-train) protocol.

The interface is narrow, like river's ``reco`` API: a method never sees where events come from, only the calls
below in stream order. The protocol guarantees that ``rank``/``predict_rating`` for an event come before that
event (and every later one) is given to ``learn``; a method can therefore not peek at the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from models.data.events import EventLog


@runtime_checkable
class StreamMethod(Protocol):
    """One recommender under evaluation; items and users are the EventLog's dense indices."""

    name: str

    def fit_prefix(self, log: EventLog) -> None:
        """Warm up on the events before evaluation starts (in time order; ``log`` carries the side tables)."""

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        """The user's top-``k`` items, best first, none of them in ``exclude``."""

    def predict_rating(self, user: int, item: int) -> float | None:
        """The rating the method expects before learning the event; None if it predicts no ratings."""

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        """Take one event into the method's state (``value`` is NaN when the event carries none)."""


class Pending(NamedTuple):
    """One of the user's events that comes before the one being predicted but has not been learned yet."""

    item: int
    value: float
    type_code: int
    ts: float


@dataclass(frozen=True)
class Query:
    """A ranking request of a chunk: the user, their excluded items, and their pending earlier events."""

    user: int
    exclude: set[int]  # every item the user had before the predicted event (pending ones included)
    pending: tuple[Pending, ...] = ()  # the user's earlier events in this chunk, oldest first


@runtime_checkable
class BatchRanker(Protocol):
    """A method whose list for a user depends only on state frozen within a chunk and the user's events.

    metarec is one: its meta-parameters change only when it is re-trained, and a user's list comes from
    adapting the frozen init on the user's own events. Such a method can rank a whole chunk of consecutive
    events in one batched call, before learning any of them, and get exactly the lists that ranking them one
    by one between learns would give, provided each query also brings the user's ``pending`` events: those
    earlier in the chunk, which one-by-one replay would have learned already. ``events_until_refresh`` bounds
    a chunk: how many more events may be learned before the shared state changes (e.g. a scheduled
    re-training); None means never.
    """

    def rank_many(self, queries: Sequence[Query], k: int) -> list[list[int]]:
        """``rank`` for each query, as if its pending events had been learned."""

    def predict_many(self, queries: Sequence[Query], items: Sequence[int]) -> list[float | None]:
        """``predict_rating`` of ``items[n]`` for ``queries[n]``, as if its pending events were learned."""

    def events_until_refresh(self) -> int | None:
        """Events that can still be learned before the shared state changes (None: never)."""


def retrain_period(prefix_events: int, every: int | None = None) -> int:
    """Learned events between re-trainings: ``every``, or half the warm-up (metarec's schedule, which the
    re-trained peers share)."""
    return every or max(1, prefix_events // 2)


def top_k(scores: np.ndarray, k: int, exclude: set[int], priority: np.ndarray,
          fallback: np.ndarray | None = None) -> list[int]:
    """The ``k`` best-scoring items not in ``exclude``; equal scores go by ``fallback`` (higher first, when
    given: a peer's cold fallback, e.g. position popularity), then by ``priority`` (higher first).

    A fixed random ``priority`` breaks ties instead of the item index, since dense indices follow the data
    file's order and would leak it into methods that score many items alike (popularity early on, cold users).
    Items scored ``-inf`` are never returned, so a list can be shorter than ``k``.
    """
    s = scores.astype(np.float64, copy=True)  # (n_items,)
    if exclude:
        s[np.fromiter(exclude, np.int64, len(exclude))] = -np.inf
    valid = int(np.count_nonzero(s > -np.inf))
    k = min(k, valid)
    if k <= 0:
        return []
    kth = np.partition(s, len(s) - k)[len(s) - k]  # the k-th largest score
    above = np.flatnonzero(s > kth)
    tied = np.flatnonzero(s == kth)
    keys = [-priority] if fallback is None else [-priority, -fallback]  # np.lexsort: the last key first
    tied = tied[np.lexsort([key[tied] for key in keys])][: k - len(above)]
    chosen = np.concatenate([above, tied])
    order = np.lexsort([*(key[chosen] for key in keys), -s[chosen]])
    return chosen[order].tolist()
