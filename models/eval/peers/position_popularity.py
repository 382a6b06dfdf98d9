"""Position-conditioned popularity: what users take at step n of their own history.

On MovieLens the sign-up flow shows every newcomer a similar set of films, so "what did other users rate as
their n-th film" beats all-time popularity by a wide margin on users' first events. The counts are kept per
position bucket (the user's distinct items before the event, exact up to ``cap``, then one bucket), optionally
decayed with a half-life (what is taken at step n *now*), and smoothed towards the item's overall (equally
decayed) popularity with ``smooth`` pseudo-counts, so a sparse bucket still ranks every item.

``PositionCounts`` is the state alone; it is also the cold fallback of the other peers (``top_k``'s
``fallback``: it orders the items their own model scores alike).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.data.events import EventLog
from models.eval.methods import top_k

DAY_S = 86400.0
GRID: tuple[dict[str, Any], ...] = tuple(
    {"cap": cap, "half_life_days": half_life} for cap in (3, 10, 30, 100) for half_life in (None, 14.0)
)
DEFAULT: dict[str, Any] = {"cap": 30, "half_life_days": None}


class PositionCounts:
    """Decayed counts of first-time events per (position bucket, item), and each user's distinct items.

    Weights are exp((t - t_ref)/tau) against a moving reference time, rescaled before they overflow, so a
    learn costs O(1) (as ``DecayedPopularity``); without a half-life every event weighs 1.
    """

    def __init__(self, n_items: int, cap: int = 30, half_life_days: float | None = None,
                 smooth: float = 10.0) -> None:
        if cap < 0 or smooth < 0:
            raise ValueError(f"cap and smooth must not be negative, got {cap}, {smooth}")
        self.n_items, self.cap, self.smooth = n_items, cap, smooth
        self.tau = None if half_life_days is None else half_life_days * DAY_S / math.log(2.0)
        self.t_ref: float | None = None
        self.by_position = np.zeros((cap + 1, n_items))  # (P, N) weighted first-time events
        self.overall = np.zeros(n_items)  # (N,) the same, every position together
        self.seen: dict[int, set[int]] = {}

    def position(self, user: int) -> int:
        """The user's bucket: distinct items so far, at most ``cap``."""
        return min(len(self.seen.get(user, ())), self.cap)

    def _weight(self, ts: float) -> float:
        if self.tau is None:
            return 1.0
        if self.t_ref is None:
            self.t_ref = ts
        exponent = (ts - self.t_ref) / self.tau
        if exponent > 300.0:  # exp(300) is near float64's limit: move the reference to now
            scale = math.exp(-exponent)
            self.by_position *= scale
            self.overall *= scale
            self.t_ref, exponent = ts, 0.0
        return math.exp(exponent)

    def learn(self, user: int, item: int, ts: float) -> None:
        items = self.seen.setdefault(user, set())
        if item in items:
            return  # a repeat is not a step of the user's history
        weight = self._weight(ts)
        self.by_position[min(len(items), self.cap), item] += weight
        self.overall[item] += weight
        items.add(item)

    def scores(self, position: int) -> np.ndarray:
        """(N,) the bucket's counts plus ``smooth`` pseudo-counts spread like overall popularity."""
        total = self.overall.sum()
        prior = self.overall / total if total > 0 else np.zeros(self.n_items)
        return self.by_position[min(position, self.cap)] + self.smooth * prior


class PositionPopularity:
    """Ranks by ``PositionCounts.scores`` at the user's current position; predicts no ratings."""

    name = "position-popularity"

    def __init__(self, seed: int = 0, cap: int = 30, half_life_days: float | None = None,
                 smooth: float = 10.0) -> None:
        self.seed = seed
        self.settings = {"cap": cap, "half_life_days": half_life_days, "smooth": smooth}

    def fit_prefix(self, log: EventLog) -> None:
        self.counts = PositionCounts(log.n_items, **self.settings)
        self.priority = np.random.default_rng(self.seed).random(log.n_items)  # (N,) tie-break order
        for u, i, ts in zip(log.users.tolist(), log.items.tolist(), log.ts.tolist()):
            self.counts.learn(u, i, ts)

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return top_k(self.counts.scores(self.counts.position(user)), k, exclude, self.priority)

    def predict_rating(self, user: int, item: int) -> float | None:
        return None

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self.counts.learn(user, item, ts)
