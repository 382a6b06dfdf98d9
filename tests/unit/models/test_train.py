"""Meta-training: after it, a few events of a brand-new user make their recommendations better."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.core.targets import event_target
from models.data.events import EVENT_TYPES
from models.data.synthetic import generate
from models.features.rating_context import N_RATING_CONTEXT
from models.serving.recommender import AdaptRequest
from models.training.task_context import attach_context
from models.training.train import default_config, meta_train, outer_loss, sample_tasks, user_tracks
from tests.unit.models.conftest import small_config


def first_events_and_future(world, n_events: int):
    """Held-out users: an AdaptRequest from their first ``n_events`` events, and the new items they meet next.
    """
    log = world.log
    requests, futures = [], []
    for user, pos in log.user_sequences():
        if user not in world.held_out:
            continue
        items, types, values = log.items[pos], log.types[pos], log.values[pos]
        seen = {log.item_ids[i] for i in items[:n_events]}
        support = []
        for i, t, v in zip(items[:n_events], types[:n_events], values[:n_events]):
            target = event_target(EVENT_TYPES[t], None if np.isnan(v) else float(v), "implicit")
            if target is not None:
                support.append((log.item_ids[i], target))
        future = {log.item_ids[i] for i in items[n_events : n_events + 10]} - seen
        if future:
            requests.append(AdaptRequest(log.user_ids[user], support, frozenset(seen)))
            futures.append(future)
    return requests, futures


def recall_at(model, requests, futures, k: int, steps: int | None) -> float:
    results = model.recommend(requests, k, steps=steps)
    return float(np.mean([len(set(r.items) & f) / min(k, len(f)) for r, f in zip(results, futures)]))


def test_adaptation_on_three_events_beats_the_meta_init_for_held_out_users(world):
    requests, futures = first_events_and_future(world, 3)
    assert len(requests) > 100
    adapted = recall_at(world.model, requests, futures, 10, steps=None)
    init_only = recall_at(world.model, requests, futures, 10, steps=0)
    assert adapted > init_only + 0.03, (adapted, init_only)


def test_meta_training_lowers_the_query_loss_of_fresh_tasks(world):
    untrained = meta_train(world.train, small_config(world.train), steps=1, batch_users=32, seed=0)
    cfg = world.model.config
    log = world.train.sorted_by_time()
    tasks = sample_tasks(user_tracks(log, cfg.objective), 48, cfg, np.random.default_rng(123))
    (tasks,), _stats = attach_context(log, [tasks], cfg.n_items)
    with torch.no_grad():
        before = outer_loss(untrained.model.train(), tasks, torch.Generator().manual_seed(0))
        after = outer_loss(world.model.model.train(), tasks, torch.Generator().manual_seed(0))
    world.model.model.eval()
    untrained.model.eval()
    assert float(after) < float(before) - 0.1, (float(before), float(after))


def test_tasks_include_brand_new_users_and_never_query_seen_items(world):
    cfg = world.model.config
    tracks = user_tracks(world.train, cfg.objective)
    tasks = sample_tasks(tracks, 64, cfg, np.random.default_rng(0))
    assert (tasks.sup_mask.sum(1) == 0).any(), "some tasks must start from no events (t = 0)"
    assert tasks.sup_mask.sum(1).max() <= cfg.max_support
    seen = set(zip(tasks.seen[0].tolist(), tasks.seen[1].tolist()))
    for b in range(tasks.qry_items.shape[0]):
        for q in tasks.qry_items[b][tasks.qry_mask[b]].tolist():
            assert (b, q) not in seen


def test_time_budget_stops_training_early():
    log = generate(n_users=60, n_items=40, n_categories=4, mean_events=10, seed=0)
    started = time.monotonic()
    model = meta_train(log, small_config(log), steps=10**6, batch_users=8, time_budget_s=0.5, seed=0)
    assert time.monotonic() - started < 30
    assert model.item_ids == log.item_ids


def test_continuing_from_a_model_keeps_it_untouched_and_learns_new_items(world):
    extra = generate(n_users=50, n_items=160, n_categories=6, mean_events=10, seed=9)
    before = world.model.item_ids
    continued = meta_train(extra, steps=2, batch_users=8, seed=0, init=world.model)
    assert world.model.item_ids == before
    assert continued.item_ids[: len(before)] == before
    assert set(extra.item_ids) <= set(continued.item_ids) and len(continued.item_ids) == 160
    with pytest.raises(ValueError):
        meta_train(extra, small_config(extra), steps=1, init=world.model)


def test_rating_objective_predicts_on_the_rating_scale_and_adapts_toward_a_users_ratings():
    log = generate(n_users=200, n_items=60, n_categories=4, mean_events=30, seed=2)
    rated = log.take(np.flatnonzero(log.types == EVENT_TYPES.index("rating")))
    rated.explicit = True
    cfg = replace(default_config(rated, 0, "rating"), dim=32, head_dim=32, max_support=20)
    assert cfg.objective == "rating" and cfg.n_context == N_RATING_CONTEXT  # the stream's item means
    model = meta_train(rated, cfg, steps=30, batch_users=16, seed=0)
    fan = AdaptRequest("fan", [(i, 5.0) for i in rated.item_ids[:6]], frozenset())
    critic = AdaptRequest("critic", [(i, 1.0) for i in rated.item_ids[:6]], frozenset())
    scores = model.predict([fan, critic], rated.item_ids[6:20])
    assert scores.min() >= cfg.rating_min and scores.max() <= cfg.rating_max
    assert scores[0].mean() > scores[1].mean() + 0.2
    result = model.recommend([fan], 5)[0]
    assert result.loss_after < result.loss_before


def test_default_config_follows_the_data():
    log = generate(n_users=30, n_items=40, n_categories=4, mean_events=5, seed=0)
    cfg = default_config(log)
    assert cfg.objective == "implicit" and cfg.n_items == 40 and cfg.n_item_features == 4
    assert cfg.n_context > 0 and default_config(log, objective="rating").n_context == N_RATING_CONTEXT
    assert default_config(log, objective="rating", context=False).n_context == 0
    assert default_config(log, objective="rating").rating_loss == "l1"
