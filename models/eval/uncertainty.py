"""Paired bootstrap over users: 95% intervals for differences and ratios of stream metrics.

Scored events of one user are not independent (their history, their tastes), so the unit resampled is the
user. Every method is scored on the same events, so differences are paired: one draw of users weighs both
methods' per-user sums alike. Seeds are pooled first: a user's hits and points are summed over the seeds (each
seed with its own tie order and model seeds), so an interval covers the users drawn and averages over seeds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from models.eval.metrics import BUCKETS, FIRST_TEN, Accumulator, snap_to_scale

RESAMPLES = 2000
FIRST = np.array([BUCKETS.index(b) for b in FIRST_TEN])


@dataclass
class UserSums:
    """Per user (U,): hits and points over all scored events and over their first 10, absolute rating errors
    (as predicted and on the rating scale) and rated points."""

    hits: np.ndarray
    points: np.ndarray
    first_hits: np.ndarray
    first_points: np.ndarray
    abs_error: np.ndarray
    abs_error_scale: np.ndarray
    rated: np.ndarray

    @classmethod
    def zeros(cls, n_users: int) -> "UserSums":
        return cls(*(np.zeros(n_users) for _ in fields(cls)))

    def grow(self, n_users: int) -> None:
        for f in fields(self):
            arr = getattr(self, f.name)
            if len(arr) < n_users:
                setattr(self, f.name, np.concatenate([arr, np.zeros(n_users - len(arr))]))

    def add(self, other: "UserSums") -> None:
        n = max(len(self.hits), len(other.hits))
        self.grow(n)
        other.grow(n)
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def user_sums(acc: Accumulator, index: np.ndarray, n_users: int) -> UserSums:
    """``acc``'s points summed per user; ``index`` maps the run's user index to the pooled one (U_run,)."""
    out = UserSums.zeros(n_users)
    if acc.points:
        points = np.asarray(acc.points, np.float64)  # (P, 3) user, bucket, hit
        users = index[points[:, 0].astype(np.int64)]
        first = np.isin(points[:, 1].astype(np.int64), FIRST)
        out.hits = np.bincount(users, points[:, 2], n_users)
        out.points = np.bincount(users, minlength=n_users).astype(np.float64)
        out.first_hits = np.bincount(users[first], points[first, 2], n_users)
        out.first_points = np.bincount(users[first], minlength=n_users).astype(np.float64)
    if acc.pairs:
        pairs = np.asarray(acc.pairs, np.float64)  # (R, 2) predicted, actual
        users = index[np.asarray(acc.pair_users, np.int64)]
        out.abs_error = np.bincount(users, np.abs(pairs[:, 0] - pairs[:, 1]), n_users)
        snapped = pairs[:, 0] if acc.scale is None else snap_to_scale(pairs[:, 0], acc.scale)
        out.abs_error_scale = np.bincount(users, np.abs(snapped - pairs[:, 1]), n_users)
        out.rated = np.bincount(users, minlength=n_users).astype(np.float64)
    return out


class PairedBootstrap:
    """``RESAMPLES`` draws of users with replacement, as counts per user, shared by every comparison."""

    def __init__(self, n_users: int, resamples: int = RESAMPLES, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.weights = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=resamples)  # (B, U)
        self.weights = self.weights.astype(np.float64)

    def _draws(self, x: np.ndarray) -> np.ndarray:
        return self.weights @ _fit(x, self.weights.shape[1])  # (B,)

    def difference(self, a: np.ndarray, b: np.ndarray, den: np.ndarray) -> list[float]:
        """[lo, hi] of (sum a - sum b) / sum den over resampled users (a rate of A minus that of B)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            stats = (self._draws(a) - self._draws(b)) / self._draws(den)
        return _interval(stats)

    def ratio(self, a: np.ndarray, den_a: np.ndarray, b: np.ndarray, den_b: np.ndarray) -> list[float]:
        """[lo, point, hi] of (sum a / sum den_a) / (sum b / sum den_b)."""
        point = (a.sum() / den_a.sum()) / (b.sum() / den_b.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            stats = (self._draws(a) / self._draws(den_a)) / (self._draws(b) / self._draws(den_b))
        lo, hi = _interval(stats)
        return [lo, round(float(point), 4), hi]


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x, np.zeros(n - len(x))]) if len(x) < n else x


def _interval(stats: np.ndarray) -> list[float]:
    stats = stats[np.isfinite(stats)]
    if not len(stats):
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def compare(boot: PairedBootstrap, a: UserSums, b: UserSums) -> dict[str, list[float]]:
    """A minus B, HR@10 over all points and over users' first 10 events: {"all": [lo, hi], "first10": ...}."""
    return {"all": boot.difference(a.hits, b.hits, a.points),
            "first10": boot.difference(a.first_hits, b.first_hits, a.first_points)}


def compare_mae(boot: PairedBootstrap, a: UserSums, b: UserSums) -> dict[str, list[float]]:
    """A's MAE minus B's, as predicted and on the rating scale: [lo, hi] each (negative: A errs less)."""
    return {"as_predicted": boot.difference(a.abs_error, b.abs_error, a.rated),
            "on_scale": boot.difference(a.abs_error_scale, b.abs_error_scale, a.rated)}
