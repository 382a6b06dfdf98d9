"""Each item's strongest neighbours, K per item, counted as the stream goes: bounded memory, vectorised reads.

Item-to-item counts (co-occurrence, next-item transitions) have up to N^2 entries, and a full row costs O(N)
to read; a worker whose cost must not grow with the catalogue can afford neither. So each row keeps only its
``K`` heaviest columns, maintained by the Space-Saving rule (Metwally, Agrawal, El Abbadi, ICDT 2005): a new
column takes the row's lightest slot and inherits its count. Every column whose true count exceeds the row's
total / K is kept, and a kept count overestimates the truth by at most the row's smallest kept count; the
heavy neighbours item-kNN votes with are exactly the ones kept. Memory is N x K x 8 bytes (100k items at
K = 64: 51 MB), and reads gather (rows x K) blocks whatever N is.
"""

from __future__ import annotations

import numpy as np

EMPTY = -1  # the column id of a free slot


class NeighbourTable:
    """(N, K) column ids and counts per row; ``add`` takes weighted (row, col) increments in bulk."""

    def __init__(self, n_items: int, k: int) -> None:
        self.k = k
        self.ids = np.full((n_items, k), EMPTY, np.int32)  # (N, K)
        self.vals = np.zeros((n_items, k), np.float32)  # (N, K)

    @property
    def n_items(self) -> int:
        return self.ids.shape[0]

    def grow(self, extra: int) -> None:
        """Room for ``extra`` new rows (items), with no neighbours yet."""
        self.ids = np.concatenate([self.ids, np.full((extra, self.k), EMPTY, np.int32)])
        self.vals = np.concatenate([self.vals, np.zeros((extra, self.k), np.float32)])

    # --- updates --------------------------------------------------------------------------------------------
    def add(self, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> None:
        """C[rows[p], cols[p]] += weights[p] for every p (repeated pairs add up); rows and cols in [0, N)."""
        if not len(rows):
            return
        n = self.n_items
        key, inverse = np.unique(rows.astype(np.int64) * n + cols, return_inverse=True)  # (P',)
        weight = np.bincount(inverse, weights, len(key)).astype(np.float32)
        rows, cols = (key // n).astype(np.int64), (key % n).astype(np.int32)
        match = self.ids[rows] == cols[:, None]  # (P', K)
        found = match.any(1)
        slot = match.argmax(1)
        self.vals[rows[found], slot[found]] += weight[found]  # (row, col) pairs are unique: no lost adds
        if not found.all():
            self._insert(rows[~found], cols[~found], weight[~found])

    def _insert(self, rows: np.ndarray, cols: np.ndarray, weight: np.ndarray) -> None:
        """New columns of rows: free slots first, exactly (heaviest first); then Space-Saving by water-filling.

        Space-Saving takes one column at a time into the lightest slot, which inherits its count; a batch of
        q new columns (total weight T) arriving at a full row raises its lightest slots like water: the j*
        lowest slots that the water covers end at one level L = (their sum + T) / j*, held by the heaviest of
        the new columns. Columns heavier than L (the heavy hitters) are never displaced, and the row's total
        grows by exactly T, as one at a time would give.
        """
        order = np.lexsort((-weight, rows))  # by row, heaviest first within a row
        rows, cols, weight = rows[order], cols[order], weight[order]
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])  # (R,) first pair of each row
        sizes = np.diff(np.r_[starts, len(rows)])
        rank = np.arange(len(rows)) - np.repeat(starts, sizes)  # (P,) within its row
        distinct = rows[starts]  # (R,)
        which = np.repeat(np.arange(len(distinct)), sizes)  # (P,) each pair's row among the distinct ones
        free_first = np.argsort(self.ids[distinct] != EMPTY, axis=1, kind="stable")  # (R, K) free slots first
        free = (self.ids[distinct] == EMPTY).sum(1)  # (R,)
        exact = rank < free[which]
        slot = free_first[which[exact], rank[exact]]
        self.ids[rows[exact], slot] = cols[exact]
        self.vals[rows[exact], slot] = weight[exact]
        spill = ~exact
        if spill.any():
            self._water_fill(distinct, which[spill], rank[spill] - free[which[spill]], cols[spill], weight[spill])

    def _water_fill(self, distinct: np.ndarray, which: np.ndarray, rank: np.ndarray, cols: np.ndarray,
                    weight: np.ndarray) -> None:
        """Full rows ``distinct[which]`` take columns ranked ``rank`` (heaviest first) by Space-Saving."""
        used_rows = np.unique(which)
        rows = distinct[used_rows]  # (R',) the full rows that take new columns
        local = np.searchsorted(used_rows, which)  # (Q,)
        incoming = np.bincount(local, weight, len(rows))[:, None]  # (R', 1) T
        count = np.bincount(local, minlength=len(rows))  # (R',) q
        lightest = np.argsort(self.vals[rows], axis=1, kind="stable")  # (R', K)
        v = np.take_along_axis(self.vals[rows].astype(np.float64), lightest, 1)  # (R', K) ascending
        level = (np.cumsum(v, 1) + incoming) / np.arange(1, self.k + 1)  # (R', K) level if j slots take it
        covered = np.cumprod(level >= v, axis=1).sum(1)  # (R',) j*: slots the water reaches
        taken = np.minimum(count, np.maximum(covered, 1))  # (R',)
        final = level[np.arange(len(rows)), taken - 1]  # (R',)
        place = rank < taken[local]
        slot = lightest[local[place], rank[place]]
        self.ids[rows[local[place]], slot] = cols[place]
        lowest = np.arange(self.k)[None, :] < taken[:, None]  # (R', K) the slots that take the level
        target = self.vals[rows]
        np.put_along_axis(target, lightest, np.where(lowest, final[:, None], v), 1)
        self.vals[rows] = target

    # --- reads ----------------------------------------------------------------------------------------------
    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(P,) float64 C[rows[p], cols[p]] (0 where the column is not among the row's K)."""
        if not len(rows):
            return np.zeros(0)
        match = self.ids[rows] == np.asarray(cols, np.int32)[:, None]  # (P, K)
        return np.where(match, self.vals[rows], 0.0).sum(1).astype(np.float64)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours of rows (B, R) (-1: padding): column ids (B, R, K) (-1 where empty or padding) and
        their counts (B, R, K) float64 (0 there)."""
        pad = rows < 0
        safe = np.where(pad, 0, rows)
        ids = np.where(pad[..., None], EMPTY, self.ids[safe])
        vals = np.where(pad[..., None], 0.0, self.vals[safe].astype(np.float64))
        return ids, vals

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "vals": self.vals}

    @classmethod
    def from_arrays(cls, ids: np.ndarray, vals: np.ndarray) -> "NeighbourTable":
        if ids.shape != vals.shape or ids.ndim != 2:
            raise ValueError(f"neighbour table: ids {ids.shape} and vals {vals.shape} must be equal (N, K)")
        table = cls(ids.shape[0], ids.shape[1])
        table.ids, table.vals = ids.astype(np.int32), vals.astype(np.float32)
        return table


def group_sum(keys: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and the sum of ``vals`` per key (1-D): the batch-wide group-by votes need."""
    if not len(keys):
        return keys, vals
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], vals[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(vals, starts)


def lookup(keys: np.ndarray, sums: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``sums`` at each of ``wanted`` (any shape) among sorted ``keys``, 0 where absent."""
    if not len(keys):
        return np.zeros(wanted.shape)
    slot = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[slot] == wanted, sums[slot], 0.0)
