"""The model peers: EASE's closed form and refits, SASRec learning a planted sequence, the rating item-CF."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.eval.methods import BatchRanker, StreamMethod
from models.eval.peers.ease import EASE, OUTSIDE, ease_weights
from models.eval.peers.item_cf import ItemCF
from models.eval.peers.sasrec import SASRec
from models.eval.peers.sasrec_net import SASRecConfig, SASRecNet, train_epochs, windows
from models.eval.stream_protocol import plan_stream, replay
from tests.unit.eval.conftest import make_log, planted_stream
from tests.unit.eval.test_metarec_methods import OneByOne
from tests.unit.eval.test_peers_counting import feed, onboarding, started


def brute_force_ease(x: np.ndarray, lam: float) -> np.ndarray:
    """Column by column: item j from every other item by ridge regression, its own weight held at 0."""
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = x[:, others]
        b[others, j] = np.linalg.solve(a.T @ a + lam * np.eye(n - 1), a.T @ x[:, j])
    return b


@pytest.mark.parametrize("lam", [0.5, 3.0])
def test_ease_closed_form_matches_a_brute_force_solve(lam):
    x = (np.random.default_rng(1).random((9, 6)) < 0.45).astype(float)
    np.testing.assert_allclose(ease_weights(x, lam), brute_force_ease(x, lam), atol=1e-10)
    assert np.all(np.diag(ease_weights(x, lam)) == 0)


def test_ease_scores_new_items_at_once_and_refits_on_schedule():
    ease = EASE(l2=0.1, retrain_every=4)
    log = make_log([(f"u{u}", f"i{i}", float(n)) for n, (u, i) in enumerate(
        [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)])] + [("u9", "i4", 99.0)])
    ease.fit_prefix(log.take(np.arange(8)))
    assert ease.fits == 1
    assert ease.rank(2, 1, {2}) == [3]  # 2 and 3 go together
    feed(ease, [(4, 0, 10.0)])
    assert ease.rank(4, 1, {0}) == [1]  # the new event counts before any refit
    feed(ease, [(4, 1, 11.0), (5, 2, 12.0), (5, 3, 13.0)])
    assert ease.fits == 2  # every 4 learned events


def test_ease_keeps_the_most_popular_items_above_its_cap_and_ranks_the_rest_last():
    ease = started(EASE(l2=1.0, max_items=2, retrain_every=1))
    feed(ease, [(0, 5, 0.0), (1, 5, 1.0), (1, 6, 2.0), (2, 6, 3.0), (2, 5, 4.0), (2, 7, 5.0)])
    assert sorted(ease.fitted.tolist()) == [5, 6]
    assert ease.scores(0)[7] == OUTSIDE < ease.scores(0)[6]
    assert ease.rank(0, 1, {5}) == [6]


def test_ease_gives_a_cold_user_the_fallback():
    ease = started(EASE(fallback={"cap": 10, "half_life_days": None}))
    feed(ease, onboarding(range(8)))
    assert ease.rank(26, 1, set()) == [7]


def test_windows_cover_every_transition_once():
    inputs, targets = windows([[0, 1, 2, 3, 4, 5, 6]], max_len=3)
    pairs = {(int(a), int(b)) for row_in, row_t in zip(inputs, targets) for a, b in zip(row_in, row_t) if b}
    assert pairs == {(n + 1, n + 2) for n in range(6)}  # item n stored as n + 1; 0 = padding
    assert int((targets > 0).sum()) == 6


def test_sasrec_learns_a_planted_next_item_cycle():
    cycle = list(range(10))
    sequences = [[(start + n) % 10 for n in range(12)] for start in range(10) for _ in range(3)]
    net = SASRecNet(SASRecConfig(n_items=12, dim=16, blocks=1, max_len=8, dropout=0.0))
    train_epochs(net, sequences, epochs=60, seed=0, lr=1e-2)
    with torch.no_grad():
        top = net.last_scores(torch.tensor([[0, 0, 0, 0, 0, 3 + 1, 4 + 1, 5 + 1]])).argmax(-1)
    assert int(top) == cycle[6]  # after 3, 4, 5 comes 6


def test_sasrec_ranks_chunks_as_one_by_one_and_falls_back_for_cold_users():
    plan = plan_stream(planted_stream(seed=3, users=16), 0.3)
    settings = dict(blocks=1, epochs=2, dim=16, max_len=10, retrain_every=30)
    batched = SASRec(seed=1, **settings)
    assert isinstance(batched, BatchRanker) and isinstance(batched, StreamMethod)
    chunked = replay(batched, plan).summary()
    single = replay(OneByOne(SASRec(seed=1, **settings)), plan).summary()
    assert batched.notes["fits"] > 2 and batched.notes["epochs"][1:] == [1] * (batched.notes["fits"] - 1)
    assert chunked["hr@10"] == pytest.approx(single["hr@10"])
    cold = started(SASRec(seed=0, blocks=1, epochs=1, dim=8, max_len=5,
                          fallback={"cap": 10, "half_life_days": None}))
    feed(cold, onboarding(range(8)))
    cold._observe()
    assert cold.rank(28, 1, set()) == [7]


def test_item_cf_pulls_a_prediction_towards_the_users_residuals_on_similar_items():
    rows = []
    for u in range(12):  # a middling 3 for item 2, then items 0 and 1 alike: high (even users) or low (odd)
        high = 5.0 if u % 2 == 0 else 1.0
        rows += [(f"u{u}", "i2", 3.0 * u, 3.0), (f"u{u}", "i0", 3.0 * u + 1, high),
                 (f"u{u}", "i1", 3.0 * u + 2, high)]
    rows += [("u20", "i0", 100.0, 5.0), ("u21", "i0", 101.0, 1.0)]
    log = make_log(rows, explicit=True)
    fan, critic, item = log.user_ids.index("u20"), log.user_ids.index("u21"), log.item_ids.index("i1")
    gaps = {}
    for damping in (0.1, 1e9):  # 1e9: no pull from similar items, only the user's offset
        cf = ItemCF(bias_shrink=1.0, corated_shrink=1.0, damping=damping)
        cf.fit_prefix(log)
        gaps[damping] = cf.predict_rating(fan, item) - cf.predict_rating(critic, item)
    assert gaps[0.1] > gaps[1e9] + 1.0
    assert ItemCF.ranks is False


def test_item_cf_is_scored_on_ratings_only():
    plan = plan_stream(make_log([(f"u{n % 4}", f"i{n % 7}", float(n), float(1 + n % 5)) for n in range(40)],
                                explicit=True), 0.3)
    summary = replay(ItemCF(), plan).summary()
    assert summary["hr@10"]["all"] is None and 0 < summary["mae"] < 4  # no lists asked for, ratings scored


def test_model_peers_are_deterministic():
    plan = plan_stream(planted_stream(seed=2), 0.2)
    for build in (lambda: EASE(seed=4), lambda: SASRec(seed=4, epochs=2, blocks=1, dim=16)):
        assert replay(build(), plan).summary() == replay(build(), plan).summary()
    assert math.isfinite(replay(EASE(seed=4), plan).summary()["hr@10"]["all"])
