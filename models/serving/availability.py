"""Which catalogue items may be recommended now: the operator's availability, as a mask over a catalogue.

An item event with ``available: false`` (out of stock, withdrawn) takes an item out of every list from the next
ranking on, and ``available: true`` brings it back. The set of unavailable item ids is replaced whole on every
change (one reference assignment), so a ranking on the model thread reads one consistent set while the item
follower changes it from its own thread; the mask over a catalogue is derived once per (set, catalogue) pair,
not per call.

Ids that the catalogue does not hold yet are remembered too: an item withdrawn before it was added stays out
when it arrives.
"""

from __future__ import annotations

import threading
from typing import Iterable, Mapping, Sequence

import numpy as np


class Availability:
    """The unavailable item ids, and the boolean mask they make over a catalogue's indices."""

    def __init__(self, unavailable: Iterable[str] = ()) -> None:
        self._unavailable: frozenset[str] = frozenset(unavailable)
        self._lock = threading.Lock()
        self._cached: tuple[frozenset[str], int, int, np.ndarray] | None = None  # (set, catalogue id, n, mask)

    @property
    def unavailable(self) -> frozenset[str]:
        return self._unavailable

    def set(self, changes: Mapping[str, bool]) -> None:
        """Apply ``changes`` (item id -> available); the new set replaces the old one whole."""
        with self._lock:
            now = set(self._unavailable)
            for item_id, available in changes.items():
                if available:
                    now.discard(item_id)
                else:
                    now.add(item_id)
            self._unavailable = frozenset(now)

    def reset(self, unavailable: Iterable[str]) -> None:
        """Replace the whole set (e.g. with what the item store holds, at start-up)."""
        with self._lock:
            self._unavailable = frozenset(unavailable)

    def banned(self, item_ids: Sequence[str], index: Mapping[str, int]) -> np.ndarray | None:
        """(N,) True where an item of the catalogue ``item_ids`` may not be recommended; None if none is
        banned (the common case costs nothing)."""
        unavailable = self._unavailable
        if not unavailable:
            return None
        cached = self._cached
        if cached is not None and cached[0] is unavailable and cached[1] == id(item_ids) and \
                cached[2] == len(item_ids):
            return cached[3]
        mask = np.zeros(len(item_ids), bool)
        rows = [index[i] for i in unavailable if i in index]
        mask[rows] = True
        self._cached = (unavailable, id(item_ids), len(item_ids), mask)
        return mask


def allowed_mask(only: Iterable[str], index: Mapping[str, int], n: int) -> np.ndarray:
    """(N,) True for the items of ``only`` that the catalogue holds (a request's restriction, e.g. a
    category)."""
    mask = np.zeros(n, bool)
    rows = [index[i] for i in only if i in index]
    mask[rows] = True
    return mask
