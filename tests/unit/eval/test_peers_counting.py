"""The count-based peers learn what they claim: position popularity, item-kNN with its cold fallback, and
session-kNN with recency weights and last-item transitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.data.events import EventLog
from models.eval.methods import StreamMethod, top_k
from models.eval.peers.item_knn import ItemKNNFallback
from models.eval.peers.position_popularity import PositionCounts, PositionPopularity
from models.eval.peers.session_knn import SessionKNN
from models.eval.stream_protocol import plan_stream, replay
from tests.unit.eval.conftest import make_log, planted_stream

DAY = 86400.0


def empty_log(n_users: int = 30, n_items: int = 12) -> EventLog:
    """A log with no events over ``n_users`` users and ``n_items`` items (the id maps a replay would have)."""
    full = make_log([(f"u{n % n_users}", f"i{n % n_items}", 0.0) for n in range(max(n_users, n_items))])
    return full.take(np.arange(0))


def started(method: StreamMethod, n_users: int = 30, n_items: int = 12) -> StreamMethod:
    method.fit_prefix(empty_log(n_users, n_items))
    return method


def feed(method: StreamMethod, events: list[tuple[int, int, float]]) -> None:
    for user, item, ts in events:
        method.learn(user, item, math.nan, 0, ts)


def onboarding(users: range, first: int = 7, popular: int = 0) -> list[tuple[int, int, float]]:
    """Every user's first item is ``first``; after it they all take ``popular`` and two more items of their
    own. Four more users (10-13) start with item 11 and then take ``popular`` too, so ``popular`` is the most
    popular item overall but never anyone's first."""
    events = []
    for u in users:
        t = 10.0 * u
        events += [(u, first, t), (u, popular, t + 1), (u, 1 + u % 5, t + 2), (u, 1 + (u + 1) % 5, t + 3)]
    for u in range(10, 14):
        events += [(u, 11, 200.0 + u), (u, popular, 201.0 + u)]
    return events


def test_position_popularity_ranks_what_users_take_at_their_step():
    pop = started(PositionPopularity(cap=10))
    feed(pop, onboarding(range(8)))
    assert pop.counts.overall[0] > pop.counts.overall[7]  # 0 is the more popular overall
    assert pop.rank(20, 1, set()) == [7]  # a new user: what everyone took first
    feed(pop, [(21, 7, 100.0)])
    assert pop.rank(21, 1, {7}) == [0]  # their second step: what everyone took second


def test_position_popularity_with_a_half_life_prefers_recent_first_steps():
    old = [(u, 3, 0.0) for u in range(5)]
    new = [(5 + u, 4, 60 * DAY) for u in range(2)]
    plain, decayed = started(PositionPopularity()), started(PositionPopularity(half_life_days=7.0))
    feed(plain, old + new)
    feed(decayed, old + new)
    assert plain.rank(20, 1, set()) == [3]
    assert decayed.rank(20, 1, set()) == [4]


def test_position_counts_cap_pools_late_steps_and_ignore_repeats():
    counts = PositionCounts(6, cap=2)
    for n, item in enumerate([0, 1, 2, 3, 3, 0]):
        counts.learn(9, item, float(n))
    assert counts.position(9) == 2
    assert counts.by_position[:, :4].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]]


def test_top_k_breaks_ties_by_the_fallback_then_the_priority():
    scores, fallback = np.array([1.0, 0.0, 0.0, 0.0, 0.0]), np.array([0.0, 3.0, 3.0, 5.0, 0.0])
    priority = np.array([0.1, 0.2, 0.9, 0.5, 0.7])
    assert top_k(scores, 5, set(), priority, fallback) == [0, 3, 2, 1, 4]
    assert top_k(scores, 3, {3}, priority, fallback) == [0, 2, 1]


def test_item_knn_gives_a_cold_user_the_position_fallback_not_overall_popularity():
    knn = started(ItemKNNFallback(fallback={"cap": 10, "half_life_days": None}))
    feed(knn, onboarding(range(8)))
    assert knn.rank(25, 1, set()) == [7]  # no history: what users take first, though 0 is more popular
    feed(knn, [(25, 7, 500.0)])
    assert knn.rank(25, 1, {7}) == [0]  # with history: 0 co-occurs with 7 for every user


def test_item_knn_scores_co_occurring_items_of_the_recent_window():
    knn = started(ItemKNNFallback(window=1))
    feed(knn, [(u, 1, u) for u in range(4)] + [(u, 2, u + 0.5) for u in range(4)])  # 1 and 2 together
    feed(knn, [(u, 5, 10 + u) for u in range(4, 8)] + [(u, 6, 10.5 + u) for u in range(4, 8)])  # 5 and 6
    feed(knn, [(9, 1, 20.0), (9, 5, 21.0)])
    assert knn.rank(9, 1, {1, 5}) == [6]  # only the last item (5) counts with window 1
    assert started(ItemKNNFallback(window=None)).window is None


def transitions_world() -> list[tuple[int, int, float]]:
    """Six users take 1 then 2 (a planted transition); fourteen take 9 then 1, so more neighbours of a user
    with item 1 have 9 than 2, and only the transition rules point from 1 to 2."""
    events = []
    for u in range(6):
        events += [(u, 1, 100.0 * u), (u, 2, 100.0 * u + 1)]
    for u in range(6, 20):
        events += [(u, 9, 100.0 * u), (u, 1, 100.0 * u + 1)]
    return events


@pytest.mark.parametrize(("weight", "expected"), [(2.0, 2), (0.0, 9)])
def test_session_knn_recommends_a_planted_last_item_transition(weight, expected):
    sknn = started(SessionKNN(k=50, session=10, transitions=weight))
    feed(sknn, transitions_world())
    feed(sknn, [(25, 1, 5000.0)])
    assert sknn.rank(25, 1, {1}) == [expected]  # neighbours alone vote 9; the rule 1 -> 2 wins with weight
    assert sknn.transition_scores([1])[2] > 0 and sknn.transition_scores([1])[9] == 0


def test_session_knn_weights_recent_items_more():
    sknn = started(SessionKNN(k=2, session=10, transitions=0.0))
    feed(sknn, [(0, 1, 0.0), (0, 4, 1.0), (1, 2, 2.0), (1, 5, 3.0)])  # neighbour 0 has 1; neighbour 1 has 2
    feed(sknn, [(9, 1, 10.0), (9, 2, 11.0)])  # 2 is the more recent item: neighbour 1 weighs more
    scores = sknn.neighbour_scores(9, sknn.history[9])
    assert scores[5] > scores[4] > 0


def test_session_knn_gives_a_cold_user_the_fallback():
    sknn = started(SessionKNN(fallback={"cap": 10, "half_life_days": None}))
    feed(sknn, onboarding(range(8)))
    assert sknn.rank(27, 1, set()) == [7]


@pytest.mark.parametrize("method", [PositionPopularity, ItemKNNFallback, SessionKNN])
def test_count_peers_are_deterministic_stream_methods_that_beat_popularity_on_planted_tastes(method):
    from models.eval.baselines import Popularity

    plan = plan_stream(planted_stream(seed=2), 0.2)
    first = replay(method(seed=4), plan).summary()
    assert isinstance(method(seed=0), StreamMethod)
    assert first == replay(method(seed=4), plan).summary()
    if method is not PositionPopularity:
        assert first["hr@10"]["all"] > replay(Popularity(seed=4), plan).summary()["hr@10"]["all"]
