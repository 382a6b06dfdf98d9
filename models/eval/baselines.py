"""Count-based stream baselines: popularity, time-decayed popularity and incremental item-kNN.

Each keeps its state up to date one event at a time, so the test-then-train replay measures them as they would
run online. None of them predicts ratings. Ties are broken by a fixed seeded random order (see ``top_k``).
"""

from __future__ import annotations

import math

import numpy as np

from models.data.events import EventLog
from models.eval.methods import top_k
from models.features.cooccurrence import Cooccurrence, make_cooccurrence

DAY_S = 86400.0


class _CountingMethod:
    """Shared plumbing: catalogue size and tie-break order come from the prefix log; warm-up = learning it."""

    name = "base"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.n_items = 0
        self.priority = np.zeros(0)

    def _setup(self, n_items: int) -> None:
        self.n_items = n_items
        self.priority = np.random.default_rng(self.seed).random(n_items)  # (n_items,) tie-break order

    def fit_prefix(self, log: EventLog) -> None:
        self._setup(log.n_items)
        for u, i, v, t, ts in zip(log.users.tolist(), log.items.tolist(), log.values.tolist(),
                                  log.types.tolist(), log.ts.tolist()):
            self.learn(u, i, v, t, ts)

    def predict_rating(self, user: int, item: int) -> float | None:
        return None

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        raise NotImplementedError


class Popularity(_CountingMethod):
    """Recommends the items with the most events so far: the bar every personalised method must clear."""

    name = "popularity"

    def _setup(self, n_items: int) -> None:
        super()._setup(n_items)
        self.counts = np.zeros(n_items, np.float64)  # (n_items,)

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return top_k(self.counts, k, exclude, self.priority)

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self.counts[item] += 1.0


class DecayedPopularity(_CountingMethod):
    """Popularity where an event's weight halves every ``half_life_days``: what is popular *now*.

    Weights are kept as exp((t - t_ref)/tau) against a moving reference time, rescaled before they overflow,
    so a learn is O(1) instead of decaying the whole catalogue at every event.
    """

    name = "decayed-popularity"

    def __init__(self, seed: int = 0, half_life_days: float = 14.0) -> None:
        super().__init__(seed)
        self.tau = half_life_days * DAY_S / math.log(2.0)
        self.t_ref: float | None = None

    def _setup(self, n_items: int) -> None:
        super()._setup(n_items)
        self.scores = np.zeros(n_items, np.float64)  # (n_items,) decayed counts times exp((t_ref - now)/tau)

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return top_k(self.scores, k, exclude, self.priority)

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        if self.t_ref is None:
            self.t_ref = ts
        exponent = (ts - self.t_ref) / self.tau
        if exponent > 300.0:  # exp(300) is near float64's limit: move the reference to now
            self.scores *= math.exp(-exponent)
            self.t_ref, exponent = ts, 0.0
        self.scores[item] += math.exp(exponent)


class ItemKNN(_CountingMethod):
    """Incremental item-based kNN: cosine similarity of items' user sets, updated with every new pair.

    score(u, i) = sum over the user's items j of C[i, j] / sqrt(n_i n_j), with C the co-occurrence counts
    (users who have both) and n_i the users who have i. All neighbours count (no top-k pruning), which keeps
    the update exact and O(history). Ties, including every item for a user with no history, fall back to
    popularity.
    """

    name = "item-knn"

    def _setup(self, n_items: int) -> None:
        super()._setup(n_items)
        self.cooc: Cooccurrence = make_cooccurrence(n_items)
        self.n_users_of = np.zeros(n_items, np.float64)  # (n_items,)
        self.history: dict[int, list[int]] = {}
        self.has: set[tuple[int, int]] = set()

    def scores(self, user: int) -> np.ndarray:
        """(n_items,) cosine scores of every item for ``user``."""
        items = self.history.get(user)
        if not items:
            return np.zeros(self.n_items)
        with np.errstate(divide="ignore"):
            inv = np.where(self.n_users_of > 0, 1.0 / np.sqrt(self.n_users_of), 0.0)  # (n_items,)
        summed = self.cooc.weighted_rows(items, inv[items])  # (n_items,)
        return summed * inv

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        priority = self.n_users_of + 0.5 * self.priority  # popularity first, then the random order
        return top_k(self.scores(user), k, exclude, priority)

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        if (user, item) in self.has:
            return  # user sets are binary: a repeat changes no count
        self.has.add((user, item))
        items = self.history.setdefault(user, [])
        self.cooc.add_pairs(item, items)
        items.append(item)
        self.n_users_of[item] += 1.0
