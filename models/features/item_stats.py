"""Item statistics kept online, and the per-(user, item) context features the model scores with.

A meta-learned head alone knows tastes, not the stream: which items are popular, which are popular *now*, which
items co-occur with what the user already has, and what new users pick first (on MovieLens the sign-up flow
shows every newcomer a similar set of films). These counts change with every event and are cheap to keep, so
they are not learned parameters: ``ItemStats.observe`` updates them as events arrive, and ``context`` turns them
into a few features per (user, item) whose weights are part of the user's adapted head (``models.core.metalearner``).

The trainer replays its log through an ``ItemStats`` and takes each task's features from the statistics as they
were just before the task's first query event; the ``Recommender`` owns one that the stream worker (or the
offline evaluation) feeds the events it sees, so training and serving compute features with the same code.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Hashable, Sequence

import numpy as np

from models.features.cooccurrence import Cooccurrence, DenseCooccurrence, make_cooccurrence

log = logging.getLogger(__name__)

DAY_S = 86400.0
HALF_LIVES_DAYS: tuple[float, ...] = (1.0, 14.0)
POSITION_EDGES: tuple[int, ...] = (1, 5, 10)  # a user's distinct items before the event: 0, 1-4, 5-9, 10+
TRANSITION_WINDOW = 5  # an item counts as following each of the user's previous 5 items, weighted 1/distance
RECENT = 3  # the user's last items whose transitions score the next one, weighted 1/2^distance
CONTEXT_NAMES: tuple[str, ...] = (  # "log_share": log(1 + N x the item's share of all such counts)
    "log_share_count", "log_share_decayed_1d", "log_share_decayed_14d", "knn_mean", "log_knn",
    "log_share_position", "log_share_transitions", "transition_share",
    *(f"position_is_{n}" for n in range(len(POSITION_EDGES) + 1)),  # the user's bucket, one-hot
)
N_CONTEXT = len(CONTEXT_NAMES)
RATING_SHRINK: tuple[float, ...] = (3.0, 25.0)  # prior counts of the shrunk item means: quick, and cautious
KNN_SHRINK = 1.0  # prior similarity mass of the item-kNN residual: few similar items, a smaller pull
USER_SHRINK = 5.0  # prior count of the user's mean residual
RATING_CONTEXT_NAMES: tuple[str, ...] = (  # the rating model's context (ModelConfig.objective == "rating")
    *(f"mean_dev_{k:g}" for k in RATING_SHRINK),  # (sum - n m) / (n + k): the item's rating above the mean
    "unrated",  # 1 / (1 + n): how little the stream has said about the item yet
    "knn_residual",  # the user's centred residuals (from item means), averaged by their items' cosine
    "log_knn_mass",  # log(1 + sum of those cosines): how much the average rests on
    "user_residual",  # sum of the user's residuals / (count + USER_SHRINK): their shrunk offset
)
N_RATING_CONTEXT = len(RATING_CONTEXT_NAMES)


def position_bucket(n_before: int) -> int:
    """Which ``POSITION_EDGES`` bucket a user with ``n_before`` distinct items falls in."""
    return int(np.searchsorted(POSITION_EDGES, n_before, side="right"))


class ItemStats:
    """Counts, time-decayed counts, co-occurrences and position-conditioned counts of every item.

    Users are keyed by any hashable id (the trainer uses log indices, the worker user id strings); each user's
    distinct items are remembered so a new item's co-occurrences with their earlier ones can be counted.
    Decayed counts are as of the latest event time seen (``now``), not the wall clock, so a replay is
    deterministic. Thread-safe: the worker may observe from one thread while another ranks.
    """

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.counts = np.zeros(n_items)  # (N,) events
        self.n_users_of = np.zeros(n_items)  # (N,) distinct users
        self.taus = np.array([h * DAY_S / math.log(2.0) for h in HALF_LIVES_DAYS])  # (L,)
        self.decayed = np.zeros((len(self.taus), n_items))  # (L, N) scaled by exp((t_ref - now) / tau)
        self.t_ref: float | None = None
        self.now: float | None = None
        self.position = np.zeros((len(POSITION_EDGES) + 1, n_items))  # (P, N) first-time events by position
        self.cooc: Cooccurrence = make_cooccurrence(n_items)
        self.transitions: Cooccurrence = make_cooccurrence(n_items)  # directed: earlier item -> later item
        self.out_degree = np.zeros(n_items)  # (N,) row sums of transitions
        self.history: dict[Hashable, list[int]] = {}
        self._has: dict[Hashable, set[int]] = {}
        self.events = 0
        self.rating_sum = np.zeros(n_items)  # (N,) sum of the ratings observed (events with a value)
        self.rating_count = np.zeros(n_items)  # (N,)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Copies and pickles carry the counts, not the lock."""
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- persistence ----------------------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and JSON-able metadata that ``from_state`` rebuilds this from (saved beside a checkpoint)."""
        with self._lock:
            users = list(self.history)
            arrays = {
                "counts": self.counts, "n_users_of": self.n_users_of, "decayed": self.decayed,
                "position": self.position, "out_degree": self.out_degree,
                "rating_sum": self.rating_sum, "rating_count": self.rating_count,
                "history_items": np.asarray([i for u in users for i in self.history[u]], np.int64),
                "history_sizes": np.asarray([len(self.history[u]) for u in users], np.int64),
            }
            for name in ("cooc", "transitions"):
                arrays.update({f"{name}_{k}": v for k, v in _pairs(getattr(self, name)).items()})
            meta = {"n_items": self.n_items, "t_ref": self.t_ref, "now": self.now, "events": self.events,
                    "users": [str(u) for u in users]}
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> "ItemStats":
        stats = cls(int(meta["n_items"]))
        for name in ("counts", "n_users_of", "decayed", "position", "out_degree"):
            if arrays[name].shape != getattr(stats, name).shape:
                raise ValueError(f"item statistics: {name} is {arrays[name].shape}")
            setattr(stats, name, arrays[name].astype(np.float64))
        for name in ("rating_sum", "rating_count"):  # absent from statistics saved before they were kept
            if name in arrays:
                setattr(stats, name, arrays[name].astype(np.float64).reshape(stats.n_items))
        stats.t_ref, stats.now, stats.events = meta["t_ref"], meta["now"], int(meta["events"])
        bounds = np.concatenate([[0], np.cumsum(arrays["history_sizes"])])
        for n, user in enumerate(meta["users"]):
            items = arrays["history_items"][bounds[n] : bounds[n + 1]].tolist()
            stats.history[user], stats._has[user] = items, set(items)
        for name in ("cooc", "transitions"):
            store = getattr(stats, name)
            rows, cols, vals = (arrays[f"{name}_{k}"] for k in ("rows", "cols", "vals"))
            if isinstance(store, DenseCooccurrence):
                store.counts[rows, cols] = vals
            else:
                for r, c, v in zip(rows.tolist(), cols.tolist(), vals.tolist()):
                    store.add_edges([r], c, [v])
        return stats

    # --- updates --------------------------------------------------------------------------------------------
    def forget(self, user: Hashable) -> None:
        """Drop what is kept about one user (their item list); the aggregate counts they added stay.

        A deleted user's history must not outlive the deletion, and a returning user starts at position 0.
        """
        with self._lock:
            self.history.pop(user, None)
            self._has.pop(user, None)

    def grow(self, extra: int) -> None:
        """Room for ``extra`` new items, which start with no events."""
        with self._lock:
            self.n_items += extra
            self.counts = np.concatenate([self.counts, np.zeros(extra)])
            self.n_users_of = np.concatenate([self.n_users_of, np.zeros(extra)])
            self.decayed = np.concatenate([self.decayed, np.zeros((len(self.taus), extra))], axis=1)
            self.position = np.concatenate([self.position, np.zeros((len(self.position), extra))], axis=1)
            self.cooc.grow(extra)
            self.transitions.grow(extra)
            self.out_degree = np.concatenate([self.out_degree, np.zeros(extra)])
            self.rating_sum = np.concatenate([self.rating_sum, np.zeros(extra)])
            self.rating_count = np.concatenate([self.rating_count, np.zeros(extra)])

    def observe(self, users: Sequence[Hashable], items: Sequence[int], ts: Sequence[float],
                values: Sequence[float | None] | None = None) -> None:
        """Take events in time order: (user, item index, seconds). Items outside the catalogue are skipped.

        ``values``: each event's rating (None or NaN: not a rating), for the rating model's item means; a
        caller that passes none leaves those means where they are."""
        with self._lock:
            for n, (user, item, t) in enumerate(zip(users, items, ts)):
                if 0 <= item < self.n_items:
                    self._observe_one(user, int(item), float(t))
                    value = None if values is None else values[n]
                    if value is not None and math.isfinite(value):
                        self.rating_sum[item] += float(value)
                        self.rating_count[item] += 1.0

    def _observe_one(self, user: Hashable, item: int, t: float) -> None:
        self.events += 1
        self.counts[item] += 1.0
        if self.t_ref is None:
            self.t_ref = t
        self.now = t if self.now is None else max(self.now, t)
        exponent = (t - self.t_ref) / self.taus  # (L,)
        if exponent.max() > 300.0:  # keep exp() finite: move the reference to now
            self.decayed *= np.exp(-exponent)[:, None]
            self.t_ref, exponent = t, np.zeros_like(exponent)
        self.decayed[:, item] += np.exp(exponent)
        has = self._has.setdefault(user, set())
        if item in has:
            return  # user sets are binary: a repeat changes no co-occurrence or position count
        items = self.history.setdefault(user, [])
        self.position[position_bucket(len(items)), item] += 1.0
        self.cooc.add_pairs(item, items)
        previous = items[-TRANSITION_WINDOW:][::-1]  # most recent first
        weights = [1.0 / (d + 1) for d in range(len(previous))]
        self.transitions.add_edges(previous, item, weights)
        self.out_degree[previous] += weights
        items.append(item)
        has.add(item)
        self.n_users_of[item] += 1.0

    # --- features -------------------------------------------------------------------------------------------
    def context(self, seen: Sequence[Sequence[int]], recent: Sequence[Sequence[int]],
                users: Sequence[Hashable] | None = None,
                support: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Features of every catalogue item for each user: (B, N, C) float32.

        ``seen``: each user's distinct items (any order): their count is the user's position, and the
        co-occurrence score is item-kNN's cosine sum over them (and its mean per seen item). ``recent``: each
        user's latest items, oldest first: what other users took next after them (on MovieLens the order in
        which the site lists films shows through). ``users``: the keys the statistics were fed; with them, a
        seen item's co-occurrence features leave the user's own pairs out (``_own_knn``). ``support``: each
        user's support items, oldest first: each one's transition features become those of its own arrival,
        from the items before it (``_support_next``).
        """
        with self._lock:
            shared = self._shared()  # (N, 3)
            knn = self._knn(seen)  # (B, N)
            sizes = np.array([len(s) for s in seen], np.float64)  # (B,)
            per_seen = knn / np.maximum(sizes, 1.0)[:, None]  # (B, N)
            for b, user in enumerate(users or ()):
                own, own_knn = self._own_knn(seen[b], user)
                knn[b, own] = own_knn
                per_seen[b, own] = own_knn / max(sizes[b] - 1.0, 1.0)
            buckets = [position_bucket(int(n)) for n in sizes]
            out = np.empty((len(seen), self.n_items, N_CONTEXT), np.float32)
            out[:, :, :3] = shared[None]
            out[:, :, 3] = per_seen
            out[:, :, 4] = np.log1p(knn)
            out[:, :, 5] = _log_share(self.position[buckets])
            counts, shares = self._next(recent)
            out[:, :, 6] = _log_share(counts)
            out[:, :, 7] = shares
            for b, items in enumerate(support or ()):
                own, at_arrival = self._support_next(items, users[b] if users else None)
                out[b, own, 6:8] = at_arrival
            out[:, :, 8:] = 0.0
            out[np.arange(len(seen)), :, [8 + k for k in buckets]] = 1.0
        return out

    def rating_context(self, supports: Sequence[Sequence[tuple[int, float]]]) -> np.ndarray:
        """The rating model's features of every item per user (B, N, R) float32 (``RATING_CONTEXT_NAMES``).

        ``supports``: each user's (item index, rating) pairs. A rating model learns an item's quality only
        when it is re-trained; the stream says it with every rating (river's BiasedMF gains its MAE by
        updating item biases online), so the item means are features. Shrunk deviations from the running
        global mean stay on one scale however long the stream runs. The user's residuals from those means,
        spread to similar items by the co-occurrence cosine (incremental item-kNN on ratings), say what the
        head's few steps cannot.
        """
        with self._lock:
            n, total = self.rating_count, self.rating_count.sum()
            mean = self.rating_sum.sum() / total if total else 0.0
            excess = self.rating_sum - n * mean  # (N,)
            shared = np.stack([excess / (n + k) for k in RATING_SHRINK] + [1.0 / (1.0 + n)], axis=1)  # (N, 3)
            item_mean = mean + excess / (n + RATING_SHRINK[0])  # (N,)
            inv = _inv_sqrt(self.n_users_of)  # (N,)
            out = np.zeros((len(supports), self.n_items, N_RATING_CONTEXT), np.float32)
            out[:, :, : shared.shape[1]] = shared[None]
            for b, pairs in enumerate(supports):
                kept = [(i, r) for i, r in pairs if 0 <= i < self.n_items]
                if not kept:
                    continue
                idx = np.array([i for i, _ in kept], np.int64)  # (S,)
                res = np.array([r for _, r in kept], np.float64) - item_mean[idx]  # (S,)
                mass = self.cooc.weighted_rows(idx, inv[idx]) * inv  # (N,) sum_j cos(i, j)
                centred = res - res.mean()  # (S,) the user's offset is the last feature's: not counted twice
                pull = self.cooc.weighted_rows(idx, inv[idx] * centred) * inv  # (N,) sum_j cos(i, j) centred_j
                out[b, :, 3] = pull / (mass + KNN_SHRINK)
                out[b, :, 4] = np.log1p(mass)
                out[b, :, 5] = res.sum() / (len(res) + USER_SHRINK)
        return out

    def _next(self, recent: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(B, N) x 2: transition counts from the user's last ``RECENT`` items (1/2^distance), and the same
        with each row normalised by its out-degree (the share of that item's followers)."""
        counts = np.zeros((len(recent), self.n_items))
        shares = np.zeros((len(recent), self.n_items))
        for b, items in enumerate(recent):
            last = [i for i in items if 0 <= i < self.n_items][-RECENT:][::-1]
            if not last:
                continue
            decay = 0.5 ** np.arange(len(last))
            counts[b] = self.transitions.weighted_rows(last, decay)
            shares[b] = self.transitions.weighted_rows(last, decay / np.maximum(self.out_degree[last], 1.0))
        return counts, shares

    def _support_next(self, support: Sequence[int], user: Hashable | None) -> tuple[np.ndarray, np.ndarray]:
        """Each support item's transition features as they stood when it arrived: from the ``RECENT`` support
        items before it, not from the user's latest ones. (item indices (S,), features (S, 2))

        Why: scored from the latest items, an old support item looks like nothing anyone takes next (the latest
        items followed it), so adapting on it taught the head to distrust transitions; at its arrival, what
        came before it is what the stream knew. The user's own transitions are left out (with ``user``), as the
        stream had not yet counted them then: C'[l, j] = C[l, j] - 1/d for the user's items d apart, and
        l's out-degree less the user's own from l. A repeated item keeps its latest arrival.
        """
        seq = np.asarray([i for i in support if 0 <= i < self.n_items], np.int64)  # (S,)
        feats = np.zeros((len(seq), 2))
        if len(seq) < 2:
            return seq, feats
        # every (predecessor, item) pair: the item at position s after the one at s - k, weighted 1/2^(k-1)
        gaps = range(1, min(RECENT, len(seq) - 1) + 1)
        at = np.concatenate([np.arange(k, len(seq)) for k in gaps])  # (P,) the later item's position
        gap = np.repeat(np.asarray(gaps), [len(seq) - k for k in gaps])  # (P,) how far back its predecessor is
        rows, cols, decay = seq[at - gap], seq[at], 0.5 ** (gap - 1.0)
        counts = self.transitions.entries(rows, cols)  # (P,)
        out_degree = self.out_degree[rows]  # (P,)
        history = self.history.get(user) if user is not None else None
        if history:
            where = _positions(np.asarray(history, np.int64), np.concatenate([rows, cols]))  # -1: not counted
            a, b = where[: len(rows)], where[len(rows) :]
            apart = b - a
            mine = (a >= 0) & (b >= 0) & (apart > 0) & (apart <= TRANSITION_WINDOW)
            counts = counts - np.where(mine, 1.0 / np.maximum(apart, 1), 0.0)
            after = np.clip(len(history) - 1 - a, 0, TRANSITION_WINDOW)  # the user's items after l (window)
            out_degree = out_degree - np.where(a >= 0, _HARMONIC[after], 0.0)
        counts, out_degree = np.maximum(counts, 0.0), np.maximum(out_degree, 0.0)
        total = np.bincount(at, decay * out_degree, len(seq))  # (S,) the predecessor rows' total
        mass = np.bincount(at, decay * counts, len(seq))
        feats[:, 0] = np.log1p(mass * (self.n_items / np.maximum(total, 1e-12)))
        feats[:, 1] = np.bincount(at, decay * counts / np.maximum(out_degree, 1.0), len(seq))
        return seq, feats

    def _shared(self) -> np.ndarray:
        """(N, 3) the user-independent features: log counts and log decayed counts as of ``now``."""
        decay = np.zeros(len(self.taus)) if self.now is None else (self.t_ref - self.now) / self.taus
        decayed = self.decayed * np.exp(decay)[:, None]  # (L, N)
        return _log_share(np.concatenate([self.counts[None], decayed])).T

    def _own_knn(self, seen: Sequence[int], user: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """The kNN score of the user's own counted items with this user left out of the statistics.

        A user's items co-occur with each other because the user had them all: scored with those pairs, every
        item the user took looks like what item-kNN predicts, so a support set cannot say whether this user
        follows item-kNN more or less than others do (the one thing adapting the context weights could learn).
        Leaving the user out, C'[i, j] = C[i, j] - 1 and n'_j = n_j - 1 for the counted items, gives item i
        the score item-kNN would give it from the user's other items. Returns (item indices, their scores).
        """
        counted = self._has.get(user)
        idx = np.asarray([i for i in seen if 0 <= i < self.n_items], np.int64)  # (S,)
        if not counted or not len(idx):
            return np.zeros(0, np.int64), np.zeros(0)
        mine = np.fromiter((i in counted for i in idx.tolist()), bool, len(idx))  # (S,)
        if not mine.any():
            return np.zeros(0, np.int64), np.zeros(0)
        w = _inv_sqrt(self.n_users_of[idx] - mine)  # (S,) each seen item's 1/sqrt(n'_j)
        rows = self.cooc.weighted_rows(idx, w)  # (N,) sum_j w_j C[j, :]
        own, w_own = idx[mine], w[mine]
        return own, w_own * (rows[own] - (w_own.sum() - w_own))  # minus sum over the user's other j of w_j

    def _knn(self, seen: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, N) sum over seen j of C[i, j] / sqrt(n_i n_j): incremental item-kNN's score."""
        inv = _inv_sqrt(self.n_users_of)  # (N,)
        out = np.zeros((len(seen), self.n_items))
        if isinstance(self.cooc, DenseCooccurrence):
            weights = np.zeros((len(seen), self.n_items), np.float32)  # (B, N)
            for b, items in enumerate(seen):
                idx = np.asarray([i for i in items if 0 <= i < self.n_items], np.int64)
                weights[b, idx] = inv[idx]
            out = (weights @ self.cooc.counts).astype(np.float64)  # (B, N)
        else:
            for b, items in enumerate(seen):
                idx = [i for i in items if 0 <= i < self.n_items]
                if idx:
                    out[b] = self.cooc.weighted_rows(idx, inv[idx])
        return out * inv[None, :]


_HARMONIC = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, TRANSITION_WINDOW + 1))])  # sum_{d<=m} 1/d


def _positions(history: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Each of ``items``' index in ``history`` (distinct items), -1 where absent: O((L + M) log L)."""
    order = np.argsort(history, kind="stable")
    ranked = history[order]
    slot = np.minimum(np.searchsorted(ranked, items), len(ranked) - 1)
    return np.where(ranked[slot] == items, order[slot], -1)


def _inv_sqrt(counts: np.ndarray) -> np.ndarray:
    """1 / sqrt(count), 0 where the count is 0: the cosine's normalisation."""
    return np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1e-12)), 0.0)


def _log_share(counts: np.ndarray) -> np.ndarray:
    """log(1 + N x share of the row's total): counts grow with the stream, shares do not, so a model trained
    on an early stretch of the stream reads the features of a later one on the same scale (1 = average)."""
    total = counts.sum(-1, keepdims=True)
    return np.log1p(counts * (counts.shape[-1] / np.maximum(total, 1e-12)))


def _pairs(store: Cooccurrence) -> dict[str, np.ndarray]:
    """A co-occurrence store as (rows, cols, vals) of its non-zero entries."""
    if isinstance(store, DenseCooccurrence):
        rows, cols = np.nonzero(store.counts)
        return {"rows": rows, "cols": cols, "vals": store.counts[rows, cols].astype(np.float64)}
    sizes = [len(slots) for slots in store.slot]  # type: ignore[attr-defined]
    return {
        "rows": np.repeat(np.arange(len(sizes)), sizes),
        "cols": np.concatenate([c[:n] for c, n in zip(store.cols, sizes)] or [np.zeros(0, np.int64)]),  # type: ignore[attr-defined]
        "vals": np.concatenate([v[:n] for v, n in zip(store.vals, sizes)] or [np.zeros(0)]),  # type: ignore[attr-defined]
    }
