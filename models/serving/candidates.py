"""Retrieve, then rank: a bounded set of candidate items per user, from what the statistics already say.

Scoring the whole catalogue costs O(N) per user; the context features and the adapted head score only these
candidates, so serving's cost stays flat as the catalogue grows. The sources, each with a quota
(``CandidateBudget``), are what the ranking model's own features rest on, so an item it would rank high is
rarely missed:

- item-kNN: the items most voted for by the neighbours of the user's latest distinct items;
- next items: what follows the user's latest items;
- position popularity: what users at the same point of their history take (what a new user gets);
- popular now: the highest 1-day decayed counts;
- taste: the top of the adapted head's inner product over the catalogue (``models.serving.item_index``);
- new items: the catalogue's newest items closest to the user's support by their (text) features.

The union is de-duplicated, the user's excluded items are removed, and it is cut to ``total``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.features.context import ContextReader
from models.features.item_stats import POSITION_EDGES, ItemStats


@dataclass(frozen=True)
class CandidateBudget:
    """How many items each source may propose, and the most kept per user (0 = score the whole catalogue)."""

    total: int = 500
    knn: int = 250
    next_items: int = 100
    position: int = 50
    popular: int = 50
    taste: int = 50
    new: int = 20

    @classmethod
    def of_size(cls, total: int) -> "CandidateBudget | None":
        """The default quotas scaled to ``total`` candidates per user; 0 means score every item (None)."""
        if total <= 0:
            return None
        scale = total / cls.total
        return cls(total, *(max(1, round(q * scale)) for q in (cls.knn, cls.next_items, cls.position,
                                                                 cls.popular, cls.taste, cls.new)))


class PopularLists:
    """Each position bucket's and the decayed counts' top items, recomputed when the statistics move.

    O(N) once per statistics version (a batch), not per user."""

    def __init__(self, per_list: int) -> None:
        self.per_list = per_list
        self._version: tuple[int, int] | None = None
        self.by_position = np.zeros((len(POSITION_EDGES) + 1, 0), np.int64)  # (P, T)
        self.now = np.zeros(0, np.int64)  # (T,)

    def refresh(self, stats: ItemStats) -> "PopularLists":
        key = (id(stats), stats.version)
        if key != self._version:
            with stats.lock:
                self.by_position = np.stack([_top(row, self.per_list) for row in stats.position])
                self.now = _top(stats.decayed[0], self.per_list)
            self._version = key
        return self


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest positive values, best first (-1 padded to k)."""
    k_eff = min(k, len(values))
    part = np.argpartition(-values, k_eff - 1)[:k_eff] if k_eff else np.zeros(0, np.int64)
    part = part[np.argsort(-values[part], kind="stable")]
    part = part[values[part] > 0]
    return np.concatenate([part, np.full(k - len(part), -1, np.int64)])


def gather_candidates(reader: ContextReader, popular: PopularLists, taste: np.ndarray, new: np.ndarray,
                      excluded: np.ndarray, budget: CandidateBudget,
                      banned: np.ndarray | None = None) -> np.ndarray:
    """(B, M) candidate item indices per user, -1 padded, M <= ``budget.total``.

    ``taste`` (B, T) and ``new`` (B, T') are the head's and the new items' proposals (-1: none);
    ``excluded``: sorted batch-wide keys user x N + item of the items never to propose; ``banned`` (N,): items
    never to propose to anyone (unavailable).
    """
    b, n = len(reader.views.n_seen), reader.stats.n_items
    sources = [
        reader.knn.top(budget.knn),
        reader.next.top(budget.next_items),
        popular.by_position[reader.bucket][:, : budget.position],
        np.broadcast_to(popular.now[: budget.popular], (b, min(budget.popular, len(popular.now)))),
        taste[:, : budget.taste],
        new[:, : budget.new],
    ]
    proposed = np.concatenate([np.asarray(s, np.int64).reshape(b, -1) for s in sources], axis=1)  # (B, R)
    if banned is not None:
        proposed = np.where((proposed >= 0) & ~banned[np.maximum(proposed, 0)], proposed, -1)
    return _distinct_allowed(proposed, n, excluded, budget.total)


def _distinct_allowed(proposed: np.ndarray, n: int, excluded: np.ndarray, total: int) -> np.ndarray:
    """Each row's first occurrences of allowed items, in proposal order, cut to ``total`` (-1 padded)."""
    b, r = proposed.shape
    keys = np.where(proposed >= 0, np.arange(b, dtype=np.int64)[:, None] * n + proposed, -1)  # (B, R)
    flat = keys.ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]] if len(ordered) else np.zeros(0, bool)
    keep = np.zeros(len(flat), bool)
    keep[order] = first
    keep &= flat >= 0
    if len(excluded):
        slot = np.minimum(np.searchsorted(excluded, flat), len(excluded) - 1)
        keep &= excluded[slot] != flat
    keep = keep.reshape(b, r)
    front = np.argsort(~keep, axis=1, kind="stable")[:, :total]  # kept ones first, in proposal order
    out = np.take_along_axis(proposed, front, 1)
    return np.where(np.take_along_axis(keep, front, 1), out, -1)


def excluded_keys(n: int, excluded: list[np.ndarray]) -> np.ndarray:
    """Sorted batch-wide keys user x N + item of each user's excluded item indices."""
    if not excluded:
        return np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(excluded), dtype=np.int64), [len(e) for e in excluded])
    items = np.concatenate(excluded).astype(np.int64) if rows.size else np.zeros(0, np.int64)
    return np.sort(rows * n + items)
