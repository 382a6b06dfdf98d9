"""The sampled implicit loss of large catalogues: it is the full loss when the sample is the whole catalogue,
an estimate of it otherwise, its features are the full features of the items it keeps (so they stop before
each task's query, as tests/unit/models/test_item_stats.py checks for the full ones), and small catalogues never
take it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.training import implicit_loss
from models.training.implicit_loss import SAMPLE_SIZE, add_candidates, context_width, samples_catalogue
from models.training.task_context import attach_context, context_items
from models.training.train import default_config, outer_loss, sample_tasks, user_tracks


def tasks_with_context(world, seed: int = 5, batch: int = 32):
    cfg = world.model.config
    log = world.train.sorted_by_time()
    tasks = sample_tasks(user_tracks(log, cfg.objective), batch, cfg, np.random.default_rng(seed))
    return log, tasks


def loss_and_grads(model, tasks):
    model.train().requires_grad_(True)
    model.zero_grad()
    loss = outer_loss(model, tasks, torch.Generator().manual_seed(0))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.eval().requires_grad_(False)
    return loss.item(), grads


def test_every_item_as_a_candidate_gives_the_full_loss_and_gradients(world):
    model = world.model.model
    log, tasks = tasks_with_context(world)
    (full,), _ = attach_context(log, [tasks], model.cfg.n_items)
    (sampled,), _ = attach_context(log, [replace(tasks, candidates=torch.arange(model.cfg.n_items))],
                                   model.cfg.n_items)
    assert sampled.context.shape[1] == tasks.sup_items.shape[1] + tasks.qry_items.shape[1] + model.cfg.n_items
    full_loss, full_grads = loss_and_grads(model, full)
    sampled_loss, sampled_grads = loss_and_grads(model, sampled)
    assert sampled_loss == pytest.approx(full_loss, rel=1e-5)
    assert full_grads.keys() == sampled_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(sampled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_half_catalogue_sample_estimates_the_full_loss(world):
    """Averaged over samples, the loss on half the catalogue is close to the full one: without the logQ
    correction it would be about log 2 lower."""
    model = world.model.model
    n = model.cfg.n_items
    log, tasks = tasks_with_context(world)
    (full,), _ = attach_context(log, [tasks], n)
    rng = np.random.default_rng(0)
    draws = [replace(tasks, candidates=torch.as_tensor(np.sort(rng.choice(n, n // 2, replace=False))))
             for _ in range(12)]
    batches, _ = attach_context(log, draws, n)
    with torch.no_grad():
        exact = float(outer_loss(model, full, torch.Generator().manual_seed(0)))
        estimates = [float(outer_loss(model, tb, torch.Generator().manual_seed(0))) for tb in batches]
    assert abs(np.mean(estimates) - exact) < 0.1, (exact, estimates)


def test_kept_features_are_the_full_features_of_those_items(world):
    log, tasks = tasks_with_context(world)
    n = world.model.config.n_items
    cand = torch.as_tensor(np.sort(np.random.default_rng(1).choice(n, 40, replace=False)))
    (full,), _ = attach_context(log, [tasks], n)
    (kept,), _ = attach_context(log, [replace(tasks, candidates=cand)], n)
    items = context_items(kept)  # (B, S + Q + M)
    assert items.shape == (tasks.sup_items.shape[0], tasks.sup_items.shape[1] + tasks.qry_items.shape[1] + 40)
    rows = np.arange(items.shape[0])[:, None]
    np.testing.assert_array_equal(kept.context.numpy(), full.context.numpy()[rows, items])


def test_only_large_implicit_catalogues_with_context_are_sampled(world, monkeypatch):
    cfg = world.model.config
    _log, tasks = tasks_with_context(world, batch=8)
    assert not samples_catalogue(cfg) and context_width(cfg) == cfg.n_items
    assert add_candidates([tasks], cfg, 0)[0].candidates is None  # e.g. MovieLens' 1,682 items: as before
    assert not samples_catalogue(replace(cfg, n_items=20000, n_context=0))
    assert not samples_catalogue(replace(cfg, n_items=20000, objective="rating"))
    big = replace(cfg, n_items=20000)
    assert samples_catalogue(big) and context_width(big) == cfg.max_support + cfg.query_size + SAMPLE_SIZE
    first, again = add_candidates([tasks], big, 0)[0], add_candidates([tasks], big, 0)[0]
    assert len(first.candidates) == len(set(first.candidates.tolist())) == SAMPLE_SIZE
    assert torch.equal(first.candidates, again.candidates), "seeded"
    monkeypatch.setattr(implicit_loss, "SAMPLED_SOFTMAX_MIN_ITEMS", cfg.n_items)
    assert samples_catalogue(cfg)


def test_meta_training_on_a_sampled_catalogue_lowers_the_full_loss(world, monkeypatch):
    """Training on samples of half the catalogue improves the loss on all of it (the sampled path runs end
    to end through ``meta_train``)."""
    from models.training.train import meta_train

    cfg = replace(world.model.config, seed=0)
    monkeypatch.setattr(implicit_loss, "SAMPLED_SOFTMAX_MIN_ITEMS", cfg.n_items)
    monkeypatch.setattr(implicit_loss, "SAMPLE_SIZE", cfg.n_items // 2)
    untrained = meta_train(world.train, cfg, steps=1, batch_users=32, seed=0)
    trained = meta_train(world.train, cfg, steps=40, batch_users=32, seed=0)
    log, tasks = tasks_with_context(world, seed=9, batch=48)
    (full,), _ = attach_context(log, [tasks], cfg.n_items)
    with torch.no_grad():
        before = float(outer_loss(untrained.model.train(), full, torch.Generator().manual_seed(0)))
        after = float(outer_loss(trained.model.train(), full, torch.Generator().manual_seed(0)))
    assert after < before - 0.1, (before, after)


def test_default_config_of_a_large_catalogue_samples_it():
    from models.data.synthetic import generate

    log = generate(n_users=20, n_items=implicit_loss.SAMPLED_SOFTMAX_MIN_ITEMS, n_categories=4, mean_events=3,
                   seed=0)
    assert samples_catalogue(default_config(log))
