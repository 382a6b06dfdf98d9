"""Carrying a model across domains, and the transfer evaluation end to end on two small synthetic domains."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.data.synthetic import generate
from models.eval.transfer_protocol import RECIPES, TransferSetup, run_transfer, text_only
from models.features.text import HashedEncoder
from models.training.domain_transfer import transplant
from models.training.train import default_config, meta_train

ENC = HashedEncoder(32)


def _domain(seed: int, users: int, items: int, explicit: bool = False):
    log = generate(n_users=users, n_items=items, n_categories=5, mean_events=18, seed=seed)
    if explicit:  # every event a rating: enough per user for the cold-start split's 13-100 rule
        stars = np.where(np.isnan(log.values), 4.0, log.values).astype(np.float32)
        log = replace(log, explicit=True, values=stars, types=np.full(len(log), 4, np.int8))
    return log


@pytest.fixture(scope="module")
def source_model():
    src = text_only(_domain(1, 60, 40), ENC, None)
    cfg = replace(default_config(src), dim=8, head_dim=8, n_user_features=0)
    return meta_train(src, cfg, steps=3, batch_users=16)


def test_transplant_keeps_what_is_domain_free_and_resets_the_ids(source_model) -> None:
    target = text_only(_domain(2, 30, 25), ENC, None)
    carried = transplant(source_model, target)
    src, dst = source_model.model.state_dict(), carried.model.state_dict()
    for name in ("feat_proj", "feat_bias", "head_w", "head_b", "log_lr_w", "log_lr_b", "mu"):
        assert torch.equal(src[name], dst[name]), name
    assert all(torch.equal(src[k], dst[k]) for k in src if k.startswith("tower."))
    assert not dst["item_emb"].any() and not dst["item_bias"].any()
    assert torch.allclose(dst["item_features"], torch.as_tensor(target.item_features))
    assert carried.item_ids == target.item_ids


def test_transplant_refuses_another_feature_space(source_model) -> None:
    other = text_only(_domain(2, 30, 25), HashedEncoder(16), None)
    with pytest.raises(ValueError):
        transplant(source_model, other)


def test_a_rating_target_gets_a_rating_head_from_an_implicit_source(source_model) -> None:
    target = text_only(_domain(3, 30, 25, explicit=True), ENC, None)
    carried = transplant(source_model, target, objective="rating")
    assert carried.config.objective == "rating"
    assert float(carried.model.mu) == pytest.approx(float(np.nanmean(target.values)), rel=1e-5)


def test_transfer_runs_end_to_end_and_reports_every_recipe(tmp_path) -> None:
    source = _domain(1, 60, 40)
    target = _domain(2, 50, 30, explicit=True)
    setup = TransferSetup(steps=2, source_steps=2, batch_users=8, dim=8)
    result = run_transfer(source, target, tmp_path, setup=setup, encoder=ENC, cache_dir=None)
    saved = json.loads((tmp_path / f"transfer-{source.name}-{target.name}.json").read_text())
    assert set(saved["stream"]["methods"]) == set(RECIPES)
    for m in saved["stream"]["methods"].values():
        assert 0.0 <= m["hr@10"]["all"] <= 1.0
    assert saved["objective"] == "rating" and saved["source_objective"] == "implicit"
    cold = saved["coldstart"]["methods"]
    assert cold["zero-shot"]["new_user"]["mae"] is None  # an implicit model predicts no ratings
    assert cold["target-only"]["new_user"]["mae"] > 0
    assert (tmp_path / f"transfer-{source.name}-{target.name}.md").exists()
    assert result["gain"]["pretrain-finetune"]["hr@10_all_ratio"] is not None
