"""Checkpoints: a round trip serves the same scores; anything damaged or mismatched is refused by name."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from models.core.checkpoint import CONFIG, WEIGHTS, CheckpointError
from models.core.config import ModelConfig
from models.serving.recommender import AdaptRequest, Recommender


@pytest.fixture()
def saved(world, tmp_path):
    world.model.save(tmp_path / "m", version="v-test")
    return tmp_path / "m"


def some_requests(world):
    log = world.log
    return [AdaptRequest(log.user_ids[u], [(log.item_ids[i], 1.0) for i in log.items[log.users == u][:4]],
                         frozenset()) for u in (700, 701, 702)]


def test_round_trip_gives_the_same_scores_and_metadata(world, saved):
    loaded = Recommender.load(saved)
    assert loaded.version == "v-test" and world.model.version == "v-test"
    assert loaded.config == world.model.config and loaded.item_ids == world.model.item_ids
    assert loaded.item_feature_names == world.log.item_feature_names
    reqs = some_requests(world)
    ids = loaded.item_ids
    np.testing.assert_array_equal(loaded.predict(reqs, ids), world.model.predict(reqs, ids))
    assert [r.items for r in loaded.recommend(reqs, 10)] == [r.items for r in world.model.recommend(reqs, 10)]


def edit_config(folder, change):
    meta = json.loads((folder / CONFIG).read_text())
    change(meta)
    (folder / CONFIG).write_text(json.dumps(meta))


def edit_tensors(folder, change):
    tensors = load_file(str(folder / WEIGHTS))
    change(tensors)
    save_file(tensors, str(folder / WEIGHTS))


DAMAGE = {
    "truncated weights": lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:200]),
    "pickle instead of safetensors": lambda f: (f / WEIGHTS).write_bytes(pickle.dumps({"item_emb": [1.0]})),
    "missing weights": lambda f: (f / WEIGHTS).unlink(),
    "missing config": lambda f: (f / CONFIG).unlink(),
    "config not json": lambda f: (f / CONFIG).write_text("{nope"),
    "wrong format": lambda f: edit_config(f, lambda m: m.update(format="other")),
    "config/tensor shape mismatch": lambda f: edit_config(f, lambda m: m["config"].update(dim=16)),
    "unknown config key": lambda f: edit_config(f, lambda m: m["config"].update(colour="red")),
    "invalid config value": lambda f: edit_config(f, lambda m: m["config"].update(objective="regression")),
    "item ids do not match": lambda f: edit_config(f, lambda m: m.update(item_ids=m["item_ids"][:-1])),
    "duplicate item ids": lambda f: edit_config(f, lambda m: m["item_ids"].__setitem__(1, m["item_ids"][0])),
    "missing tensor": lambda f: edit_tensors(f, lambda t: t.pop("head_w")),
    "unexpected tensor": lambda f: edit_tensors(f, lambda t: t.update(extra=torch.zeros(2))),
    "wrong dtype": lambda f: edit_tensors(f, lambda t: t.update(mu=t["mu"].double())),
    "NaN weights": lambda f: edit_tensors(f, lambda t: t["item_emb"].__setitem__((0, 0), float("nan"))),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_or_mismatched_checkpoints_are_refused(saved, damage):
    DAMAGE[damage](saved)
    with pytest.raises(CheckpointError):
        Recommender.load(saved)


def test_config_json_round_trip_and_strictness():
    cfg = ModelConfig(n_items=10, n_item_features=3, objective="rating", first_order=True)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError):
        ModelConfig.from_json(json.dumps({**cfg.to_dict(), "surprise": 1}))
    with pytest.raises(ValueError):
        ModelConfig(n_items=0)
    with pytest.raises(ValueError):
        ModelConfig(n_items=5, objective="implicit", n_negatives=0)
