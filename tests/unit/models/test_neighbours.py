"""Each item's strongest neighbours, bounded: exact while a row fits, heavy hitters kept once it does not."""

from __future__ import annotations

import numpy as np

from models.features.neighbours import NeighbourTable, SortedVotes, group_sum, lookup, neighbours_for


def dense(table: NeighbourTable) -> np.ndarray:
    out = np.zeros((table.n_items, table.n_items))
    rows = np.repeat(np.arange(table.n_items), table.k)
    keep = table.ids.ravel() >= 0
    out[rows[keep], table.ids.ravel()[keep]] = table.vals.ravel()[keep]
    return out


def test_counts_are_exact_while_every_row_fits_in_any_batching():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 12, 500), rng.integers(0, 12, 500)
    weights = rng.random(500)
    truth = np.zeros((12, 12))
    np.add.at(truth, (rows, cols), weights)
    whole, pieces = NeighbourTable(12, 12), NeighbourTable(12, 12)
    whole.add(rows, cols, weights)
    for start in range(0, 500, 7):
        pieces.add(rows[start:start + 7], cols[start:start + 7], weights[start:start + 7])
    np.testing.assert_allclose(dense(whole), truth, rtol=1e-5)
    np.testing.assert_allclose(dense(pieces), truth, rtol=1e-5)
    np.testing.assert_allclose(whole.entries(rows[:20], cols[:20]), truth[rows[:20], cols[:20]], rtol=1e-5)


def test_a_full_row_keeps_its_heavy_hitters_and_overestimates_by_at_most_its_lightest_count():
    rng = np.random.default_rng(1)
    heavy = np.repeat(np.arange(5), 200)  # five columns of 200 each
    noise = rng.integers(5, 400, 600)  # a long tail of columns seen once or twice
    stream = rng.permutation(np.concatenate([heavy, noise]))
    table = NeighbourTable(400, 16)
    for start in range(0, len(stream), 50):
        part = stream[start:start + 50]
        table.add(np.zeros(len(part), np.int64), part, np.ones(len(part)))
    kept = dict(zip(table.ids[0].tolist(), table.vals[0].tolist()))
    assert set(range(5)) <= set(kept)
    lightest = min(kept.values())
    for col in range(5):
        assert 200 <= kept[col] <= 200 + lightest
    assert table.vals[0].sum() == len(stream)  # Space-Saving conserves the row's total


def test_gather_and_grouped_votes_read_what_was_counted():
    table = NeighbourTable(6, 3)
    table.add(np.array([0, 0, 1, 2]), np.array([1, 2, 2, 5]), np.array([2.0, 1.0, 4.0, 3.0]))
    ids, vals = table.gather(np.array([[0, 1], [2, -1]]))  # (2, 2, 3)
    assert ids.shape == (2, 2, 3) and (ids[1, 1] == -1).all() and (vals[1, 1] == 0).all()
    keys = np.where(ids >= 0, np.arange(2)[:, None, None] * 6 + ids, -1).ravel()
    found = keys >= 0
    grouped, sums = group_sum(keys[found], vals.ravel()[found])
    assert lookup(grouped, sums, np.array([[2, 1, 3], [11, 5, 0]])).tolist() == [[5.0, 2.0, 0.0], [3.0, 0.0, 0.0]]


def test_growing_adds_empty_rows_and_arrays_round_trip():
    table = NeighbourTable(3, 2)
    table.add(np.array([0]), np.array([2]), np.array([1.0]))
    table.grow(2)
    assert table.n_items == 5 and (table.ids[3:] == -1).all()
    back = NeighbourTable.from_arrays(**table.to_arrays())
    np.testing.assert_array_equal(back.ids, table.ids)


def test_dense_and_bounded_tables_vote_alike_while_rows_fit():
    """A small catalogue keeps exact counts; a bounded table that holds every column gives the same votes,
    reads and top items, so the features do not depend on which one a catalogue gets."""
    from models.features.neighbours import DenseTable

    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, 9, 300), rng.integers(0, 9, 300)
    weights = rng.random(300)
    dense, bounded = DenseTable(9), NeighbourTable(9, 9)
    dense.add(rows, cols, weights)
    bounded.add(rows, cols, weights)
    users = np.array([[0, 3, -1], [5, -1, -1]])
    w = [np.array([[1.0, 0.5, 0.0], [2.0, 0.0, 0.0]]), np.ones((2, 3))]
    want = np.array([[0, 1, 2, 8, -1], [4, 5, 6, 7, 3]])
    ids, counts = bounded.gather(users)
    sorted_votes = SortedVotes.of(9, ids, [counts * x[..., None] for x in w])  # what a huge batch would use
    a, b = dense.votes(users, w), bounded.votes(users, w)
    for column in (0, 1):
        for other in (b, sorted_votes):
            np.testing.assert_allclose(a.at(want, column), other.at(want, column), rtol=1e-5)
            np.testing.assert_allclose(a.total(column), other.total(column), rtol=1e-5)
            np.testing.assert_array_equal(a.top(4, column), other.top(4, column))
    np.testing.assert_allclose(dense.entries(rows[:9], cols[:9]), bounded.entries(rows[:9], cols[:9]), rtol=1e-5)
    np.testing.assert_allclose(dense.top_k(9).vals.sum(1), dense.counts.sum(1), rtol=1e-5)


def test_a_bounded_table_keeps_as_many_neighbours_as_its_memory_budget_allows():
    assert neighbours_for(17_632) == 400  # Last.fm: the long tails fit
    assert 50 < neighbours_for(100_000) < 400
    assert neighbours_for(10_000_000) == 50  # never fewer
