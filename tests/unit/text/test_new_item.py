"""A brand-new item is recommended by its text, before anyone has touched it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.data.synthetic import generate
from models.features.item_features import ItemDescription, feature_rows
from models.features.text import HashedEncoder, with_text_features
from models.serving.recommender import AdaptRequest
from models.training.train import default_config, meta_train


@pytest.fixture(scope="module")
def trained():
    """A small model meta-trained with text vectors (hashed encoder: no extra needed) as features."""
    log = generate(n_users=150, n_items=80, n_categories=6, mean_events=15, seed=0)
    log = with_text_features(log, HashedEncoder(64), replace_features=True)
    cfg = replace(default_config(log), dim=16, head_dim=16)
    return log, meta_train(log, cfg, steps=25, batch_users=32, seed=0)


def test_a_new_item_like_the_users_likes_outranks_unrelated_new_items(trained) -> None:
    log, model = trained
    liked = [i for i, t in zip(log.item_ids, log.item_text) if t.startswith("jazz ")][:6]
    assert len(liked) >= 3
    new = [
        ItemDescription("new-jazz", title="jazz vintage album"),
        ItemDescription("new-garden", title="garden rustic tool"),
        ItemDescription("new-kitchen", title="kitchen deluxe set"),
        ItemDescription("new-travel", title="travel pocket guide"),
        ItemDescription("new-chess", title="chess bold box"),
    ]
    rows = feature_rows(new, model.item_feature_names)
    model.add_items([d.item_id for d in new], rows)
    assert all(d.item_id in model.item_ids for d in new)
    user = AdaptRequest("u-jazz", [(i, 1.0) for i in liked], exclude=liked)
    ranked = model.recommend([user], k=len(model.item_ids))[0].items
    position = {item: n for n, item in enumerate(ranked)}
    assert all(position["new-jazz"] < position[d.item_id] for d in new[1:]), [
        position[d.item_id] for d in new
    ]


def test_without_text_the_new_items_are_indistinguishable(trained) -> None:
    """The control: the same new items with empty feature rows score alike: the text is what ranked them."""
    log, model = trained
    ids = ["blank-a", "blank-b"]
    model.add_items(ids, np.zeros((2, len(model.item_feature_names)), np.float32))
    scores = model.predict([AdaptRequest("u", [(log.item_ids[0], 1.0)], ())], ids)
    assert scores[0, 0] == pytest.approx(scores[0, 1])
