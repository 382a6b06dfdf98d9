"""The implicit model's context features of (user, item) pairs, for any items: candidates, support, the catalogue.

Features are computed for the columns asked for, (B, M), never for the whole catalogue: serving asks for a
user's support items, negatives and a few hundred candidates, so its cost does not grow with the catalogue;
training asks for every item (or a sample), through the same code. Everything a user contributes comes from
``UserViews``, built from what the request carries (the user's history and support), so the worker keeps no
per-user memory.

The features (``CONTEXT_NAMES``): log shares of the item's count and decayed counts; item-kNN over the user's
latest ``KNN_WINDOW`` distinct items (sum and mean of cosines, with the user's own pairs left out for the
user's own items, so a support set can say whether this user follows item-kNN); the share of the item among
what users at the same position of their history take; what follows the user's latest items (each support
item's as at its own arrival); and the user's position bucket, one-hot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

from models.features.item_stats import (
    HARMONIC,
    PAIR_WINDOW,
    POSITION_EDGES,
    TRANSITION_WINDOW,
    ItemStats,
    inv_sqrt,
    log_share,
)

KNN_WINDOW = PAIR_WINDOW  # within it every pair of the user's items was counted, so leaving them out is exact
RECENT = 3  # the user's last items whose transitions score the next one, weighted 1/2^distance
HISTORY_TAIL = 4 * KNN_WINDOW  # how much of a user's history the features look at (positions of support items)
CONTEXT_NAMES: tuple[str, ...] = (  # "log_share": log(1 + N x the item's share of all such counts)
    "log_share_count", "log_share_decayed_1d", "log_share_decayed_14d", "knn_mean", "log_knn",
    "log_share_position", "log_share_transitions", "transition_share",
    *(f"position_is_{n}" for n in range(len(POSITION_EDGES) + 1)),  # the user's bucket, one-hot
)
N_CONTEXT = len(CONTEXT_NAMES)


@dataclass(frozen=True)
class UserViews:
    """What the features read of each user, as padded arrays (-1: none)."""

    tail: np.ndarray  # (B, T) the latest distinct items, oldest first, right-aligned
    counted: np.ndarray  # (B, T) bool: already counted into the statistics (not fresh, not padding)
    position: np.ndarray  # (B, T) each tail item's index in the user's history
    n_seen: np.ndarray  # (B,) distinct items in the whole history (the user's position)
    support: np.ndarray  # (B, S) support items oldest first, left-aligned
    recent: np.ndarray  # (B, RECENT) the latest support items, most recent first


def user_views(histories: Sequence[Sequence[int]], fresh: Sequence[int], supports: Sequence[Sequence[int]],
               n_items: int, recents: Sequence[Sequence[int]] | None = None) -> UserViews:
    """Views from each user's history (distinct item indices, first arrival first; the last ``fresh`` of them
    not yet counted) and support (item indices, oldest first); ``recents`` default to the supports' ends.
    Indices outside [0, n_items) are dropped, as the statistics dropped them."""
    b, t = len(histories), HISTORY_TAIL
    s = max([len(x) for x in supports] + [1])
    tail, counted = np.full((b, t), -1, np.int64), np.zeros((b, t), bool)
    position, n_seen = np.full((b, t), -1, np.int64), np.zeros(b, np.int64)
    support, recent = np.full((b, s), -1, np.int64), np.full((b, RECENT), -1, np.int64)
    for row, (history, new) in enumerate(zip(histories, fresh)):
        flags = [n < len(history) - new for n in range(len(history))]
        known = [(i, c) for i, c in zip(history, flags) if 0 <= i < n_items]
        n_seen[row] = len(known)
        last = known[-t:]
        if last:
            tail[row, t - len(last):] = [i for i, _ in last]
            counted[row, t - len(last):] = [c for _, c in last]
            position[row, t - len(last):] = np.arange(len(known) - len(last), len(known))
    for row, items in enumerate(supports):
        known_items = [i for i in items if 0 <= i < n_items]
        support[row, : len(known_items)] = known_items
        source = known_items if recents is None else [i for i in recents[row] if 0 <= i < n_items]
        latest = source[-RECENT:][::-1]
        recent[row, : len(latest)] = latest
    return UserViews(tail, counted, position, n_seen, support, recent)


class ContextReader:
    """One batch's view of the statistics: the votes are grouped once, then features of any columns are read
    (support, negatives, candidates) and the candidate sources use the same votes."""

    def __init__(self, stats: ItemStats, views: UserViews) -> None:
        self.stats, self.views = stats, views
        n = stats.n_items
        with stats.lock:
            window, mine = views.tail[:, -KNN_WINDOW:], views.counted[:, -KNN_WINDOW:]  # (B, W)
            safe = np.where(window >= 0, window, 0)
            self.inv = inv_sqrt(stats.n_users_of)  # (N,)
            w = np.where(window >= 0, self.inv[safe], 0.0)  # (B, W)
            w_out = np.where(mine, inv_sqrt(stats.n_users_of - 1.0)[safe], w)  # (B, W) the user left out
            self.knn = stats.cooc.votes(window, [w, w_out])  # per (user, item): sum_j w_j C[j, i], and w'_j
            self.n_window = np.maximum((window >= 0).sum(1), 1)[:, None]  # (B, 1)
            self.own = _Own(n, window, mine, w_out)
            recent = views.recent  # (B, R) most recent first
            decay = np.where(recent >= 0, 0.5 ** np.arange(recent.shape[1])[None, :], 0.0)  # (B, R)
            out_degree = np.maximum(stats.out_degree[np.where(recent >= 0, recent, 0)], 1.0)  # (B, R)
            self.next = stats.transitions.votes(recent, [decay, decay / out_degree])
            self.next_total = self.next.total(0)[:, None]  # (B, 1) the rows' mass
            self.arrival = _Arrival(stats, views)
            self.bucket = np.searchsorted(POSITION_EDGES, views.n_seen, side="right")  # (B,)
            self.position_totals = stats.position.sum(1)  # (P,)

    def at(self, cols: np.ndarray) -> np.ndarray:
        """(B, M, C) float32 features of items ``cols`` (B, M) (-1: padding, all zeros) for each user."""
        stats, n = self.stats, self.stats.n_items
        b, m = cols.shape
        out = np.zeros((b, m, N_CONTEXT), np.float32)
        safe = np.where(cols >= 0, cols, 0)
        with stats.lock:
            out[..., 0:3] = stats.shared(cols)
            knn = self.knn.at(cols) * self.inv[safe]  # (B, M)
            mean = knn / self.n_window
            w_i, is_own = self.own.weight(cols)
            if is_own.any():  # w'_i x (sum_j w'_j C[j, i] - sum over the user's other counted j of w'_j)
                left_out = w_i * np.maximum(self.knn.at(cols, 1) - (self.own.total - w_i), 0.0)
                knn = np.where(is_own, left_out, knn)
                mean = np.where(is_own, left_out / np.maximum(self.n_window - 1, 1), mean)
            out[..., 3], out[..., 4] = mean, np.log1p(knn)
            out[..., 5] = log_share(stats.position[self.bucket[:, None], safe],
                                    self.position_totals[self.bucket][:, None], n)
            out[..., 6] = log_share(self.next.at(cols, 0), self.next_total, n)
            out[..., 7] = self.next.at(cols, 1)
        self.arrival.write(cols, out)
        out[np.arange(b)[:, None], :, 8 + self.bucket[:, None]] = 1.0
        out[cols < 0] = 0.0
        return out


def implicit_context(stats: ItemStats, views: UserViews, cols: np.ndarray) -> np.ndarray:
    """(B, M, C) float32 features of items ``cols`` (B, M) (-1: padding) for each user."""
    return ContextReader(stats, views).at(cols)


def _keys(n: int, cols: np.ndarray) -> np.ndarray:
    """Batch-wide keys user x n + item (B, M) int64; -1 where cols are padding (never found)."""
    rows = np.arange(cols.shape[0], dtype=np.int64)[:, None]
    return np.where(cols >= 0, rows * n + cols, -1)


def _sorted_lookup(n: int, items: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted batch-wide keys of ``items`` (B, W) (-1 dropped) and their ``values``: a table ``lookup`` reads.
    A key that repeats keeps its last value in row order (a stable sort)."""
    keys = _keys(n, items).ravel()
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], values.ravel()[order]
    last = np.r_[keys[1:] != keys[:-1], True] & (keys >= 0) if len(keys) else np.zeros(0, bool)
    return keys[last], vals[last]


class _Own:
    """The user's counted window items and their left-out weights w'_j, to read at any columns."""

    def __init__(self, n: int, window: np.ndarray, mine: np.ndarray, w_out: np.ndarray) -> None:
        self.n = n
        self.keys, self.w = _sorted_lookup(n, np.where(mine, window, -1), w_out)
        self.total = (w_out * mine).sum(1)[:, None]  # (B, 1)

    def weight(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, M) w'_i where the column is one of the user's counted window items, and that mask."""
        if not len(self.keys):
            return np.zeros(cols.shape), np.zeros(cols.shape, bool)
        want = _keys(self.n, cols)
        slot = np.minimum(np.searchsorted(self.keys, want), len(self.keys) - 1)
        hit = (want >= 0) & (self.keys[slot] == want)
        return np.where(hit, self.w[slot], 0.0), hit


class _Arrival:
    """Support items' transition features as they stood at each item's arrival, read at any columns.

    From the ``RECENT`` support items before it, with the user's own transitions left out (the stream had not
    counted them then); a repeated item keeps its latest arrival. Why: scored from the latest items, an old
    support item looks like nothing anyone takes next (the latest items followed it), so adapting on it
    taught the head to distrust transitions.
    """

    def __init__(self, stats: ItemStats, views: UserViews) -> None:
        seq = views.support  # (B, S)
        self.n = stats.n_items
        f0, share = _arrival_features(stats, views) if seq.shape[1] >= 2 else (np.zeros(seq.shape),) * 2
        flat = np.arange(seq.size).reshape(seq.shape)
        self.keys, self.src = _sorted_lookup(self.n, seq, flat)
        self.f0, self.share = f0.ravel(), share.ravel()

    def write(self, cols: np.ndarray, out: np.ndarray) -> None:
        """Overwrite ``out[..., 6:8]`` where a column is a support item."""
        if not len(self.keys):
            return
        want = _keys(self.n, cols)
        slot = np.minimum(np.searchsorted(self.keys, want), len(self.keys) - 1)
        hit = (want >= 0) & (self.keys[slot] == want)
        src = self.src[slot]
        out[..., 6] = np.where(hit, self.f0[src], out[..., 6])
        out[..., 7] = np.where(hit, self.share[src], out[..., 7])


def _arrival_features(stats: ItemStats, views: UserViews) -> tuple[np.ndarray, np.ndarray]:
    """(B, S) x 2: each support position's transition log share and follower share from the ``RECENT``
    support items before it, the user's own transitions subtracted: C'[l, j] = C[l, j] - 1/d for the user's
    items d apart, and l's out-degree less the user's own from l."""
    n, seq = stats.n_items, views.support
    b, s = seq.shape
    gaps = np.arange(1, min(RECENT, s - 1) + 1)
    at = np.concatenate([np.arange(k, s) for k in gaps])  # (P,) the later item's position
    gap = np.repeat(gaps, [s - k for k in gaps])  # (P,) how far back its predecessor is
    rows, later = seq[:, at - gap], seq[:, at]  # (B, P)
    valid = (rows >= 0) & (later >= 0)
    decay = np.where(valid, 0.5 ** (gap - 1.0), 0.0)  # (B, P)
    counts = np.zeros(rows.shape)
    counts[valid] = stats.transitions.entries(rows[valid], later[valid])
    out_degree = stats.out_degree[np.where(valid, rows, 0)]
    pos_r, pos_c = _history_position(views, rows, n), _history_position(views, later, n)  # (B, P), -1: none
    apart = pos_c - pos_r
    mine = (pos_r >= 0) & (pos_c >= 0) & (apart > 0) & (apart <= TRANSITION_WINDOW)
    counts = np.maximum(counts - np.where(mine, 1.0 / np.maximum(apart, 1), 0.0), 0.0)
    after = np.clip(views.n_seen[:, None] - 1 - pos_r, 0, TRANSITION_WINDOW)
    out_degree = np.maximum(out_degree - np.where(pos_r >= 0, HARMONIC[after], 0.0), 0.0)
    flat = (np.arange(b)[:, None] * s + at[None, :]).ravel()  # (B x P,) each pair's (user, position)

    def per_position(values: np.ndarray) -> np.ndarray:
        return np.bincount(flat, values.ravel(), b * s).reshape(b, s)

    total, mass = per_position(decay * out_degree), per_position(decay * counts)
    share = per_position(decay * counts / np.maximum(out_degree, 1.0))
    return np.log1p(mass * (n / np.maximum(total, 1e-12))), share


def _history_position(views: UserViews, items: np.ndarray, n: int) -> np.ndarray:
    """(B, P) each item's index in its user's history among the counted tail items, -1 where not there."""
    keys = _keys(n, np.where(views.counted, views.tail, -1)).ravel()
    order = np.argsort(keys)
    keys, pos = keys[order], views.position.ravel()[order]
    want = _keys(n, items)
    if not len(keys):
        return np.full(items.shape, -1)
    slot = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    return np.where((want >= 0) & (keys[slot] == want), pos[slot], -1)


def full_context(stats: ItemStats, seen: Sequence[Sequence[int]], recent: Sequence[Sequence[int]],
                 users: Sequence[Hashable] | None = None,
                 support: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """(B, N, C) features of every catalogue item, for training and for offline callers without requests.

    ``seen``: each user's distinct items (first arrival first). With ``users`` and an offline replay's history
    book, a user's counted items are those the book holds (left out of their own kNN and transitions); items
    of ``seen`` not in the book come after, uncounted. ``recent``: the items whose followers score the
    transitions; ``support``: the items whose transitions are taken at their arrival (none without it).
    """
    histories, fresh = [], []
    for row, items in enumerate(seen):
        book = stats.book.history(users[row]) if users is not None and stats.book is not None else []
        known = set(book)
        extra = [i for i in items if i not in known]
        histories.append(list(book) + extra)
        fresh.append(len(extra))
    views = user_views(histories, fresh, support if support is not None else [[] for _ in seen], stats.n_items,
                       recents=recent)
    cols = np.broadcast_to(np.arange(stats.n_items), (len(seen), stats.n_items))
    return implicit_context(stats, views, np.ascontiguousarray(cols))
