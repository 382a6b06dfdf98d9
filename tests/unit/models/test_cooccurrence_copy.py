"""A copied sparse co-occurrence store holds the same counts and is independent of the original."""

from __future__ import annotations

import copy

import numpy as np

from models.cooccurrence import SparseCooccurrence


def test_deepcopy_is_equal_and_independent():
    store = SparseCooccurrence(6)
    store.add_pairs(0, [1, 2])
    store.add_edges([3, 1], 4, [1.0, 0.5])
    twin = copy.deepcopy(store)
    ones = np.ones(6)
    for row in range(6):
        np.testing.assert_array_equal(twin.weighted_rows([row], ones[:1]), store.weighted_rows([row], ones[:1]))
    twin.add_pairs(0, [1, 5])
    assert store.weighted_rows([0], ones[:1])[1] == 1.0 and twin.weighted_rows([0], ones[:1])[1] == 2.0
    assert 5 not in store.slot[0] and store.weighted_rows([5], ones[:1]).sum() == 0.0
