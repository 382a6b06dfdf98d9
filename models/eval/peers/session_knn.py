"""Session-kNN with recency weights and last-item transitions (the V-SKNN family).

After V-SKNN and the sequential rules "SR" of Ludewig & Jannach, "Evaluation of session-based recommendation
algorithms" (2018), adapted to data without sessions: a user's last ``session`` distinct items are the current
session, every other user's items a past one.

- Neighbours: the current session's items weigh 1/p by their position p from the end (V-SKNN's "div"
  decay). A past session's similarity is the summed weight of the items it shares, over sqrt of its length
  (cosine-like). Among the users sharing any item, the ``sample`` most recently active are kept, and of
  those the ``k`` most similar vote: an item scores the summed similarity of the neighbours who have it.
- Transitions: every new item of a user follows each of their previous ``TRANSITION_WINDOW`` items with weight
  1/distance (SR's rule); the user's last ``RECENT`` items, weighted 1/2^distance, score their successors.
- score = kNN / max + ``transitions`` x transitions / max; ties (every item, without history) go in
  position-popularity order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.data.events import EventLog
from models.eval.methods import top_k
from models.eval.peers.item_knn import normalised
from models.eval.peers.position_popularity import DEFAULT, PositionCounts
from models.features.cooccurrence import Cooccurrence, make_cooccurrence

TRANSITION_WINDOW = 5
RECENT = 3
SAMPLE = 1000
GRID: tuple[dict[str, Any], ...] = tuple(
    {"k": k, "session": session, "transitions": weight}
    for k in (50, 200) for session in (10, 50) for weight in (0.5, 2.0)
)


class SessionKNN:
    """V-SKNN over users' recent items plus last-item transition rules, with the position fallback."""

    name = "session-knn"

    def __init__(self, seed: int = 0, k: int = 100, session: int = 20, transitions: float = 1.0,
                 sample: int = SAMPLE, fallback: dict[str, Any] | None = None) -> None:
        if k < 1 or session < 1 or sample < 1:
            raise ValueError(f"k, session and sample must be at least 1, got {k}, {session}, {sample}")
        self.seed, self.k, self.session, self.weight, self.sample = seed, k, session, transitions, sample
        self.fallback_settings = dict(fallback or DEFAULT)

    def fit_prefix(self, log: EventLog) -> None:
        n_users, n_items = log.n_users, log.n_items
        self.priority = np.random.default_rng(self.seed).random(n_items)  # (N,)
        self.member = np.zeros((n_users, n_items), np.float32)  # (U, N) 1 where the user has the item
        self.length = np.zeros(n_users)  # (U,) distinct items per user
        self.active = np.full(n_users, -np.inf)  # (U,) time of the user's latest event
        self.history: dict[int, list[int]] = {}
        self.transitions: Cooccurrence = make_cooccurrence(n_items)  # directed: earlier -> later item
        self.fallback = PositionCounts(n_items, **self.fallback_settings)
        for u, i, ts in zip(log.users.tolist(), log.items.tolist(), log.ts.tolist()):
            self.learn(u, i, float("nan"), 0, ts)

    def neighbour_scores(self, user: int, items: list[int]) -> np.ndarray:
        """(N,) V-SKNN: summed similarity of the k nearest of the most recent sessions sharing an item."""
        current = items[-self.session:]
        weights = 1.0 / np.arange(len(current), 0, -1, dtype=np.float32)  # (S,) 1/p from the end
        shared = self.member[:, current] @ weights  # (U,)
        shared[user] = 0.0
        candidates = np.flatnonzero(shared > 0)
        if len(candidates) > self.sample:  # the most recently active sessions
            candidates = candidates[np.argsort(-self.active[candidates], kind="stable")[: self.sample]]
        sims = shared[candidates] / np.sqrt(self.length[candidates])  # (C,)
        if len(candidates) > self.k:
            keep = np.argpartition(-sims, self.k - 1)[: self.k]
            candidates, sims = candidates[keep], sims[keep]
        return (sims.astype(np.float32) @ self.member[candidates]).astype(np.float64)  # (N,)

    def transition_scores(self, items: list[int]) -> np.ndarray:
        """(N,) successors of the user's last ``RECENT`` items, the latest weighing most."""
        recent = items[-RECENT:][::-1]
        return self.transitions.weighted_rows(recent, 0.5 ** np.arange(len(recent)))

    def scores(self, user: int) -> np.ndarray:
        items = self.history.get(user, [])
        if not items:
            return np.zeros(self.member.shape[1])
        knn = normalised(self.neighbour_scores(user, items))
        return knn + self.weight * normalised(self.transition_scores(items))

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        pop = self.fallback.scores(self.fallback.position(user))
        return top_k(self.scores(user), k, exclude, self.priority, pop)

    def predict_rating(self, user: int, item: int) -> float | None:
        return None

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self.fallback.learn(user, item, ts)
        self.active[user] = ts
        items = self.history.setdefault(user, [])
        if self.member[user, item]:
            return
        before = items[-TRANSITION_WINDOW:][::-1]  # the latest first: distance 1, 2, ...
        self.transitions.add_edges(before, item, 1.0 / np.arange(1, len(before) + 1))
        items.append(item)
        self.member[user, item] = 1.0
        self.length[user] += 1.0
