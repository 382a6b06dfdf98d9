"""Item statistics kept online: per-item counts and each item's strongest neighbours, nothing per user.

A meta-learned head alone knows tastes, not the stream: which items are popular, which are popular *now*, which
items co-occur with what the user already has, which items follow which, and what new users pick first (on
MovieLens the sign-up flow shows every newcomer a similar set of films). These counts change with every event
and are cheap to keep, so they are not learned parameters: ``learn`` updates them as events arrive, and
``models.features.context`` turns them into a few features per (user, item) whose weights are part of the
user's adapted head (``models.core.metalearner``).

What a user contributes is decided by the user's own history, which arrives with the events (``Learned``):
the stream worker reads it from the user's state, so its memory holds per-item aggregates only, whatever the
number of users. Offline callers (training, evaluation) that replay a log use ``observe``, which keeps the
histories in a ``HistoryBook`` for them. Every per-event cost is bounded: co-occurrences pair a new item with
the user's last ``PAIR_WINDOW`` distinct items, transitions with the last ``TRANSITION_WINDOW``, and beyond
``DENSE_MAX_ITEMS`` items each item keeps its strongest neighbours, as many as a memory budget allows
(``models.features.neighbours``).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Hashable, Sequence

import numpy as np

from models.features.history import HistoryBook, Learned
from models.features.neighbours import (
    DENSE_MAX_ITEMS,
    DenseTable,
    Table,
    make_table,
    neighbours_for,
    table_from_arrays,
)

log = logging.getLogger(__name__)

DAY_S = 86400.0
HALF_LIVES_DAYS: tuple[float, ...] = (1.0, 14.0)
POSITION_EDGES: tuple[int, ...] = (1, 5, 10)  # a user's distinct items before the event: 0, 1-4, 5-9, 10+
TRANSITION_WINDOW = 5  # an item counts as following each of the user's previous 5 items, weighted 1/distance
PAIR_WINDOW = 30  # a new item co-occurs with the user's previous 30 distinct items (bounded cost per event)
HARMONIC = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, TRANSITION_WINDOW + 1))])  # sum_{d<=m} 1/d


def position_bucket(n_before: int) -> int:
    """Which ``POSITION_EDGES`` bucket a user with ``n_before`` distinct items falls in."""
    return int(np.searchsorted(POSITION_EDGES, n_before, side="right"))


class ItemStats:
    """Counts, time-decayed counts, position-conditioned counts, co-occurrence and transition neighbours.

    Decayed counts are as of the latest event time seen (``now``), not the wall clock, so a replay is
    deterministic. Thread-safe: the worker may learn from one thread while another ranks.
    """

    def __init__(self, n_items: int, neighbours: int | None = None) -> None:
        self.n_items = n_items
        self.counts = np.zeros(n_items)  # (N,) events
        self.n_users_of = np.zeros(n_items)  # (N,) distinct users
        self.taus = np.array([h * DAY_S / math.log(2.0) for h in HALF_LIVES_DAYS])  # (L,)
        self.decayed = np.zeros((len(self.taus), n_items))  # (L, N) scaled by exp((t_ref - now) / tau)
        self.t_ref: float | None = None
        self.now: float | None = None
        self.position = np.zeros((len(POSITION_EDGES) + 1, n_items))  # (P, N) first-time events by position
        self.neighbours = neighbours
        self.cooc: Table = make_table(n_items, neighbours)  # symmetric
        self.transitions: Table = make_table(n_items, neighbours)  # directed: earlier item -> later item
        self.out_degree = np.zeros(n_items)  # (N,) total transition weight out of each item (exact)
        self.events = 0
        self.rating_sum = np.zeros(n_items)  # (N,) sum of the ratings observed (events with a value)
        self.rating_count = np.zeros(n_items)  # (N,)
        self.book: HistoryBook | None = None  # offline replays only (``observe``); the stream never has one
        self.version = 0  # bumped by every update: lets readers cache what they derive per version
        self._lock = threading.RLock()

    def __getstate__(self) -> dict:
        """Copies and pickles carry the counts, not the lock."""
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def lock(self) -> threading.RLock:
        """Held by readers that derive features, so a batch reads one consistent state."""
        return self._lock

    # --- persistence ----------------------------------------------------------------------------------------
    def to_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and JSON-able metadata that ``from_state`` rebuilds this from (saved beside a checkpoint).

        Users' histories are not saved: a served model learns each user's history from the user's state."""
        with self._lock:
            arrays = {
                "counts": self.counts, "n_users_of": self.n_users_of, "decayed": self.decayed,
                "position": self.position, "out_degree": self.out_degree,
                "rating_sum": self.rating_sum, "rating_count": self.rating_count,
                **{f"cooc_{k}": v for k, v in self.cooc.to_arrays().items()},
                **{f"transitions_{k}": v for k, v in self.transitions.to_arrays().items()},
            }
            meta = {"n_items": self.n_items, "t_ref": self.t_ref, "now": self.now, "events": self.events}
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> "ItemStats":
        stats = cls(int(meta["n_items"]))
        for name in ("counts", "n_users_of", "decayed", "position", "out_degree", "rating_sum", "rating_count"):
            if name not in arrays or arrays[name].shape != getattr(stats, name).shape:
                raise ValueError(f"item statistics: {name} is missing or mis-shaped")
            setattr(stats, name, arrays[name].astype(np.float64))
        for name in ("cooc", "transitions"):
            saved = {k[len(name) + 1:]: v for k, v in arrays.items() if k.startswith(f"{name}_")}
            if "vals" not in saved or not ({"ids"} <= set(saved) or {"rows", "cols"} <= set(saved)):
                raise ValueError(f"item statistics: {name} neighbours are missing (saved by an older version)")
            table = table_from_arrays(stats.n_items, saved)
            if table.n_items != stats.n_items:
                raise ValueError(f"item statistics: {name} has {table.n_items} rows for {stats.n_items} items")
            setattr(stats, name, table)
        stats.t_ref, stats.now, stats.events = meta["t_ref"], meta["now"], int(meta["events"])
        return stats

    # --- updates --------------------------------------------------------------------------------------------
    def grow(self, extra: int) -> None:
        """Room for ``extra`` new items, which start with no events."""
        if extra <= 0:
            return
        with self._lock:
            self.n_items += extra
            for name in ("counts", "n_users_of", "out_degree", "rating_sum", "rating_count"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(extra)]))
            self.decayed = np.concatenate([self.decayed, np.zeros((len(self.taus), extra))], axis=1)
            self.position = np.concatenate([self.position, np.zeros((len(self.position), extra))], axis=1)
            for name in ("cooc", "transitions"):
                table = getattr(self, name)
                table.grow(extra)
                if isinstance(table, DenseTable) and self.n_items > DENSE_MAX_ITEMS:  # too large to keep dense
                    setattr(self, name, table.top_k(self.neighbours or neighbours_for(self.n_items)))
            self.version += 1

    def forget(self, user: Hashable) -> None:
        """Drop an offline replay's history of one user (the stream keeps none); aggregate counts stay."""
        if self.book is not None:
            with self._lock:
                self.book.forget(user)

    def observe(self, users: Sequence[Hashable], items: Sequence[int], ts: Sequence[float],
                values: Sequence[float | None] | None = None, weights: Sequence[float] | None = None) -> None:
        """Offline replays: time-ordered events (user, item index, seconds[, rating][, count weight]); the
        users' histories are kept in a ``HistoryBook``. Items outside the catalogue are skipped."""
        keep = [n for n, item in enumerate(items) if 0 <= item < self.n_items]
        with self._lock:
            if self.book is None:
                self.book = HistoryBook()
            records = self.book.records([users[n] for n in keep], [items[n] for n in keep], [ts[n] for n in keep],
                                        None if values is None else [values[n] for n in keep],
                                        None if weights is None else [weights[n] for n in keep])
            self.learn(records)

    def learn(self, records: Sequence[Learned]) -> None:
        """Count each user's new events, given the user's distinct items before them (first arrival first).

        Within a user the events are taken in order; users are independent, so the result does not depend on
        how users' events interleave. Ratings (a finite ``value``) also feed the rating model's item means. An
        event may carry a fourth element, its count weight (operator event weights): what it adds to the counts
        and decayed counts (1 otherwise); first arrivals (positions, co-occurrences, transitions) stay binary.
        """
        items, ts, ratings, pair_rows, pair_cols, edge_rows, edge_cols, edge_w = [], [], [], [], [], [], [], []
        firsts, buckets, weights = [], [], []
        for record in records:
            history = [i for i in record.history if 0 <= i < self.n_items]
            has = set(history)
            for event in record.events:
                item, t, value = event[0], event[1], event[2]
                if not 0 <= item < self.n_items:
                    continue
                items.append(item)
                ts.append(t)
                weights.append(event[3] if len(event) > 3 else 1.0)
                ratings.append(value if value is not None and math.isfinite(value) else math.nan)
                if item in has:
                    continue  # user sets are binary: a repeat changes no co-occurrence or position count
                firsts.append(item)
                buckets.append(position_bucket(len(history)))
                window = history[-PAIR_WINDOW:]
                pair_rows += window + [item] * len(window)
                pair_cols += [item] * len(window) + window
                previous = history[-TRANSITION_WINDOW:][::-1]  # most recent first
                edge_rows += previous
                edge_cols += [item] * len(previous)
                edge_w += [1.0 / (d + 1) for d in range(len(previous))]
                history.append(item)
                has.add(item)
        if not items:
            return
        with self._lock:
            self._count(np.asarray(items, np.int64), np.asarray(ts, np.float64), np.asarray(ratings),
                        np.asarray(weights, np.float64))
            np.add.at(self.position, (np.asarray(buckets, np.int64), np.asarray(firsts, np.int64)), 1.0)
            np.add.at(self.n_users_of, np.asarray(firsts, np.int64), 1.0)
            self.cooc.add(np.asarray(pair_rows, np.int64), np.asarray(pair_cols, np.int64),
                          np.ones(len(pair_rows)))
            rows, weights = np.asarray(edge_rows, np.int64), np.asarray(edge_w)
            self.transitions.add(rows, np.asarray(edge_cols, np.int64), weights)
            np.add.at(self.out_degree, rows, weights)
            self.version += 1

    def _count(self, items: np.ndarray, ts: np.ndarray, ratings: np.ndarray, weights: np.ndarray) -> None:
        """Counts, decayed counts (rebased so exp() stays finite) and rating sums of events (E,), each event
        adding its weight to the counts."""
        self.events += len(items)
        np.add.at(self.counts, items, weights)
        if self.t_ref is None:
            self.t_ref = float(ts[0])
        latest = float(ts.max())
        self.now = latest if self.now is None else max(self.now, latest)
        if ((latest - self.t_ref) / self.taus).max() > 300.0:  # move the reference to now
            self.decayed *= np.exp(-(latest - self.t_ref) / self.taus)[:, None]
            self.t_ref = latest
        for level, tau in enumerate(self.taus):
            np.add.at(self.decayed[level], items, weights * np.exp((ts - self.t_ref) / tau))
        rated = np.isfinite(ratings)
        np.add.at(self.rating_sum, items[rated], ratings[rated])
        np.add.at(self.rating_count, items[rated], 1.0)

    # --- features of every item (training and offline callers; serving asks for columns) ---------------------
    def context(self, seen: Sequence[Sequence[int]], recent: Sequence[Sequence[int]],
                users: Sequence[Hashable] | None = None,
                support: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """(B, N, C): ``models.features.context.full_context``."""
        from models.features.context import full_context

        return full_context(self, seen, recent, users, support)

    def rating_context(self, supports: Sequence[Sequence[tuple[int, float]]]) -> np.ndarray:
        """(B, N, R): ``models.features.rating_context.full_rating_context``."""
        from models.features.rating_context import full_rating_context

        return full_rating_context(self, supports)

    # --- per-item reads -------------------------------------------------------------------------------------
    def shared(self, cols: np.ndarray) -> np.ndarray:
        """(..., 3) the user-independent features of items ``cols`` (-1: none): log shares of the counts and
        of the decayed counts as of ``now``."""
        decay = np.zeros(len(self.taus)) if self.now is None else (self.t_ref - self.now) / self.taus
        valid = cols >= 0
        safe = np.where(valid, cols, 0)
        out = np.empty((*cols.shape, 3), np.float64)
        out[..., 0] = log_share(self.counts[safe], self.counts.sum(), self.n_items)
        for level in range(len(self.taus)):
            scale = math.exp(decay[level])
            out[..., 1 + level] = log_share(self.decayed[level][safe] * scale, self.decayed[level].sum() * scale,
                                            self.n_items)
        return np.where(valid[..., None], out, 0.0)


def log_share(counts: np.ndarray, total: float | np.ndarray, n: int) -> np.ndarray:
    """log(1 + N x share of the total): counts grow with the stream, shares do not, so a model trained on an
    early stretch of the stream reads the features of a later one on the same scale (1 = average)."""
    return np.log1p(counts * (n / np.maximum(total, 1e-12)))


def inv_sqrt(counts: np.ndarray) -> np.ndarray:
    """1 / sqrt(count), 0 where the count is 0: the cosine's normalisation."""
    return np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1e-12)), 0.0)
