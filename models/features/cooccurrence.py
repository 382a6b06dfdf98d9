"""Symmetric item co-occurrence counts that grow one pair set at a time, for incremental item-kNN.

Two stores behind one interface: a dense matrix for small catalogues (MovieLens: 1,682 items, 11 MB), and rows
of growable (column, count) arrays for large ones (Last.fm: 17,632 items would need 1.2 GB dense, while only a
few million pairs ever co-occur).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

DENSE_MAX_ITEMS = 4096


class Cooccurrence(Protocol):
    def add_pairs(self, item: int, others: Sequence[int]) -> None:
        """Count one more co-occurrence of ``item`` with each of ``others`` (both directions)."""

    def weighted_rows(self, rows: Sequence[int], weights: np.ndarray) -> np.ndarray:
        """(n_items,) = sum over r of weights[r] * C[rows[r], :]."""

    def add_edges(self, sources: Sequence[int], target: int, weights: Sequence[float]) -> None:
        """Directed: C[sources[r], target] += weights[r] (item-to-next-item transitions)."""

    def entries(self, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        """(R,) = C[rows[r], cols[r]]: single counts, without gathering whole rows."""

    def grow(self, extra: int) -> None:
        """Make room for ``extra`` new items (no co-occurrences yet)."""


class DenseCooccurrence:
    def __init__(self, n_items: int) -> None:
        self.counts = np.zeros((n_items, n_items), np.float32)  # (n_items, n_items)

    def add_pairs(self, item: int, others: Sequence[int]) -> None:
        if others:
            idx = np.asarray(others, np.int64)
            self.counts[item, idx] += 1.0
            self.counts[idx, item] += 1.0

    def add_edges(self, sources: Sequence[int], target: int, weights: Sequence[float]) -> None:
        if len(sources):
            np.add.at(self.counts, (np.asarray(sources, np.int64), target), np.asarray(weights, np.float32))

    def entries(self, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        return self.counts[np.asarray(rows, np.int64), np.asarray(cols, np.int64)].astype(np.float64)

    def weighted_rows(self, rows: Sequence[int], weights: np.ndarray) -> np.ndarray:
        block = np.take(self.counts, np.asarray(rows, np.int64), axis=0)  # (R, n_items)
        return (weights.astype(np.float32) @ block).astype(np.float64)  # float32: no upcast copy of the block

    def grow(self, extra: int) -> None:
        n = self.counts.shape[0] + extra
        grown = np.zeros((n, n), np.float32)
        grown[: n - extra, : n - extra] = self.counts
        self.counts = grown


class SparseCooccurrence:
    """Per item: a dict column -> slot, and arrays of columns and counts doubled in place when full."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.slot: list[dict[int, int]] = [{} for _ in range(n_items)]
        self.cols: list[np.ndarray] = [np.zeros(0, np.int64) for _ in range(n_items)]
        self.vals: list[np.ndarray] = [np.zeros(0, np.float64) for _ in range(n_items)]

    def __deepcopy__(self, memo: dict) -> SparseCooccurrence:
        """A copy row by row: ``copy.deepcopy``'s generic walk over millions of dict entries took seconds (the
        stream evaluation copies the item statistics once per model round and variant)."""
        copy = SparseCooccurrence.__new__(SparseCooccurrence)
        memo[id(self)] = copy
        copy.n_items = self.n_items
        copy.slot = [dict(slots) for slots in self.slot]
        copy.cols = [cols.copy() for cols in self.cols]
        copy.vals = [vals.copy() for vals in self.vals]
        return copy

    def add_edges(self, sources: Sequence[int], target: int, weights: Sequence[float]) -> None:
        for source, weight in zip(sources, weights):
            self._bump(source, target, weight)

    def _bump(self, row: int, col: int, by: float = 1.0) -> None:
        slots = self.slot[row]
        s = slots.get(col)
        if s is None:
            s = slots[col] = len(slots)
            if s >= len(self.cols[row]):
                grow = max(8, 2 * len(self.cols[row]))
                self.cols[row] = np.resize(self.cols[row], grow)
                self.vals[row] = np.concatenate([self.vals[row], np.zeros(grow - len(self.vals[row]))])
            self.cols[row][s] = col
        self.vals[row][s] += by

    def add_pairs(self, item: int, others: Sequence[int]) -> None:
        for other in others:
            self._bump(item, other)
            self._bump(other, item)

    def entries(self, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
        out = np.zeros(len(rows))
        for n, (r, c) in enumerate(zip(rows, cols)):
            s = self.slot[r].get(c)
            if s is not None:
                out[n] = self.vals[r][s]
        return out

    def weighted_rows(self, rows: Sequence[int], weights: np.ndarray) -> np.ndarray:
        sizes = [len(self.slot[r]) for r in rows]
        if not any(sizes):
            return np.zeros(self.n_items)
        cols = np.concatenate([self.cols[r][:n] for r, n in zip(rows, sizes)])
        vals = np.concatenate([self.vals[r][:n] * w for r, n, w in zip(rows, sizes, weights.tolist())])
        return np.bincount(cols, weights=vals, minlength=self.n_items).astype(np.float64)

    def grow(self, extra: int) -> None:
        self.n_items += extra
        self.slot.extend({} for _ in range(extra))
        self.cols.extend(np.zeros(0, np.int64) for _ in range(extra))
        self.vals.extend(np.zeros(0, np.float64) for _ in range(extra))


def make_cooccurrence(n_items: int) -> Cooccurrence:
    """Dense up to ``DENSE_MAX_ITEMS`` items, sparse rows beyond."""
    return DenseCooccurrence(n_items) if n_items <= DENSE_MAX_ITEMS else SparseCooccurrence(n_items)
