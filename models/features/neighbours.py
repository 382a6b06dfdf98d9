"""Each item's strongest neighbours, K per item, counted as the stream goes: bounded memory, vectorised reads.

Item-to-item counts (co-occurrence, next-item transitions) have up to N^2 entries, and a full row costs O(N)
to read; a worker whose cost must not grow with the catalogue can afford neither. So each row keeps only its
``K`` heaviest columns, maintained by the Space-Saving rule (Metwally, Agrawal, El Abbadi, ICDT 2005): a new
column takes the row's lightest slot and inherits its count. Every column whose true count exceeds the row's
total / K is kept, and a kept count overestimates the truth by at most the row's smallest kept count; the
heavy neighbours item-kNN votes with are exactly the ones kept. Memory is N x K x 8 bytes (100k items at
K = 160: 128 MB, the budget), and reads gather (rows x K) blocks whatever N is.

A small catalogue (up to ``DENSE_MAX_ITEMS``) keeps every count instead, in a dense matrix (``DenseTable``): on
MovieLens' 1,682 films an item co-occurs with most others, and the top 50 alone lost a fifth of the stream
HR@10. Its reads cost O(rows x N) with N bounded by that limit, so the cost per user stays bounded either way.
Both answer the same calls, and ``votes`` gives the per-(user, item) sums every feature and candidate source
reads.
"""

from __future__ import annotations

import numpy as np

EMPTY = -1  # the column id of a free slot
DENSE_MAX_ITEMS = 4096  # catalogues up to this size keep exact counts (16 M float32 = 64 MB at most)
TABLE_BYTES = 2**27  # what a bounded table may take (128 MiB): K = TABLE_BYTES / (N x 8), within K_RANGE
K_RANGE = (50, 400)  # on Last.fm (17.6k items) the top 400 keep 70% of kNN's usage-weighted mass, the top 50 30%
DENSE_VOTES_MAX = 2**22  # users x items up to which votes are summed into a dense (B, N) buffer (no sort)


def neighbours_for(n_items: int) -> int:
    """How many neighbours a bounded table keeps per item: as many as its memory budget allows, within
    ``K_RANGE``: a mid-size catalogue keeps its long tails, a huge one stays within memory."""
    return int(min(max(TABLE_BYTES // max(n_items * 8, 1), K_RANGE[0]), K_RANGE[1]))


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

    def votes(self, rows: np.ndarray, weights: list[np.ndarray]) -> "SortedVotes | DenseVotes":
        """Each user's sum over rows (B, R) (-1: none) of weight x the row's kept counts, per weight set.

        Summed into a dense (B, N) buffer when that is small (one ``bincount``), else grouped by a sort:
        the same sums either way, at a cost bounded by the rows' neighbours, not the catalogue."""
        ids, counts = self.gather(rows)  # (B, R, K)
        weighted = [counts * w[..., None] for w in weights]
        b, n = rows.shape[0], self.n_items
        if b * n > DENSE_VOTES_MAX:
            return SortedVotes.of(n, ids, weighted)
        keys = _batch_keys(n, ids.reshape(b, -1)).ravel()
        found = keys >= 0
        sums = np.stack([np.bincount(keys[found], w.ravel()[found], b * n).reshape(b, n) for w in weighted], 1)
        return DenseVotes(sums)  # (B, A, N)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "vals": self.vals}

    @classmethod
    def from_arrays(cls, ids: np.ndarray, vals: np.ndarray) -> "NeighbourTable":
        if ids.shape != vals.shape or ids.ndim != 2:
            raise ValueError(f"neighbour table: ids {ids.shape} and vals {vals.shape} must be equal (N, K)")
        table = cls(ids.shape[0], ids.shape[1])
        table.ids, table.vals = ids.astype(np.int32), vals.astype(np.float32)
        return table


class DenseTable:
    """Every count of a small catalogue, (N, N) float32: exact, and read by rows."""

    def __init__(self, n_items: int) -> None:
        self.counts = np.zeros((n_items, n_items), np.float32)

    @property
    def n_items(self) -> int:
        return self.counts.shape[0]

    def grow(self, extra: int) -> None:
        n = self.n_items + extra
        grown = np.zeros((n, n), np.float32)
        grown[: n - extra, : n - extra] = self.counts
        self.counts = grown

    def add(self, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> None:
        if len(rows):
            np.add.at(self.counts, (rows, cols), weights.astype(np.float32))

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.counts[np.asarray(rows, np.int64), np.asarray(cols, np.int64)].astype(np.float64)

    def votes(self, rows: np.ndarray, weights: list[np.ndarray]) -> "DenseVotes":
        pad = rows < 0
        block = self.counts[np.where(pad, 0, rows)]  # (B, R, N)
        sums = np.stack([np.einsum("brn,br->bn", block, np.where(pad, 0.0, w).astype(np.float32))
                         for w in weights], 1)  # (B, A, N)
        return DenseVotes(sums.astype(np.float64))

    def top_k(self, k: int) -> NeighbourTable:
        """The same counts as a bounded table (each row's ``k`` heaviest columns), for a catalogue grown
        past ``DENSE_MAX_ITEMS``."""
        table = NeighbourTable(self.n_items, k)
        order = np.argsort(-self.counts, axis=1, kind="stable")[:, :k]  # (N, k)
        vals = np.take_along_axis(self.counts, order, 1)
        table.ids = np.where(vals > 0, order, EMPTY).astype(np.int32)
        table.vals = np.where(vals > 0, vals, 0.0).astype(np.float32)
        return table

    def to_arrays(self) -> dict[str, np.ndarray]:
        rows, cols = np.nonzero(self.counts)
        return {"rows": rows.astype(np.int32), "cols": cols.astype(np.int32), "vals": self.counts[rows, cols]}

    @classmethod
    def from_arrays(cls, n_items: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> "DenseTable":
        table = cls(n_items)
        table.counts[rows.astype(np.int64), cols.astype(np.int64)] = vals
        return table


Table = NeighbourTable | DenseTable


def make_table(n_items: int, k: int | None = None) -> Table:
    """Exact counts up to ``DENSE_MAX_ITEMS`` items, each row's ``k`` heaviest beyond (by default as many as
    ``neighbours_for`` allows)."""
    if n_items <= DENSE_MAX_ITEMS:
        return DenseTable(n_items)
    return NeighbourTable(n_items, k or neighbours_for(n_items))


def table_to_arrays(table: Table) -> dict[str, np.ndarray]:
    return table.to_arrays()


def table_from_arrays(n_items: int, arrays: dict[str, np.ndarray]) -> Table:
    """What ``to_arrays`` saved: a dense table's triplets or a bounded table's (N, K) arrays."""
    if "ids" in arrays:
        return NeighbourTable.from_arrays(arrays["ids"], arrays["vals"])
    return DenseTable.from_arrays(n_items, arrays["rows"], arrays["cols"], arrays["vals"])


def _batch_keys(n: int, cols: np.ndarray) -> np.ndarray:
    """Batch-wide keys user x n + item (B, M) int64; -1 where cols are padding (never found)."""
    rows = np.arange(cols.shape[0], dtype=np.int64)[:, None]
    return np.where(cols >= 0, rows * n + cols, -1)


class SortedVotes:
    """Votes summed per (user, item), batch-wide: sorted keys user x N + item and their sums (V, A)."""

    def __init__(self, n_items: int, keys: np.ndarray, sums: np.ndarray, batch: int) -> None:
        self.n_items, self.keys, self.sums, self.batch = n_items, keys, sums, batch

    @classmethod
    def of(cls, n: int, ids: np.ndarray, weighted: list[np.ndarray]) -> "SortedVotes":
        """From neighbour ids (B, R, K) (-1: none) and value sets of the same shape: one sort serves all."""
        keys = _batch_keys(n, ids.reshape(ids.shape[0], -1)).ravel()
        found = keys >= 0
        grouped, sums = group_sum(keys[found], np.stack([w.ravel()[found] for w in weighted], 1))
        return cls(n, grouped, sums.reshape(len(grouped), len(weighted)), ids.shape[0])

    def at(self, cols: np.ndarray, column: int = 0) -> np.ndarray:
        """(B, M) the summed votes of items ``cols`` (0 where none, or padding)."""
        if not len(self.keys):
            return np.zeros(cols.shape)
        return lookup(self.keys, self.sums[:, column], _batch_keys(self.n_items, cols))

    def total(self, column: int = 0) -> np.ndarray:
        """(B,) each user's sum of all votes."""
        return np.bincount(self.keys // self.n_items, self.sums[:, column], self.batch) if len(self.keys) \
            else np.zeros(self.batch)

    def top(self, per_user: int, column: int = 0) -> np.ndarray:
        """(B, per_user) each user's most-voted items, best first (-1 where fewer)."""
        out = np.full((self.batch, per_user), -1, np.int64)
        if not len(self.keys) or per_user <= 0:
            return out
        users, items, vals = self.keys // self.n_items, self.keys % self.n_items, self.sums[:, column]
        order = np.lexsort((-vals, users))  # by user, heaviest first
        users, items = users[order], items[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        rank = np.arange(len(users)) - np.repeat(starts, np.diff(np.r_[starts, len(users)]))
        keep = rank < per_user
        out[users[keep], rank[keep]] = items[keep]
        return out


class DenseVotes:
    """Votes of a small catalogue as dense sums (B, A, N)."""

    def __init__(self, sums: np.ndarray) -> None:
        self.sums = sums

    def at(self, cols: np.ndarray, column: int = 0) -> np.ndarray:
        got = np.take_along_axis(self.sums[:, column], np.where(cols >= 0, cols, 0), 1)
        return np.where(cols >= 0, got, 0.0)

    def total(self, column: int = 0) -> np.ndarray:
        return self.sums[:, column].sum(1)

    def top(self, per_user: int, column: int = 0) -> np.ndarray:
        values = self.sums[:, column]  # (B, N)
        k = min(per_user, values.shape[1])
        out = np.full((values.shape[0], per_user), -1, np.int64)
        if k <= 0:
            return out
        part = np.argpartition(-values, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(values, part, 1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, 1)
        out[:, :k] = np.where(np.take_along_axis(values, best, 1) > 0, best, -1)
        return out


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
