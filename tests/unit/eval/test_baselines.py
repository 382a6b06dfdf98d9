"""Each baseline learns what it claims to learn, one event at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.data.events import EventLog
from models.eval.baselines import DecayedPopularity, ItemKNN, Popularity
from models.eval.isgd import ISGD
from models.eval.methods import StreamMethod, top_k
from models.eval.river_mf import RiverBiasedMF
from models.eval.stream_protocol import plan_stream, replay
from models.features.cooccurrence import DenseCooccurrence, SparseCooccurrence
from tests.unit.eval.conftest import make_log, planted_stream

DAY = 86400.0


def started(method: StreamMethod, n_items: int = 6) -> StreamMethod:
    """``method`` warmed up on no events over a catalogue of ``n_items``."""
    method.fit_prefix(make_log([("u0", f"i{i}", 0.0) for i in range(n_items)]).take(np.arange(0)))
    return method


def feed(method: StreamMethod, events: list[tuple[int, int, float]]) -> None:
    for user, item, ts in events:
        method.learn(user, item, math.nan, 0, ts)


def test_popularity_ranks_the_most_frequent_item_first():
    pop = started(Popularity(seed=1))
    feed(pop, [(0, 5, 1), (1, 5, 2), (2, 5, 3), (0, 2, 4), (1, 2, 5), (2, 4, 6)])
    assert pop.rank(9, 3, set()) == [5, 2, 4]
    assert pop.rank(9, 2, {5}) == [2, 4]


def test_decayed_popularity_prefers_what_is_popular_now():
    old, new = 1, 3
    events = [(u, old, 0.0) for u in range(3)] + [(9, new, 100 * DAY)]
    pop, decayed = started(Popularity()), started(DecayedPopularity(half_life_days=14))
    feed(pop, events)
    feed(decayed, events)
    assert pop.rank(0, 1, set()) == [old]
    assert decayed.rank(0, 1, set()) == [new]


def test_decayed_popularity_survives_a_long_stream_without_overflow():
    decayed = started(DecayedPopularity(half_life_days=1))
    feed(decayed, [(0, i % 6, n * 10 * DAY) for n, i in enumerate(range(200))])  # 2,000 days
    assert np.all(np.isfinite(decayed.scores))
    assert decayed.rank(0, 1, set()) == [199 % 6]


def test_item_knn_recommends_co_occurring_items_over_popular_ones():
    knn = started(ItemKNN(seed=0))
    # items 0 and 1 go together; item 3 is the most popular but never seen with 0
    feed(knn, [(0, 0, 1), (0, 1, 2), (1, 0, 3), (1, 1, 4), (2, 3, 5), (3, 3, 6), (4, 3, 7), (5, 3, 8)])
    feed(knn, [(6, 0, 9)])
    assert knn.rank(6, 1, {0}) == [1]
    assert knn.rank(7, 1, set()) == [3]  # a user without history gets the most popular item


def test_item_knn_ignores_repeats():
    knn = started(ItemKNN())
    feed(knn, [(0, 0, 1), (0, 1, 2), (0, 1, 3), (0, 0, 4)])
    assert knn.n_users_of[[0, 1]].tolist() == [1.0, 1.0]


def test_sparse_and_dense_cooccurrence_agree():
    rng = np.random.default_rng(0)
    dense, sparse = DenseCooccurrence(30), SparseCooccurrence(30)
    for _ in range(200):
        item = int(rng.integers(30))
        others = rng.choice(30, int(rng.integers(0, 12)), replace=False).tolist()
        dense.add_pairs(item, others)
        sparse.add_pairs(item, others)
    rows, weights = [3, 7, 11], np.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(sparse.weighted_rows(rows, weights), dense.weighted_rows(rows, weights))


class RandomRanker:
    """Reference: a uniformly random list for every event."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def fit_prefix(self, log: EventLog) -> None:
        self.n_items = log.n_items

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return [int(i) for i in self.rng.permutation(self.n_items) if int(i) not in exclude][:k]

    def predict_rating(self, user: int, item: int) -> float | None:
        return None

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        pass


def test_isgd_beats_random_on_a_planted_stream():
    plan = plan_stream(planted_stream(seed=1, users=80), 0.3)
    isgd = replay(ISGD(seed=0), plan, k=5).summary()["hr@5"]["all"]
    rand = replay(RandomRanker(seed=0), plan, k=5).summary()["hr@5"]["all"]
    assert isgd > 1.5 * rand


def test_isgd_pulls_a_users_vector_towards_what_they_chose():
    isgd = started(ISGD(seed=0))
    before = float(isgd.P[0] @ isgd.Q[2])
    for _ in range(20):
        isgd.learn(0, 2, 1.0, 0, 0.0)
    assert abs(1 - isgd.P[0] @ isgd.Q[2]) < abs(1 - before)
    assert isgd.rank(0, 1, set()) == [2]  # the only known item


def test_river_mirror_ranks_like_river_itself():
    log = make_log([(f"u{n % 5}", f"i{(n * 7) % 13}", float(n), float(1 + n % 5)) for n in range(60)],
                   explicit=True)
    method = RiverBiasedMF(seed=0)
    method.fit_prefix(log)
    ours = method.rank(2, 5, set())
    known = [i for i in range(log.n_items) if method.known[i]]
    river_order = method.model.rank(2, set(known))
    assert ours == river_order[:5]
    assert 1.0 <= method.predict_rating(2, ours[0]) <= 5.0


def test_river_gives_no_rating_on_implicit_data():
    method = RiverBiasedMF(seed=0)
    method.fit_prefix(make_log([("u0", "i0", 1.0, 300.0), ("u1", "i1", 2.0, 5.0)]))
    assert method.predict_rating(0, 1) is None
    assert method.bias[0] > method.bias[1]  # log(1 + 300) pulled harder than log(1 + 5)


def test_top_k_breaks_ties_by_priority_and_skips_excluded():
    scores = np.array([1.0, 3.0, 3.0, 0.0, 3.0])
    priority = np.array([0.9, 0.1, 0.8, 0.5, 0.3])
    assert top_k(scores, 3, set(), priority) == [2, 4, 1]
    assert top_k(scores, 3, {2}, priority) == [4, 1, 0]
    assert top_k(np.array([-np.inf, 1.0]), 5, set(), np.zeros(2)) == [1]


@pytest.mark.parametrize("method", [Popularity, DecayedPopularity, ItemKNN, ISGD, RiverBiasedMF])
def test_every_baseline_is_a_stream_method_and_deterministic(method):
    plan = plan_stream(planted_stream(seed=2), 0.2)
    first = replay(method(seed=4), plan).summary()
    again = replay(method(seed=4), plan).summary()
    assert isinstance(method(seed=0), StreamMethod)
    assert first == again
