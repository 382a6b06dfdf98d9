"""EASE (Steck, "Embarrassingly shallow autoencoders for sparse data", WWW 2019), refit as the stream goes.

B = I - P diag(1 / diag(P)), P = (X^T X + lambda I)^-1, with X the binary user x item matrix of every event
learned so far: a closed form with a zero diagonal. A user's scores are x_u B, from their items as of now (a
new event counts at once), while B is refit every ``retrain_period`` learned events: metarec's re-training
schedule. ``lambda`` is ``l2`` times the mean diagonal of X^T X (the mean item's user count), so a choice made
on the small warm-up carries over as the counts grow.

Only items seen so far enter the fit: an unseen item's row and column of B are zero, so leaving it out changes
no score. Above ``max_items`` seen items the fit keeps the most popular ``max_items`` (the inverse is O(n^3)
in time and n^2 in memory: Last.fm's 17.6k artists would take 2.5 GB per float64 matrix and, measured at
4,000 items and scaled by n^3, about 25 minutes of refits per seed on this machine). Items outside the fit
rank below every fitted one; ties, every item for a user without history, go in position-popularity order.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

from models.data.events import EventLog
from models.eval.methods import retrain_period, top_k
from models.eval.peers.position_popularity import DEFAULT, PositionCounts

log = logging.getLogger(__name__)

OUTSIDE = -1e30  # the score of items left out of the fit
MAX_ITEMS = 6000
GRID: tuple[dict[str, Any], ...] = tuple({"l2": l2} for l2 in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0))


def ease_weights(x: sparse.spmatrix | np.ndarray, lam: float) -> np.ndarray:
    """(n, n) EASE's B for the binary (users, n) ``x``: argmin ||X - XB||^2 + lam ||B||^2 with diag(B) = 0."""
    gram = np.asarray((x.T @ x).todense() if sparse.issparse(x) else x.T @ x, np.float64)  # (n, n)
    gram[np.diag_indices_from(gram)] += lam
    factor, info = lapack.dpotrf(gram, lower=False, overwrite_a=True)  # gram = U^T U (SPD: lam > 0)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky failed (info {info}); is lambda positive?")
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)  # upper triangle of P
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (info {info})")
    p = np.triu(inverse) + np.triu(inverse, 1).T  # (n, n) symmetric P
    b = -p / np.diag(p)[None, :]  # B_ij = -P_ij / P_jj
    b[np.diag_indices_from(b)] = 0.0
    return b


class EASE:
    """EASE over the items seen so far, refit on metarec's schedule, with the position fallback."""

    name = "ease"

    def __init__(self, seed: int = 0, l2: float = 10.0, max_items: int = MAX_ITEMS,
                 retrain_every: int | None = None, fallback: dict[str, Any] | None = None) -> None:
        if l2 <= 0 or max_items < 1:
            raise ValueError(f"l2 must be positive and max_items at least 1, got {l2}, {max_items}")
        self.seed, self.l2, self.max_items, self.retrain_every = seed, l2, max_items, retrain_every
        self.fallback_settings = dict(fallback or DEFAULT)
        self.fits = 0

    def fit_prefix(self, log_: EventLog) -> None:
        self.n_items = log_.n_items
        self.priority = np.random.default_rng(self.seed).random(self.n_items)  # (N,)
        self.fallback = PositionCounts(self.n_items, **self.fallback_settings)
        self.history: dict[int, list[int]] = {}
        self.pairs: list[tuple[int, int]] = []
        for u, i, ts in zip(log_.users.tolist(), log_.items.tolist(), log_.ts.tolist()):
            self._remember(u, i, ts)
        self.period, self.since = retrain_period(len(log_), self.retrain_every), 0
        self._fit()

    def _remember(self, user: int, item: int, ts: float) -> None:
        self.fallback.learn(user, item, ts)
        items = self.history.setdefault(user, [])
        if item not in items:
            items.append(item)
            self.pairs.append((user, item))

    def _fit(self) -> None:
        pairs = np.asarray(self.pairs, np.int64).reshape(-1, 2)  # (P, 2) distinct (user, item)
        users_of = np.bincount(pairs[:, 1], minlength=self.n_items)  # (N,)
        fitted = np.flatnonzero(users_of > 0)
        if len(fitted) > self.max_items:  # the most popular, ties by index
            fitted = np.sort(fitted[np.argsort(-users_of[fitted], kind="stable")[: self.max_items]])
        column = np.full(self.n_items, -1)
        column[fitted] = np.arange(len(fitted))
        keep = column[pairs[:, 1]] >= 0
        rows, cols = pairs[keep, 0], column[pairs[keep, 1]]
        x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(int(pairs[:, 0].max(initial=0)) + 1,
                                                                          max(1, len(fitted))))
        lam = self.l2 * max(1.0, float(users_of[fitted].mean()) if len(fitted) else 1.0)
        self.column, self.fitted = column, fitted
        self.b = ease_weights(x, lam).astype(np.float32) if len(fitted) else np.zeros((1, 1), np.float32)
        self.fits += 1
        log.debug("ease: fit %d on %d items, lambda %.1f", self.fits, len(fitted), lam)

    def scores(self, user: int) -> np.ndarray:
        """(N,) x_u B for fitted items, ``OUTSIDE`` for the rest; zeros without history."""
        items = self.history.get(user)
        if not items:
            return np.zeros(self.n_items)
        rows = self.column[items]
        rows = rows[rows >= 0]
        out = np.full(self.n_items, OUTSIDE)
        out[self.fitted] = self.b[rows].sum(axis=0) if len(rows) else 0.0
        return out

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        pop = self.fallback.scores(self.fallback.position(user))
        return top_k(self.scores(user), k, exclude, self.priority, pop)

    def predict_rating(self, user: int, item: int) -> float | None:
        return None

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self._remember(user, item, ts)
        self.since += 1
        if self.since >= self.period:
            self.since = 0
            self._fit()
