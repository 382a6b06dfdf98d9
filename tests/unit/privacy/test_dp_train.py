"""User-level DP meta-training: every user's contribution is bounded, and the run reports what it spent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.core.metalearner import MetaRec
from models.data.synthetic import generate
from models.training.dp_accounting import clip_per_user, per_user_norms
from models.training.dp_train import (
    DPConfig,
    dp_meta_train,
    one_user,
    per_user_grads,
    poisson_sample,
    private_step_grads,
)
from models.training.train import default_config, outer_loss, sample_tasks, user_tracks

CLIP = 0.5


@pytest.fixture(scope="module")
def setting():
    """A small rating log in which one user rated far outside the scale: an outlier with a huge gradient."""
    log = generate(n_users=16, n_items=30, n_categories=4, mean_events=12, seed=3)
    log = replace(
        log,
        explicit=True,
        types=np.full(len(log), 4, np.int8),
        values=np.where(np.isnan(log.values), 4.0, log.values).astype(np.float32),
    )
    log.values[log.users == 0] = 500.0
    cfg = replace(
        default_config(log, context=False),
        dim=8,
        head_dim=8,
        objective="rating",
        rating_min=1.0,
        rating_max=5.0,
        max_support=10,
        inner_steps=2,
    )
    torch.manual_seed(0)
    model = MetaRec(cfg)
    model.item_features.copy_(torch.as_tensor(log.item_features))
    tracks = user_tracks(log, "rating")
    tasks = sample_tasks(tracks, len(tracks), cfg, np.random.default_rng(0))
    return log, cfg, model, tasks


def test_every_users_clipped_gradient_is_within_the_bound(setting) -> None:
    _log, _cfg, model, tasks = setting
    out = private_step_grads(model, tasks, torch.Generator().manual_seed(0), CLIP, 0.0)
    clipped_norms = per_user_norms(out.clipped)
    assert out.norms.max() > 10 * CLIP, "the outlier must need clipping, or this test proves nothing"
    assert bool((clipped_norms <= CLIP * (1 + 1e-5)).all()), clipped_norms.max()
    small = out.norms < CLIP  # users already inside the bound are left as they were
    assert torch.allclose(clipped_norms[small], out.norms[small], rtol=1e-5)


def test_removing_one_user_moves_the_noiseless_sum_by_at_most_the_bound(setting) -> None:
    _log, _cfg, model, tasks = setting
    grads = per_user_grads(model, tasks, torch.Generator().manual_seed(1))
    clipped, _ = clip_per_user(grads, CLIP)
    total = torch.cat([g.sum(0).flatten() for g in clipped])
    for b in range(len(tasks.users)):
        without = torch.cat([(g.sum(0) - g[b]).flatten() for g in clipped])
        assert float((total - without).norm()) <= CLIP * (1 + 1e-5)


def test_vmapped_per_user_gradients_equal_each_users_own_outer_loss_gradient(setting) -> None:
    """The batched per-user gradient of user b is the trainer's outer-loss gradient on b's task alone."""
    _log, cfg, model, tasks = setting
    model0 = MetaRec(replace(cfg, id_dropout=0.0))  # no random id dropout: both sides see the same items
    model0.load_state_dict(model.state_dict())
    batch = per_user_grads(model0, tasks, torch.Generator().manual_seed(2))
    params = [p for p in model0.parameters() if p.requires_grad]
    for b in (0, 3):
        loss = outer_loss(model0, one_user(tasks, b), torch.Generator().manual_seed(2))
        alone = torch.autograd.grad(loss, params, allow_unused=True)
        for g_batch, g_alone in zip(batch, alone):
            expected = torch.zeros_like(g_batch[b]) if g_alone is None else g_alone
            assert torch.allclose(g_batch[b], expected, atol=1e-4, rtol=1e-4)


def test_poisson_sampling_has_the_asked_rate() -> None:
    rng = np.random.default_rng(0)
    sizes = [len(poisson_sample(1000, 0.05, rng)) for _ in range(200)]
    assert abs(np.mean(sizes) - 50) < 3 and np.std(sizes) > 2


def test_dp_meta_training_spends_at_most_the_target_epsilon(setting) -> None:
    log, cfg, _model, _tasks = setting
    model, report = dp_meta_train(
        log, cfg, steps=4, dp=DPConfig(clip=CLIP, expected_batch=6, target_epsilon=2.0)
    )
    assert 0 < report.epsilon <= 2.0
    assert report.delta < 1 / report.users and report.steps == 4
    assert report.mean_clipped_share > 0
    assert model.config.n_items == log.n_items
    from models.training.dp_train import _fresh_model

    assert (
        float(_fresh_model(log, cfg, 0).mu) == 3.0
    )  # starts at the public scale's middle, not the data's mean
