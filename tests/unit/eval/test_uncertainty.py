"""Paired bootstrap over users: per-user sums, intervals that say level or not, and the results' keys."""

from __future__ import annotations

import numpy as np
import pytest

from models.eval.metrics import Accumulator
from models.eval.stream_summary import intervals
from models.eval.uncertainty import PairedBootstrap, UserSums, compare, user_sums


def sums(hits: list[float], points: list[float], first_hits: list[float] | None = None,
         first_points: list[float] | None = None) -> UserSums:
    out = UserSums.zeros(len(hits))
    out.hits, out.points = np.asarray(hits, float), np.asarray(points, float)
    out.first_hits = np.asarray(first_hits if first_hits is not None else hits, float)
    out.first_points = np.asarray(first_points if first_points is not None else points, float)
    return out


def test_user_sums_add_up_each_users_points_by_hand():
    acc = Accumulator(k=1, scale=(1.0, 2.0, 3.0))
    acc.add_ranking("0", [5], 5, user=0)  # a hit in the first ten
    acc.add_ranking("10-49", [5], 6, user=0)  # a miss later
    acc.add_ranking("5-9", [2], 2, user=1)
    acc.add_rating(2.4, 3.0, user=1)
    out = user_sums(acc, np.array([1, 0]), 2)  # the run's user 0 is pooled user 1
    assert out.hits.tolist() == [1, 1] and out.points.tolist() == [1, 2]
    assert out.first_hits.tolist() == [1, 1] and out.first_points.tolist() == [1, 1]
    assert out.abs_error.tolist() == pytest.approx([0.6, 0]) and out.abs_error_scale.tolist() == [1.0, 0]


def test_identical_methods_give_a_zero_interval_and_a_uniformly_better_one_is_above_zero():
    rng = np.random.default_rng(0)
    points = rng.integers(1, 30, 300).astype(float)
    base = rng.binomial(points.astype(int), 0.2).astype(float)
    boot = PairedBootstrap(300)
    same = compare(boot, sums(base, points), sums(base, points))
    assert same == {"all": [0.0, 0.0], "first10": [0.0, 0.0]}
    better = np.minimum(points, base + 1)  # one more hit for every user
    lo, hi = compare(boot, sums(better, points), sums(base, points))["all"]
    assert 0 < lo < (better.sum() - base.sum()) / points.sum() < hi


def test_noise_alone_gives_an_interval_that_includes_zero():
    rng = np.random.default_rng(1)
    points = np.full(400, 20.0)
    a, b = rng.binomial(20, 0.3, 400).astype(float), rng.binomial(20, 0.3, 400).astype(float)
    lo, hi = compare(PairedBootstrap(400, seed=3), sums(a, points), sums(b, points))["all"]
    assert lo < 0 < hi


def test_ratio_point_is_the_pooled_ratio():
    a, b = sums([3, 4, 5], [10, 10, 10]), sums([2, 2, 2], [10, 10, 10])
    lo, point, hi = PairedBootstrap(3).ratio(a.first_hits, a.first_points, b.first_hits, b.first_points)
    assert point == pytest.approx(2.0) and lo <= point <= hi


def test_the_results_carry_the_issue_s_interval_keys():
    block = {"hr@10": {"all": 0.2}, "mae": None}
    methods = {"metarec": {"hr@10": {"all": 0.3}, "mae": 0.7}, "metarec-no-adapt": {"hr@10": {"all": 0.28},
               "mae": 0.8}, "item-knn": block, "ease": {"hr@10": {"all": 0.25}, "mae": None},
               "river-biasedmf": {"hr@10": {"all": 0.05}, "mae": 0.75}}
    rng = np.random.default_rng(2)
    data = {n: sums(rng.binomial(10, p, 50), np.full(50, 10.0)) for n, p in
            (("metarec", 0.3), ("metarec-no-adapt", 0.28), ("item-knn", 0.2), ("ease", 0.25),
             ("river-biasedmf", 0.05))}
    for n in data:
        data[n].abs_error, data[n].abs_error_scale, data[n].rated = (rng.random(50) * 10, rng.random(50) * 10,
                                                                      np.full(50, 10.0))
    out = intervals(methods, data, 50, 10)
    assert out["best_peer"] == "ease" and out["best_rating_peer"] == "river-biasedmf"
    ci = out["ci95"]
    for key in ("metarec_minus_best_peer", "adapted_minus_no_adapt"):
        assert set(ci[key]) == {"all", "first10"} and all(len(ci[key][p]) == 2 for p in ("all", "first10"))
    lo, point, hi = ci["first10_ratio_to_best_peer"]
    assert lo <= point <= hi
    assert set(ci["mae_metarec_minus_best_rating_peer"]) == {"as_predicted", "on_scale"}
    assert set(out["ci95_by_peer"]) == {"item-knn", "ease", "river-biasedmf"}
