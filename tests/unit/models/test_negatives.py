"""Inner-loop negatives drawn by popularity (ModelConfig.negative_power): what the trainer draws is what the
server draws, a user's draws never depend on the batch, and power 0 leaves the uniform draws untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.core.adapt import negative_weights
from models.core.config import ModelConfig
from models.features.item_stats import ItemStats
from models.serving.encode import draw_weights, negatives
from models.serving.requests import AdaptRequest
from models.training.implicit_loss import COUNT_FEATURE, draw_negatives

N_ITEMS = 40


def _counts() -> np.ndarray:
    return np.r_[np.full(4, 1000.0), np.zeros(N_ITEMS - 4)]  # four items hold every event


def test_served_negatives_follow_popularity_per_user_whatever_the_batch():
    stats = ItemStats(N_ITEMS)
    stats.counts[:] = _counts()
    cfg = ModelConfig(n_items=N_ITEMS, n_context=12, negative_power=0.5)
    weights = draw_weights(stats, cfg)
    assert weights is not None and weights[:4].min() > 100 * weights[4:].max()
    users = [AdaptRequest(f"u{n}", [], ()) for n in range(200)]
    drawn = negatives(users, N_ITEMS, 64, seed=0, weights=weights).numpy()  # (200, 64)
    assert drawn.min() >= 0 and drawn.max() < N_ITEMS
    share_popular = (drawn < 4).mean()
    expected = weights[:4].sum() / weights.sum()
    assert abs(share_popular - expected) < 0.01 and share_popular > 0.9
    alone = negatives(users[7:8], N_ITEMS, 64, seed=0, weights=weights).numpy()
    np.testing.assert_array_equal(alone[0], drawn[7])


def test_power_zero_or_no_statistics_serve_the_uniform_draws():
    stats = ItemStats(N_ITEMS)
    stats.counts[:] = _counts()
    assert draw_weights(stats, ModelConfig(n_items=N_ITEMS, n_context=12)) is None
    assert draw_weights(None, ModelConfig(n_items=N_ITEMS, n_context=12, negative_power=1.0)) is None


def test_the_trainer_draws_by_the_count_feature_and_power_zero_keeps_its_uniform_draws():
    context = torch.zeros(3, N_ITEMS, 12)  # (B, N, C)
    scaled = torch.as_tensor(_counts() * N_ITEMS / _counts().sum(), dtype=torch.float32)
    context[:, :, COUNT_FEATURE] = torch.log1p(scaled)  # what the context features hold as of the cut
    cfg = ModelConfig(n_items=N_ITEMS, n_context=12, n_negatives=500, negative_power=0.5)
    drawn = draw_negatives(cfg, context, 3, N_ITEMS, torch.Generator().manual_seed(0))  # (3, 500)
    weights = negative_weights(scaled, 0.5)
    expected = float(weights[:4].sum() / weights.sum())
    assert abs(float((drawn < 4).float().mean()) - expected) < 0.02
    uniform = ModelConfig(n_items=N_ITEMS, n_context=12, n_negatives=500)
    same = draw_negatives(uniform, context, 3, N_ITEMS, torch.Generator().manual_seed(0))
    assert torch.equal(same, torch.randint(N_ITEMS, (3, 500), generator=torch.Generator().manual_seed(0)))


def test_a_negative_power_is_refused():
    with pytest.raises(ValueError, match="negative_power"):
        ModelConfig(n_items=N_ITEMS, negative_power=-0.5)
