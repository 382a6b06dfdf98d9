"""nDCG@3 and the pooled rating errors on hand-checkable examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.eval.coldstart.metrics import ndcg_at_k, scenario_metrics


def test_ndcg_at_3_by_hand() -> None:
    actual = np.array([1.0, 5.0, 3.0, 4.0])
    predicted = np.array([0.9, 0.1, 0.5, 0.3])  # ranks items 0, 2, 3 first: gains 1, 7, 15
    dcg = 1 / math.log2(2) + 7 / math.log2(3) + 15 / math.log2(4)
    ideal = 31 / math.log2(2) + 15 / math.log2(3) + 7 / math.log2(4)  # items 1, 3, 2
    assert ndcg_at_k(predicted, actual, 3) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(predicted, actual, 3) == pytest.approx(0.29380, abs=1e-5)


def test_ndcg_perfect_and_ties_keep_query_order() -> None:
    actual = np.array([2.0, 4.0, 5.0, 1.0])
    assert ndcg_at_k(actual, actual, 3) == pytest.approx(1.0)
    tied = ndcg_at_k(np.zeros(4), actual, 3)  # ranking = query order: gains 3, 15, 31
    expected = (3 + 15 / math.log2(3) + 31 / 2) / (31 + 15 / math.log2(3) + 3 / 2)
    assert tied == pytest.approx(expected)


def test_scenario_metrics_pool_errors() -> None:
    preds = [np.array([3.0, 3.0]), np.array([5.0, 1.0, 2.0])]
    actual = [np.array([4.0, 3.0]), np.array([5.0, 3.0, 2.0])]
    out = scenario_metrics(preds, actual)
    assert out["mae"] == pytest.approx(3 / 5)  # errors 1, 0, 0, 2, 0
    assert out["rmse"] == pytest.approx(math.sqrt(5 / 5))
    assert 0 < out["ndcg@3"] <= 1


def test_empty_scenario_is_nan() -> None:
    assert all(math.isnan(v) for v in scenario_metrics([], []).values())


def test_scenario_errors_on_scale_snap_each_prediction() -> None:
    preds = [np.array([3.6, 2.4]), np.array([4.5])]
    actual = [np.array([4.0, 3.0]), np.array([5.0])]
    out = scenario_metrics(preds, actual, scale=(1.0, 2.0, 3.0, 4.0, 5.0))
    assert out["mae"] == pytest.approx((0.4 + 0.6 + 0.5) / 3)
    assert out["mae_on_scale"] == pytest.approx((0 + 1 + 1) / 3)  # 4, 2, 4 (a tie goes down)
    assert out["rmse_on_scale"] == pytest.approx(math.sqrt(2 / 3))
    assert "mae_on_scale" not in scenario_metrics(preds, actual)  # no scale, no on-scale errors
