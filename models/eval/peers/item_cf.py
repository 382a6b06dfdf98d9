"""Online item-based collaborative filtering of ratings: a rating peer for the stream MAE (explicit data).

prediction = mean + item bias + user offset + pull, with shrunk biases (``bias_shrink`` prior counts) and the
pull the user's residuals averaged by adjusted-cosine similarity to the item: similarities of user-centred
ratings accumulated pair by pair, shrunk by co-rating count n / (n + ``corated_shrink``), and divided by
(sum |sim| + ``damping``) so a few weak neighbours pull little. Clipped to the rating range of the warm-up.
It ranks nothing (``ranks = False``). Dense (N, N) sums: for MovieLens-sized catalogues.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.data.events import EventLog

GRID: tuple[dict[str, Any], ...] = tuple(
    {"bias_shrink": bias, "corated_shrink": corated, "damping": damping}
    for bias in (2.0, 10.0) for corated in (10.0, 50.0) for damping in (1.0, 5.0)
)


class ItemCF:
    """Online adjusted-cosine item-CF on ratings (predicts ratings, ranks nothing)."""

    name = "item-cf"
    ranks = False

    def __init__(self, seed: int = 0, bias_shrink: float = 5.0, corated_shrink: float = 25.0,
                 damping: float = 1.0) -> None:
        self.seed, self.bias_shrink, self.corated_shrink = seed, bias_shrink, corated_shrink
        self.damping = damping

    def fit_prefix(self, log_: EventLog) -> None:
        n = log_.n_items
        self.products = np.zeros((n, n))  # (N, N) sum over users of centred rating products
        self.corated = np.zeros((n, n))  # (N, N) users who rated both
        self.norms = np.zeros(n)  # (N,) sum of squared centred ratings
        self.sums, self.counts = np.zeros(n), np.zeros(n)
        self.total, self.rated = 0.0, 0
        rated = log_.values[~np.isnan(log_.values)]
        self.low, self.high = (float(rated.min()), float(rated.max())) if len(rated) else (1.0, 5.0)
        self.history: dict[int, tuple[list[int], list[float]]] = {}
        for u, i, v in zip(log_.users.tolist(), log_.items.tolist(), log_.values.tolist()):
            self.learn(u, i, v, 0, 0.0)

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return []

    def _item_bias(self, items: np.ndarray | int, mean: float) -> np.ndarray:
        return (self.sums[items] - self.counts[items] * mean) / (self.counts[items] + self.bias_shrink)

    def predict_rating(self, user: int, item: int) -> float | None:
        mean = self.total / self.rated if self.rated else (self.low + self.high) / 2
        base = mean + float(self._item_bias(item, mean))
        items, ratings = self.history.get(user, ([], []))
        if not items:
            return min(self.high, max(self.low, base))
        idx = np.asarray(items)
        residual = np.asarray(ratings) - mean - self._item_bias(idx, mean)  # (S,)
        offset = residual.sum() / (len(residual) + self.bias_shrink)
        corated = self.corated[item, idx]
        sim = self.products[item, idx] / (np.sqrt(self.norms[item] * self.norms[idx]) + 1e-9)  # (S,)
        sim *= corated / (corated + self.corated_shrink)
        pull = float((sim * (residual - offset)).sum() / (np.abs(sim).sum() + self.damping))
        return min(self.high, max(self.low, base + offset + pull))

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        if np.isnan(value):
            return
        items, ratings = self.history.setdefault(user, ([], []))
        centre = (sum(ratings) + value) / (len(ratings) + 1)
        if items:
            idx = np.asarray(items)
            products = (value - centre) * (np.asarray(ratings) - centre)
            self.products[item, idx] += products
            self.products[idx, item] += products
            self.corated[item, idx] += 1.0
            self.corated[idx, item] += 1.0
        self.norms[item] += (value - centre) ** 2
        items.append(item)
        ratings.append(value)
        self.sums[item] += value
        self.counts[item] += 1.0
        self.total += value
        self.rated += 1
