"""What the recommender's output and input look like over sliding windows, as pure numpy computations.

The worker feeds every batch in (interacted items and event types, recommended lists and their scores); a few
times a second :class:`Monitor` is asked for a :class:`Snapshot`: catalogue coverage and popularity concentration
(Gini) of what was recommended, and population stability indices (PSI) between a *reference* window (the first
observations after start-up or a model swap) and the *current* sliding window, for three distributions:

- ``score``: recommendation scores, in bins at the reference's deciles (the model's view of the world);
- ``item_popularity``: interactions over items, hashed into a fixed number of bins (which items people use);
- ``event_type``: the mix of event types (view, click, ..., what people do).

Everything is bounded: windows are ring buffers of fixed capacity, items are indexed up to a cap. Nothing here
knows Kafka or Prometheus, so every number is a unit test away.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from itertools import chain
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PSI_SMOOTHING = 0.5  # pseudo-count per bin: an empty bin is rare, not impossible


def psi(reference: np.ndarray, current: np.ndarray, smoothing: float = PSI_SMOOTHING) -> float:
    """Population stability index between two histograms over the same bins.

    ``sum((c - r) * ln(c / r))`` over bin shares, with a pseudo-count per bin so that an empty bin gives a large
    but finite term. Rule of thumb: < 0.1 stable, 0.1-0.25 moving, > 0.25 a different population.
    """
    ref = np.asarray(reference, dtype=np.float64) + smoothing  # (B,)
    cur = np.asarray(current, dtype=np.float64) + smoothing  # (B,)
    ref /= ref.sum()
    cur /= cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def gini(counts: np.ndarray, population: int) -> float:
    """Gini coefficient of exposure over ``population`` items, of which only ``counts`` (the non-zero) are given.

    0 when every item is recommended equally often, towards 1 when a few items take all the exposure. Items
    never recommended count as zeros, which is what makes a popularity-biased recommender show up.
    """
    values = np.sort(np.asarray(counts, dtype=np.float64)[np.asarray(counts) > 0])  # (m,) ascending
    n = max(int(population), len(values))
    total = values.sum()
    if n == 0 or total <= 0:
        return 0.0
    ranks = np.arange(n - len(values) + 1, n + 1, dtype=np.float64)  # the zeros take ranks 1..n-m
    return float(np.sum((2 * ranks - n - 1) * values) / (n * total))


def coverage(counts: np.ndarray, population: int) -> float:
    """Share of the ``population`` items recommended at least once."""
    if population <= 0:
        return 0.0
    return min(1.0, float(np.count_nonzero(counts)) / population)


def quantile_edges(sample: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the sample's quantiles (duplicates removed: tied scores share a bin)."""
    qs = np.quantile(np.asarray(sample, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1])  # (bins - 1,)
    return np.unique(qs)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the ``len(edges) + 1`` bins the inner ``edges`` define."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def stable_bins(keys: Iterable[str], bins: int) -> np.ndarray:
    """A bin per key that is the same in every process (CRC-32, unlike Python's salted ``hash``)."""
    return np.fromiter((zlib.crc32(k.encode()) % bins for k in keys), dtype=np.int64)


class RingBuffer:
    """The last ``capacity`` values pushed (ints or floats), in a fixed array."""

    def __init__(self, capacity: int, dtype: type = np.int64) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._data = np.zeros(capacity, dtype=dtype)
        self._pos = 0
        self.size = 0

    @property
    def capacity(self) -> int:
        return len(self._data)

    def push(self, values: np.ndarray) -> np.ndarray:
        """Append ``values``; returns the values that fell out of the window."""
        values = np.asarray(values, dtype=self._data.dtype)[-self.capacity:]
        k = len(values)
        if k == 0:
            return values
        idx = (self._pos + np.arange(k)) % self.capacity  # (k,)
        overwritten = max(0, self.size + k - self.capacity)  # the last `overwritten` slots held old values
        evicted = self._data[idx[k - overwritten:]].copy()
        self._data[idx] = values
        self._pos = (self._pos + k) % self.capacity
        self.size = min(self.capacity, self.size + k)
        return evicted

    def values(self) -> np.ndarray:
        """The window's values, oldest first."""
        if self.size < self.capacity:
            return self._data[: self.size].copy()
        return np.roll(self._data, -self._pos)


class SlidingCounts:
    """Counts per bin of the last ``capacity`` observations, updated incrementally."""

    def __init__(self, bins: int, capacity: int) -> None:
        self._ring = RingBuffer(capacity)
        self.counts = np.zeros(bins, dtype=np.int64)  # (bins,)

    @property
    def size(self) -> int:
        return self._ring.size

    def push(self, bins: np.ndarray) -> None:
        bins = np.asarray(bins, dtype=np.int64)
        n = len(self.counts)
        evicted = self._ring.push(bins)
        self.counts += np.bincount(bins[-self._ring.capacity:], minlength=n)
        self.counts -= np.bincount(evicted, minlength=n)


class Reference:
    """The first ``capacity`` observations, then frozen: what "before" means for drift."""

    def __init__(self, capacity: int, dtype: type = np.int64) -> None:
        self._data = np.zeros(capacity, dtype=dtype)
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size == len(self._data)

    def push(self, values: np.ndarray) -> None:
        take = np.asarray(values, dtype=self._data.dtype)[: len(self._data) - self.size]
        self._data[self.size: self.size + len(take)] = take
        self.size += len(take)

    def values(self) -> np.ndarray:
        return self._data[: self.size]


@dataclass(frozen=True)
class MonitorConfig:
    """Window sizes. Events: interactions; slots: recommended (item, score) pairs, top-K per list."""

    reference_events: int = 2000
    window_events: int = 2000
    reference_slots: int = 20000
    window_slots: int = 20000
    item_bins: int = 32  # hashed bins of the item-popularity distribution
    score_bins: int = 10  # quantile bins of the score distribution
    event_types: int = 6  # type codes 0..event_types-1 (stream.state.EVENT_TYPE_CODES)
    min_fill: float = 0.5  # a current window this full (of its capacity) is compared with a full reference
    max_items: int = 1 << 20  # item ids indexed for coverage before the index starts over


@dataclass(frozen=True)
class Snapshot:
    """The monitored figures now; ``None`` where there is not enough data yet."""

    coverage: float | None = None
    gini: float | None = None
    psi: dict[str, float] = field(default_factory=dict)  # signal -> PSI, only signals with enough data
    event_type_share: np.ndarray | None = None  # (event_types,) shares in the current window


class Monitor:
    """Sliding windows over what comes in and what goes out, reset as a whole (e.g. on a model swap)."""

    def __init__(self, config: MonitorConfig = MonitorConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        c = self.config
        self._items_ref = Reference(c.reference_events)
        self._items_now = SlidingCounts(c.item_bins, c.window_events)
        self._types_ref = Reference(c.reference_events)
        self._types_now = SlidingCounts(c.event_types, c.window_events)
        self._scores_ref = Reference(c.reference_slots, dtype=np.float64)
        self._scores_now = RingBuffer(c.window_slots, dtype=np.float64)
        self._score_edges: np.ndarray | None = None
        self._score_ref_counts = np.zeros(0, dtype=np.int64)
        self._index: dict[str, int] = {}
        self._recs_now = RingBuffer(c.window_slots)
        self._rec_counts = np.zeros(0, dtype=np.int64)  # (len(index),) grows with the index

    # --- input ------------------------------------------------------------------------------------------------
    def observe_events(self, item_ids: Sequence[str], type_codes: Sequence[int]) -> None:
        """Interactions newly counted into state, in order."""
        if not item_ids:
            return
        items = stable_bins(item_ids, self.config.item_bins)
        types = np.clip(np.asarray(type_codes, dtype=np.int64), 0, self.config.event_types - 1)
        self._into_reference(self._items_ref, items)
        self._into_reference(self._types_ref, types)
        self._items_now.push(items)
        self._types_now.push(types)

    def observe_lists(self, lists: Sequence[Sequence[str]], scores: Sequence[Sequence[float]]) -> None:
        """Recommended lists and their scores (non-finite scores are left out of the score distribution)."""
        flat_scores = np.fromiter(chain.from_iterable(scores), dtype=np.float64)  # one array, not one per list
        flat_scores = flat_scores[np.isfinite(flat_scores)]
        if len(flat_scores):
            self._into_reference(self._scores_ref, flat_scores)
            self._scores_now.push(flat_scores)
        items = list(chain.from_iterable(lists))
        if items:
            self._count_recommended(self._indices(items))

    @staticmethod
    def _into_reference(ref: Reference, values: np.ndarray) -> None:
        if not ref.full:
            ref.push(values)

    def _indices(self, items: list[str]) -> np.ndarray:
        if len(self._index) + len(items) > self.config.max_items:
            log.warning("more than %d distinct recommended items: coverage window starts over",
                        self.config.max_items)
            self._index.clear()
            self._recs_now = RingBuffer(self.config.window_slots)
            self._rec_counts = np.zeros(0, dtype=np.int64)
        index = self._index
        return np.fromiter((index.setdefault(i, len(index)) for i in items), dtype=np.int64, count=len(items))

    def _count_recommended(self, idx: np.ndarray) -> None:
        if len(self._index) > len(self._rec_counts):
            grown = np.zeros(max(len(self._index), 2 * len(self._rec_counts)), dtype=np.int64)
            grown[: len(self._rec_counts)] = self._rec_counts
            self._rec_counts = grown
        evicted = self._recs_now.push(idx)
        n = len(self._rec_counts)
        self._rec_counts += np.bincount(idx[-self._recs_now.capacity:], minlength=n)
        self._rec_counts -= np.bincount(evicted, minlength=n)

    # --- output -----------------------------------------------------------------------------------------------
    def snapshot(self, catalogue_size: int) -> Snapshot:
        """The figures over the current windows; O(window) work, meant for a few times a second at most."""
        drift: dict[str, float] = {}
        c = self.config
        if self._ready(self._items_ref, self._items_now.size, c.window_events):
            ref_counts = np.bincount(self._items_ref.values(), minlength=c.item_bins)
            drift["item_popularity"] = psi(ref_counts, self._items_now.counts)
        if self._ready(self._types_ref, self._types_now.size, c.window_events):
            ref_counts = np.bincount(self._types_ref.values(), minlength=c.event_types)
            drift["event_type"] = psi(ref_counts, self._types_now.counts)
        if self._ready(self._scores_ref, self._scores_now.size, c.window_slots):
            if self._score_edges is None:  # the reference is frozen from here on: bin it once
                self._score_edges = quantile_edges(self._scores_ref.values(), c.score_bins)
                self._score_ref_counts = histogram(self._scores_ref.values(), self._score_edges)
            drift["score"] = psi(self._score_ref_counts, histogram(self._scores_now.values(), self._score_edges))
        shares = None
        if self._types_now.size:
            shares = self._types_now.counts / self._types_now.size
        recs = self._rec_counts[self._rec_counts > 0]
        population = max(catalogue_size, len(recs))
        return Snapshot(
            coverage=coverage(recs, population) if self._recs_now.size else None,
            gini=gini(recs, population) if self._recs_now.size else None,
            psi=drift,
            event_type_share=shares,
        )

    def _ready(self, ref: Reference, now_size: int, now_capacity: int) -> bool:
        return ref.full and now_size >= self.config.min_fill * now_capacity
