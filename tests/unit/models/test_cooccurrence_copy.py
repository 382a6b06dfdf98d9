"""The sparse co-occurrence store: copies are equal and independent, and single entries read as the dense store's."""

from __future__ import annotations

import copy

import numpy as np

from models.features.cooccurrence import DenseCooccurrence, SparseCooccurrence


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


def test_both_stores_read_single_entries_alike():
    """``entries`` (the support transitions' lookup) gives the same counts from the dense and the sparse store."""
    dense, sparse = DenseCooccurrence(6), SparseCooccurrence(6)
    for store in (dense, sparse):
        store.add_pairs(0, [1, 2])
        store.add_edges([3, 4], 5, [1.0, 0.5])
    rows, cols = [0, 1, 3, 4, 5, 2], [1, 0, 5, 5, 3, 4]
    np.testing.assert_allclose(sparse.entries(rows, cols), dense.entries(rows, cols))
    np.testing.assert_allclose(dense.entries(rows, cols), [1.0, 1.0, 1.0, 0.5, 0.0, 0.0])
