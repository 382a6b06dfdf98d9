"""Hit rate, NDCG and rating errors, accumulated per user-history bucket as the stream is replayed.

A bucket says how many events the user had before the event being predicted (warm-up events included), so the
report shows how fast each method learns a new user: "0" is a user's very first event.

Rating errors come twice. ``mae``/``rmse`` score each method's prediction as it is. ``mae_on_scale``/
``rmse_on_scale`` score the same prediction moved to the nearest level of the rating scale (1..5 stars): the
point that minimises absolute error is the median of the predicted distribution, and the median of ratings
given in whole stars is itself a whole star. Both are reported for every method, so a gain from the
decision rule is never mistaken for a gain from the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

MAX_SCALE_LEVELS = 20  # more distinct values than this is a continuous target, not a rating scale

BUCKETS: tuple[str, ...] = ("0", "1-4", "5-9", "10-49", "50+")
FIRST_TEN: tuple[str, ...] = ("0", "1-4", "5-9")  # a user's first 10 events, pooled in summaries


def history_bucket(n_before: int) -> str:
    """The bucket of an event whose user had ``n_before`` events before it."""
    if n_before <= 0:
        return "0"
    if n_before < 5:
        return "1-4"
    if n_before < 10:
        return "5-9"
    if n_before < 50:
        return "10-49"
    return "50+"


def hit_and_ndcg(ranked: list[int], item: int, k: int) -> tuple[float, float]:
    """(1, 1/log2(position + 2)) if ``item`` is among the first ``k`` of ``ranked`` (from 0), else (0, 0).

    With one relevant item per evaluation point the ideal DCG is 1, so NDCG is the DCG of that item alone.
    """
    top = ranked[:k]
    if item not in top:
        return 0.0, 0.0
    return 1.0, 1.0 / math.log2(top.index(item) + 2)


def rating_scale(values: Sequence[float] | np.ndarray) -> tuple[float, ...] | None:
    """The levels of a rating scale, read from ratings seen (e.g. the warm-up's), or None if not discrete."""
    arr = np.asarray(values, np.float64)
    levels = np.unique(arr[~np.isnan(arr)])
    if len(levels) == 0 or len(levels) > MAX_SCALE_LEVELS:
        return None
    return tuple(float(v) for v in levels)


def snap_to_scale(predicted: np.ndarray | float, scale: tuple[float, ...]) -> np.ndarray:
    """Each prediction moved to its nearest scale level (a tie goes to the lower level)."""
    levels = np.asarray(scale, np.float64)
    pred = np.asarray(predicted, np.float64)
    return levels[np.abs(pred[..., None] - levels).argmin(axis=-1)]


@dataclass
class Accumulator:
    """Running sums for one method: hits and NDCG per bucket; every scored rating as (predicted, actual)."""

    k: int = 10
    count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    hits: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0.0))
    ndcg: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0.0))
    scale: tuple[float, ...] | None = None  # the rating levels; None: no on-scale errors
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (predicted, actual), in stream order
    # per scored point, in stream order, for intervals over users (models.eval.uncertainty)
    points: list[tuple[int, int, float]] = field(default_factory=list)  # (user, bucket index, hit)
    pair_users: list[int] = field(default_factory=list)  # the user of each rating pair
    # a retrieving method's candidate stage: points ranked among candidates, and those whose item was one
    candidate_trials: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    candidate_hits: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0.0))

    def add_ranking(self, bucket: str, ranked: list[int], item: int, user: int = -1) -> None:
        hit, gain = hit_and_ndcg(ranked, item, self.k)
        self.count[bucket] += 1
        self.hits[bucket] += hit
        self.ndcg[bucket] += gain
        self.points.append((user, BUCKETS.index(bucket), hit))

    def add_candidates(self, bucket: str, hit: bool) -> None:
        self.candidate_trials[bucket] += 1
        self.candidate_hits[bucket] += float(hit)

    def add_rating(self, predicted: float | None, actual: float, user: int = -1) -> None:
        if predicted is None or math.isnan(actual):
            return
        self.pairs.append((float(predicted), float(actual)))
        self.pair_users.append(user)

    def _rates(self, sums: dict[str, float], counts: dict[str, int] | None = None) -> dict[str, float | None]:
        counts = self.count if counts is None else counts
        total = sum(counts.values())
        out: dict[str, float | None] = {"all": sum(sums.values()) / total if total else None}
        for b in BUCKETS:
            out[b] = sums[b] / counts[b] if counts[b] else None
        return out

    def summary(self) -> dict[str, object]:
        """The per-method block of the result file: hr@k and ndcg@k by bucket, mae and rmse (or None), and
        the errors of the predictions moved onto the rating scale (None without a scale or ratings)."""
        pairs = np.asarray(self.pairs, np.float64).reshape(-1, 2)  # (P, 2)
        predicted, actual = pairs[:, 0], pairs[:, 1]
        on_scale = None if self.scale is None else snap_to_scale(predicted, self.scale)
        return {
            f"hr@{self.k}": self._rates(self.hits),
            f"ndcg@{self.k}": self._rates(self.ndcg),
            "mae": _mean_abs(predicted, actual),
            "rmse": _root_mean_sq(predicted, actual),
            "mae_on_scale": None if on_scale is None else _mean_abs(on_scale, actual),
            "rmse_on_scale": None if on_scale is None else _root_mean_sq(on_scale, actual),
            # share of scored items inside the candidate set they were ranked among (None: no retrieval)
            "candidate_recall": self._rates(self.candidate_hits, self.candidate_trials)
            if sum(self.candidate_trials.values()) else None,
        }

    def pooled_hr(self, buckets: tuple[str, ...] = FIRST_TEN) -> float | None:
        """HR over several buckets together (weighted by their counts), e.g. a user's first ten events."""
        n = sum(self.count[b] for b in buckets)
        return sum(self.hits[b] for b in buckets) / n if n else None


def _mean_abs(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    return float(np.abs(predicted - actual).mean()) if len(actual) else None


def _root_mean_sq(predicted: np.ndarray, actual: np.ndarray) -> float | None:
    return math.sqrt(float(((predicted - actual) ** 2).mean())) if len(actual) else None
