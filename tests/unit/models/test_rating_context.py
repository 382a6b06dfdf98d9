"""The rating model's outer loss and its context (the stream's item means): the loss is the one configured, the
features are shrunk item means, training's features never see a task's query ratings, and ratings the
serving model observes move its predictions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.core.config import HUBER_DELTA
from models.core.metalearner import MetaRec
from models.data.events import EVENT_TYPES
from models.data.synthetic import generate
from models.features.item_stats import ItemStats
from models.features.rating_context import (
    KNN_SHRINK,
    N_RATING_CONTEXT,
    RATING_CONTEXT_NAMES,
    RATING_SHRINK,
    USER_SHRINK,
)
from models.serving.recommender import AdaptRequest
from models.training.task_context import SNAPSHOT_EVERY, replay_stats
from models.training.task_rating_context import attach_rating_context, event_ratings
from models.training.train import default_config, meta_train, outer_loss, sample_tasks, user_tracks


def rated_log(seed: int = 2, n_users: int = 200):
    log = generate(n_users=n_users, n_items=60, n_categories=4, mean_events=30, seed=seed)
    rated = log.take(np.flatnonzero(log.types == EVENT_TYPES.index("rating"))).sorted_by_time()
    rated.explicit = True
    return rated


def test_rating_context_is_the_shrunk_item_mean_and_the_users_residuals_spread_by_similarity():
    log = rated_log()
    stats = replay_stats(log, None, ItemStats(log.n_items), event_ratings(log))
    user = int(log.users[-1])
    pos = np.flatnonzero(log.users == user)
    support = list(zip(log.items[pos].tolist(), log.values[pos].tolist()))
    feats = stats.rating_context([[], support])  # (2, N, R)
    assert feats.shape == (2, log.n_items, N_RATING_CONTEXT) == (2, log.n_items, len(RATING_CONTEXT_NAMES))
    n = np.bincount(log.items, minlength=log.n_items)
    total = np.bincount(log.items, weights=log.values, minlength=log.n_items)
    mean = log.values.mean()
    for c, k in enumerate(RATING_SHRINK):
        np.testing.assert_allclose(feats[1, :, c], (total - n * mean) / (n + k), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats[1, :, 2], 1.0 / (1.0 + n), rtol=1e-5)
    assert not feats[0, :, 3:].any()  # no support: no residuals
    res = log.values[pos] - (mean + (total - n * mean)[log.items[pos]] / (n[log.items[pos]] + RATING_SHRINK[0]))
    col = RATING_CONTEXT_NAMES.index
    np.testing.assert_allclose(feats[1, :, col("user_residual")], res.sum() / (len(res) + USER_SHRINK),
                               rtol=1e-4)
    users_of = [set(log.users[log.items == i].tolist()) for i in range(log.n_items)]
    target = int(np.argmax(feats[1, :, col("log_knn_mass")]))
    cos = np.array([len(users_of[target] & users_of[j]) / np.sqrt(len(users_of[target]) * len(users_of[j]))
                    if j != target else 0.0 for j in log.items[pos]])
    centred = res - res.mean()
    np.testing.assert_allclose(feats[1, target, col("knn_residual")],
                               (cos * centred).sum() / (cos.sum() + KNN_SHRINK), rtol=1e-3, atol=1e-6)
    arrays, meta = stats.to_state()
    np.testing.assert_array_equal(ItemStats.from_state(arrays, meta).rating_context([support]), feats[1:])
    stats.observe(["x"], [0], [float(log.ts.max())])  # no rating given: the means stay
    np.testing.assert_array_equal(stats.rating_context([[]])[0, :, :2], feats[0, :, :2])


def test_task_rating_features_come_only_from_ratings_before_the_cut():
    """Rewriting every rating from a task's first query on must not change its features; rewriting one just
    before its snapshot must (the check can fail)."""
    log = rated_log()
    cfg = default_config(log, 0, "rating")
    tasks = sample_tasks(user_tracks(log, "rating"), 32, cfg, np.random.default_rng(0))
    (base,), _ = attach_rating_context(log, [tasks], log.n_items)
    row = int(np.argmax(tasks.cut_at.numpy()))
    cut = int(tasks.cut_at[row])
    assert cut >= SNAPSHOT_EVERY and tasks.qry_mask[row].any()
    future = log.take(np.arange(len(log)))
    future.values = future.values.copy()
    future.values[cut:] = 6.0 - future.values[cut:]  # the query's ratings (and all after) turned around
    (changed,), _ = attach_rating_context(future, [tasks], log.n_items)
    np.testing.assert_array_equal(changed.context[row].numpy(), base.context[row].numpy())
    past = log.take(np.arange(len(log)))
    past.values = past.values.copy()
    snapshot = cut - cut % SNAPSHOT_EVERY
    past.values[snapshot - 1] = 6.0 - past.values[snapshot - 1] if past.values[snapshot - 1] != 3 else 5.0
    (moved,), _ = attach_rating_context(past, [tasks], log.n_items)
    assert not np.array_equal(moved.context[row].numpy(), base.context[row].numpy())


@pytest.mark.parametrize("loss", ["l1", "huber", "mse"])
def test_the_outer_loss_is_the_configured_one(loss):
    """Query targets far above every prediction: raising them by 1 raises an L1 loss by exactly 1, a Huber
    loss by its delta (its slope out there), a squared loss by much more."""
    log = rated_log()
    cfg = replace(default_config(log, 0, "rating", context=False), dim=8, head_dim=8, rating_loss=loss)
    model = MetaRec(cfg)
    tasks = sample_tasks(user_tracks(log, "rating"), 16, cfg, np.random.default_rng(0))
    far = [outer_loss(model, replace(tasks, qry_targets=torch.full_like(tasks.qry_targets, t)),
                      torch.Generator().manual_seed(0)).item() for t in (100.0, 101.0)]
    if loss == "mse":
        assert far[1] - far[0] > 100.0
    else:
        assert far[1] - far[0] == pytest.approx(1.0 if loss == "l1" else HUBER_DELTA, abs=1e-3)


def test_observed_ratings_move_a_rating_models_predictions():
    log = rated_log(seed=4, n_users=300)
    cfg = replace(default_config(log, 0, "rating"), dim=16, head_dim=16, max_support=20, rating_loss="l1")
    assert cfg.n_context == N_RATING_CONTEXT
    model = meta_train(log, cfg, steps=80, batch_users=32, seed=0)
    item, t0 = model.item_ids[-1], float(log.ts.max())
    user = AdaptRequest("newcomer", [], frozenset())  # no support: only the item means can move it
    before = float(model.predict([user], [item])[0, 0])
    model.observe([(f"critic{n}", item, t0 + n) for n in range(200)])  # no ratings: nothing to move
    assert float(model.predict([user], [item])[0, 0]) == pytest.approx(before)
    model.observe([(f"critic{n}", item, t0 + n, 1.0) for n in range(200)])
    low = float(model.predict([user], [item])[0, 0])
    model.observe([(f"fan{n}", item, t0 + n, 5.0) for n in range(600)])
    high = float(model.predict([user], [item])[0, 0])
    assert low < before - 0.2 and high > low + 0.4, (before, low, high)
