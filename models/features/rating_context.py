"""The rating model's context features of (user, item) pairs: the stream's item means and the user's residuals.

A rating model learns an item's quality only when it is re-trained; the stream says it with every rating
(river's BiasedMF gains its MAE by updating item biases online), so the item means are features. Shrunk
deviations from the running global mean stay on one scale however long the stream runs. The user's residuals
from those means, spread to similar items by the co-occurrence cosine (incremental item-kNN on ratings), say
what the head's few steps cannot. As for the implicit model's features (``models.features.context``), they are
computed for the items asked for, so serving's cost does not grow with the catalogue.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from models.features.item_stats import ItemStats, inv_sqrt

RATING_SHRINK: tuple[float, ...] = (3.0, 25.0)  # prior counts of the shrunk item means: quick, and cautious
KNN_SHRINK = 1.0  # prior similarity mass of the item-kNN residual: few similar items, a smaller pull
USER_SHRINK = 5.0  # prior count of the user's mean residual
RATING_CONTEXT_NAMES: tuple[str, ...] = (
    *(f"mean_dev_{k:g}" for k in RATING_SHRINK),  # (sum - n m) / (n + k): the item's rating above the mean
    "unrated",  # 1 / (1 + n): how little the stream has said about the item yet
    "knn_residual",  # the user's centred residuals (from item means), averaged by their items' cosine
    "log_knn_mass",  # log(1 + sum of those cosines): how much the average rests on
    "user_residual",  # sum of the user's residuals / (count + USER_SHRINK): their shrunk offset
)
N_RATING_CONTEXT = len(RATING_CONTEXT_NAMES)


def rating_context(stats: ItemStats, supports: Sequence[Sequence[tuple[int, float]]],
                   cols: np.ndarray) -> np.ndarray:
    """(B, M, R) float32 features of items ``cols`` (B, M) (-1: padding) given each user's (item, rating)
    support pairs (item indices outside the catalogue are dropped)."""
    b, m = cols.shape
    n = stats.n_items
    kept = [[(i, r) for i, r in pairs if 0 <= i < n] for pairs in supports]
    width = max([len(k) for k in kept] + [1])
    items, res = np.full((b, width), -1, np.int64), np.zeros((b, width))
    out = np.zeros((b, m, N_RATING_CONTEXT), np.float32)
    safe = np.where(cols >= 0, cols, 0)
    with stats.lock:
        count = stats.rating_count
        total = count.sum()
        mean = stats.rating_sum.sum() / total if total else 0.0
        excess = stats.rating_sum[safe] - count[safe] * mean  # (B, M)
        for k, shrink in enumerate(RATING_SHRINK):
            out[..., k] = excess / (count[safe] + shrink)
        out[..., len(RATING_SHRINK)] = 1.0 / (1.0 + count[safe])
        for row, pairs in enumerate(kept):
            if pairs:
                idx = np.array([i for i, _ in pairs], np.int64)
                items[row, : len(pairs)] = idx
                item_mean = mean + (stats.rating_sum[idx] - count[idx] * mean) / (count[idx] + RATING_SHRINK[0])
                res[row, : len(pairs)] = np.array([r for _, r in pairs]) - item_mean
        inv = inv_sqrt(stats.n_users_of)  # (N,)
        valid = items >= 0
        sizes = np.maximum(valid.sum(1), 1)[:, None]  # (B, 1)
        centred = np.where(valid, res - res.sum(1, keepdims=True) / sizes, 0.0)  # the offset: the last feature
        w = np.where(valid, inv[np.where(valid, items, 0)], 0.0)  # (B, S)
        votes = stats.cooc.votes(items, [w, w * centred])
    mass = votes.at(cols, 0) * inv[safe]  # (B, M) sum_j cos(i, j)
    pull = votes.at(cols, 1) * inv[safe]  # (B, M) sum_j cos(i, j) centred_j
    has = valid.any(1)[:, None]
    out[..., 3] = np.where(has, pull / (mass + KNN_SHRINK), 0.0)
    out[..., 4] = np.where(has, np.log1p(mass), 0.0)
    out[..., 5] = np.where(has, (res * valid).sum(1, keepdims=True) / (valid.sum(1, keepdims=True) + USER_SHRINK),
                           0.0)
    out[cols < 0] = 0.0
    return out


def full_rating_context(stats: ItemStats, supports: Sequence[Sequence[tuple[int, float]]]) -> np.ndarray:
    """(B, N, R): the features of every catalogue item (training, and offline callers)."""
    cols = np.ascontiguousarray(np.broadcast_to(np.arange(stats.n_items), (len(supports), stats.n_items)))
    return rating_context(stats, supports, cols)
