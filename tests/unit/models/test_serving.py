"""The worker's API: recommend never returns excluded items, is deterministic per user and safe across
threads."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from models.serving.recommender import AdaptRequest


def request(world, user: int, n: int = 5, exclude_extra: int = 0) -> AdaptRequest:
    log = world.log
    pos = np.flatnonzero(log.users == user)[:n]
    items = [log.item_ids[i] for i in log.items[pos]]
    extra = log.item_ids[:exclude_extra]
    return AdaptRequest(log.user_ids[user], [(i, 1.0) for i in items], frozenset(items) | frozenset(extra))


def test_excluded_items_never_appear_even_when_few_are_left(world):
    model = world.model
    reqs = [request(world, 700, exclude_extra=40), request(world, 701)]
    for res, req in zip(model.recommend(reqs, 25), reqs):
        assert len(res.items) == 25 and not set(res.items) & set(req.exclude)
        assert res.scores == sorted(res.scores, reverse=True)
    nearly_all = AdaptRequest("greedy", [], frozenset(model.item_ids[3:]))
    res = model.recommend([nearly_all], 10)[0]
    assert sorted(res.items) == sorted(model.item_ids[:3]) and all(math.isfinite(s) for s in res.scores)


def test_a_meta_learned_step_lowers_a_new_users_support_loss(world):
    results = world.model.recommend([request(world, u, n=8) for u in range(700, 720)], 5)
    assert all(r.loss_after < r.loss_before for r in results)


def test_empty_or_unknown_support_gives_the_meta_init(world):
    model = world.model
    empty = AdaptRequest("new", [], frozenset())
    unknown = AdaptRequest("new2", [("no-such-item", 1.0)], frozenset({"no-such-item"}))
    results = model.recommend([empty, unknown, request(world, 710)], 5)
    with torch.no_grad():
        init = model.model.head_init(1)
    flat = torch.cat([init["w"][0], init["b"]]).numpy()
    for res in results[:2]:
        np.testing.assert_array_equal(res.head, flat)
        assert math.isnan(res.loss_before) and math.isnan(res.loss_after)
    assert results[0].items == results[1].items
    assert results[2].head.shape == (model.config.head_size,) and results[2].head.dtype == np.float32
    assert not np.array_equal(results[2].head, flat)


def test_a_users_result_is_the_same_alone_in_a_batch_and_across_threads(world):
    model = world.model
    reqs = [request(world, u, n=2 + u % 7) for u in range(700, 740)]
    batch = model.recommend(reqs, 10)
    alone = model.recommend([reqs[5]], 10)[0]
    assert alone.items == batch[5].items
    np.testing.assert_allclose(alone.scores, batch[5].scores, rtol=1e-5, atol=1e-5)
    with ThreadPoolExecutor(4) as pool:
        chunks = [reqs[i : i + 10] for i in range(0, 40, 10)]
        parallel = list(pool.map(lambda chunk: model.recommend(chunk, 10), chunks))
    assert [r.items for chunk in parallel for r in chunk] == [r.items for r in batch]


def test_predict_scores_items_including_unknown_ones(world):
    model = world.model
    reqs = [request(world, 705), AdaptRequest("cold", [], frozenset())]
    ids = model.item_ids[:5] + ["never-seen"]
    scores = model.predict(reqs, ids)
    assert scores.shape == (2, 6) and np.isfinite(scores).all()
    full = model.predict(reqs[:1], model.item_ids)
    np.testing.assert_allclose(scores[0, :5], full[0, :5], rtol=1e-5, atol=1e-5)
    assert model.predict([], ids).shape == (0, 6)


def test_added_items_get_feature_only_vectors_and_can_be_recommended(world, tmp_path):
    model = world.model
    model.save(tmp_path / "m")
    grown = type(model).load(tmp_path / "m")
    n_feat = grown.config.n_item_features
    feats = np.zeros((2, n_feat), np.float32)
    feats[0, 0] = feats[1, 1] = 1.0
    grown.add_items(["fresh-0", "fresh-1", model.item_ids[0]], np.vstack([feats, np.ones((1, n_feat))]))
    assert grown.item_ids == model.item_ids + ["fresh-0", "fresh-1"]
    assert grown.config.n_items == len(model.item_ids) + 2
    assert len(model.item_ids) == world.model.config.n_items  # the original is untouched
    with torch.no_grad():
        vecs, bias = grown.model.cold_vectors(torch.as_tensor(feats))
        init = grown.model.head_init(1)
    taste = (vecs @ init["w"][0][: grown.config.head_dim] + init["b"][0] + bias).numpy()
    got = grown.predict([AdaptRequest("cold", [], frozenset())], ["fresh-0", "fresh-1"])[0]
    # new items have no statistics yet, so the same context: their scores differ by their feature vectors only
    np.testing.assert_allclose(got - taste, (got - taste)[0], rtol=1e-5, atol=1e-5)
    assert grown.stats is not None and grown.stats.n_items == grown.config.n_items
    everything_else = frozenset(model.item_ids)
    res = grown.recommend([AdaptRequest("u", [], everything_else)], 5)[0]
    assert sorted(res.items) == ["fresh-0", "fresh-1"]
    with pytest.raises(ValueError):
        grown.add_items(["x"], np.zeros((1, n_feat + 1)))


def test_cuda_request_falls_back_to_cpu_when_absent(world, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without CUDA
    world.model.save(tmp_path / "m")
    assert type(world.model).load(tmp_path / "m", device="cuda").device.type == "cpu"
