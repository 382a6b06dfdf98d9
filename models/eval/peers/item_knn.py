"""Incremental item-kNN with position popularity as its cold fallback.

score(u, i) = sum over the user's last ``window`` items j of C[i, j] / (n_i^alpha n_j^(1 - alpha)), with C the
co-occurrence counts (users who have both) and n_i the users who have i: alpha = 0.5 is the cosine, a larger
alpha favours rarer candidates (the asymmetric cosine of Aiolli 2013). The scores are divided by their
maximum and ``blend`` times the position popularity (also divided by its maximum) is added; items still
tied, every item for a user with no history, go in position-popularity order (``top_k``'s ``fallback``). All
neighbours count (no top-k pruning), which keeps the update exact and O(history).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.data.events import EventLog
from models.eval.methods import top_k
from models.eval.peers.position_popularity import DEFAULT, PositionCounts
from models.features.cooccurrence import Cooccurrence, make_cooccurrence

GRID: tuple[dict[str, Any], ...] = tuple(
    {"alpha": alpha, "window": window, "blend": blend}
    for alpha in (0.5, 0.75) for window in (20, None) for blend in (0.0, 0.05)
)


def normalised(scores: np.ndarray) -> np.ndarray:
    """``scores`` over their maximum (unchanged when nothing is positive)."""
    top = float(scores.max()) if len(scores) else 0.0
    return scores / top if top > 0 else scores


class ItemKNNFallback:
    """Item-kNN over the user's recent items; a user without history gets the position popularity."""

    name = "item-knn-pos"

    def __init__(self, seed: int = 0, alpha: float = 0.5, window: int | None = None, blend: float = 0.0,
                 fallback: dict[str, Any] | None = None) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.seed, self.alpha, self.window, self.blend = seed, alpha, window, blend
        self.fallback_settings = dict(fallback or DEFAULT)

    def fit_prefix(self, log: EventLog) -> None:
        n = log.n_items
        self.priority = np.random.default_rng(self.seed).random(n)  # (N,) last-resort tie-break
        self.cooc: Cooccurrence = make_cooccurrence(n)
        self.n_users_of = np.zeros(n)  # (N,)
        self.history: dict[int, list[int]] = {}
        self.fallback = PositionCounts(n, **self.fallback_settings)
        for u, i, ts in zip(log.users.tolist(), log.items.tolist(), log.ts.tolist()):
            self.learn(u, i, float("nan"), 0, ts)

    def scores(self, user: int) -> np.ndarray:
        """(N,) the kNN scores of every item for ``user`` (zeros without history)."""
        items = self.history.get(user, [])
        if self.window is not None:
            items = items[-self.window:]
        if not items:
            return np.zeros(len(self.n_users_of))
        with np.errstate(divide="ignore"):
            used = self.n_users_of > 0
            cand = np.where(used, self.n_users_of ** -self.alpha, 0.0)  # (N,) 1 / n_i^alpha
            neigh = np.where(used, self.n_users_of ** (self.alpha - 1.0), 0.0)  # (N,) 1 / n_j^(1-alpha)
        return self.cooc.weighted_rows(items, neigh[items]) * cand

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        pop = self.fallback.scores(self.fallback.position(user))
        score = normalised(self.scores(user))
        if self.blend:
            score = score + self.blend * normalised(pop)
        return top_k(score, k, exclude, self.priority, pop)

    def predict_rating(self, user: int, item: int) -> float | None:
        return None

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self.fallback.learn(user, item, ts)
        items = self.history.setdefault(user, [])
        if item in items:
            return  # user sets are binary: a repeat changes no count
        self.cooc.add_pairs(item, items)
        items.append(item)
        self.n_users_of[item] += 1.0
