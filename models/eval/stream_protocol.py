"""Stream-order evaluation (test-then-train, "prequential"): every event is predicted before it is learned.

Events are replayed in timestamp order (ties in file order, or shuffled by ``shuffle_ties``: half of
MovieLens-100K's events share their second with the same user's previous one, so the file's row order would
otherwise decide every position and transition). The first ``warmup_fraction`` of them is handed
to every method at once through ``fit_prefix`` and not scored. After that, for each event, before it is
learned:

- the method ranks the whole catalogue for the event's user, minus the items the user already interacted with
  (warm-up included); a hit is the event's item among the top ``k``;
- on explicit data the method predicts the event's rating (MAE/RMSE, and both again with the prediction moved
  to the nearest level of the rating scale seen in the warm-up: ``models.eval.metrics``).

A method with ``ranks = False`` (a rating predictor only) is asked for ratings and never for lists.

Repeat interactions (the user already had the item) are not evaluation points, as is usual for next-item
evaluation: the item is excluded from the user's list, so it could never be a hit. They are still learned.

A method that implements ``BatchRanker`` is ranked chunk by chunk: a chunk is a run of consecutive events no
longer than the method's frozen state lasts; each query carries the user's earlier events of the chunk (not
yet learned), so the lists are the same as one by one. Every other method is ranked event by event.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from models.data.events import EventLog
from models.eval.methods import BatchRanker, Pending, Query, StreamMethod
from models.eval.metrics import BUCKETS, Accumulator, history_bucket, rating_scale

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # advance by this many events
MAX_CHUNK = 512


@dataclass(frozen=True)
class StreamPlan:
    """A time-ordered log, where scoring starts, and per event its user's history count and repeat flag."""

    log: EventLog
    start: int
    n_before: np.ndarray  # (E,) events the user had before this one
    repeat: np.ndarray  # (E,) bool: the user already had this item

    @property
    def prefix(self) -> EventLog:
        return self.log.take(np.arange(self.start))

    @property
    def scored(self) -> np.ndarray:
        """(E,) bool: the event is an evaluation point."""
        mask = ~self.repeat
        mask[: self.start] = False
        return mask

    def bucket_events(self) -> dict[str, int]:
        """How many evaluation points fall in each history bucket."""
        counts = dict.fromkeys(BUCKETS, 0)
        for n in self.n_before[self.scored]:
            counts[history_bucket(int(n))] += 1
        return counts


def shuffle_ties(log: EventLog, seed: int) -> EventLog:
    """``log`` in time order, events with equal timestamps in an order drawn from ``seed``."""
    return log.take(np.random.default_rng(seed).permutation(len(log))).sorted_by_time()


def plan_stream(log: EventLog, warmup_fraction: float = 0.2) -> StreamPlan:
    """Sort ``log`` by time; mark each event's user history length and whether it repeats an item."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    ordered = log.sorted_by_time()
    n_before = np.zeros(len(ordered), np.int64)
    repeat = np.zeros(len(ordered), bool)
    counts: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    for n, (user, item) in enumerate(zip(ordered.users.tolist(), ordered.items.tolist())):
        n_before[n] = counts.get(user, 0)
        counts[user] = n_before[n] + 1
        repeat[n] = (user, item) in seen
        seen.add((user, item))
    return StreamPlan(ordered, int(len(ordered) * warmup_fraction), n_before, repeat)


def _seen_sets(plan: StreamPlan) -> dict[int, set[int]]:
    seen: dict[int, set[int]] = {}
    for user, item in zip(plan.log.users[: plan.start].tolist(), plan.log.items[: plan.start].tolist()):
        seen.setdefault(user, set()).add(item)
    return seen


def replay(method: StreamMethod, plan: StreamPlan, k: int = 10,
           progress: Progress | None = None) -> Accumulator:
    """Warm ``method`` up on the prefix, then predict-then-learn every later event; returns metric sums and
    every scored (predicted, actual) rating, in stream order."""
    method.fit_prefix(plan.prefix)
    seen = _seen_sets(plan)
    acc = Accumulator(k=k, scale=rating_scale(plan.prefix.values) if plan.log.explicit else None)
    if isinstance(method, BatchRanker):
        _replay_chunks(method, plan, seen, acc, progress)
    else:
        _replay_events(method, plan, seen, acc, progress)
    return acc


def _learn(method: StreamMethod, plan: StreamPlan, n: int, seen: dict[int, set[int]]) -> None:
    ev = plan.log
    user, item = int(ev.users[n]), int(ev.items[n])
    method.learn(user, item, float(ev.values[n]), int(ev.types[n]), float(ev.ts[n]))
    seen.setdefault(user, set()).add(item)


def _replay_events(method: StreamMethod, plan: StreamPlan, seen: dict[int, set[int]], acc: Accumulator,
                   progress: Progress | None) -> None:
    ev, scored, explicit = plan.log, plan.scored, plan.log.explicit
    ranks = getattr(method, "ranks", True)
    for n in range(plan.start, len(ev)):
        if scored[n]:
            user, item = int(ev.users[n]), int(ev.items[n])
            if ranks:
                ranked = method.rank(user, acc.k, seen.get(user, set()))
                acc.add_ranking(history_bucket(int(plan.n_before[n])), ranked, item, user)
            if explicit:
                acc.add_rating(method.predict_rating(user, item), float(ev.values[n]), user)
        _learn(method, plan, n, seen)
        if progress is not None and (n + 1 - plan.start) % 256 == 0:
            progress(256)
    if progress is not None:
        progress((len(ev) - plan.start) % 256)


def _queries(plan: StreamPlan, begin: int, end: int,
             seen: dict[int, set[int]]) -> tuple[list[int], list[Query]]:
    """The chunk's evaluation points and their queries, each with the user's earlier events of the chunk."""
    ev, scored = plan.log, plan.scored
    pending: dict[int, list[Pending]] = {}
    points, queries = [], []
    for m in range(begin, end):
        user, item = int(ev.users[m]), int(ev.items[m])
        earlier = pending.setdefault(user, [])
        if scored[m]:
            exclude = seen.get(user, set()) | {p.item for p in earlier}
            points.append(m)
            queries.append(Query(user, exclude, tuple(earlier)))
        earlier.append(Pending(item, float(ev.values[m]), int(ev.types[m]), float(ev.ts[m])))
    return points, queries


def _replay_chunks(method: BatchRanker, plan: StreamPlan, seen: dict[int, set[int]], acc: Accumulator,
                   progress: Progress | None) -> None:
    ev, explicit = plan.log, plan.log.explicit
    n = plan.start
    while n < len(ev):
        budget = method.events_until_refresh()
        end = min(len(ev), n + (MAX_CHUNK if budget is None else max(1, min(MAX_CHUNK, budget))))
        points, queries = _queries(plan, n, end, seen)
        if points:
            if getattr(method, "ranks", True):
                lists = method.rank_many(queries, acc.k)
                for m, ranked in zip(points, lists):
                    acc.add_ranking(history_bucket(int(plan.n_before[m])), ranked, int(ev.items[m]),
                                    int(ev.users[m]))
                proposed = getattr(method, "last_candidates", None)  # a retrieving method's candidate sets
                for m, candidates in zip(points, proposed or ()):
                    acc.add_candidates(history_bucket(int(plan.n_before[m])), int(ev.items[m]) in candidates)
            if explicit:
                items = [int(ev.items[m]) for m in points]
                for m, predicted in zip(points, method.predict_many(queries, items)):
                    acc.add_rating(predicted, float(ev.values[m]), int(ev.users[m]))
        for m in range(n, end):
            _learn(method, plan, m, seen)  # type: ignore[arg-type]
        if progress is not None:
            progress(end - n)
        n = end


def timed_replay(method: StreamMethod, plan: StreamPlan, k: int = 10,
                 progress: Progress | None = None) -> tuple[Accumulator, float]:
    """``replay`` and the wall seconds it took (warm-up included)."""
    began = time.perf_counter()
    acc = replay(method, plan, k, progress)
    seconds = time.perf_counter() - began
    log.info("%s: %d ranked points, %d rated, in %.1fs", method.name, sum(acc.count.values()), len(acc.pairs),
             seconds)
    return acc, seconds
