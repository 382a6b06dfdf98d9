"""Carry a meta-trained model into another domain through the shared text-embedding item space.

What transfers and what does not, parameter by parameter (see ``models.core.metalearner.MetaRec``):

* transfers: the feature projection and the tower (text vector -> item vector), the head's meta-learned init
and
  its Meta-SGD step sizes, and, when both domains share the objective, the global offset ``mu``;
* does not: item id embeddings and item biases (the two catalogues share no ids: they start at zero, the state
  of an item known by its features alone, which id dropout trained the tower to handle), the stored item
  features (the target's own text vectors), and the user-feature projection (the domains' user fields differ).

Both models must use the same item feature space (``n_item_features`` and the feature names), i.e. text
vectors
from the same encoder: :func:`models.features.text.with_text_features` with ``replace_features=True`` on both logs.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.data.events import EventLog
from models.serving.recommender import Recommender

log = logging.getLogger(__name__)

SHARED_ALWAYS: tuple[str, ...] = ("feat_proj", "feat_bias", "head_w", "head_b", "log_lr_w", "log_lr_b")
SAME_OBJECTIVE: tuple[str, ...] = ("mu",)


def target_config(source: ModelConfig, target: EventLog, objective: str | None = None) -> ModelConfig:
    """The source's architecture sized for the target's catalogue, without user features.

    ``objective`` defaults to the source's (zero-shot use keeps what the model was trained for).
    """
    feats = 0 if target.item_features is None else target.item_features.shape[1]
    if feats != source.n_item_features:
        raise ValueError(
            f"target has {feats} item features, the source model {source.n_item_features}: "
            "encode both domains' item text with the same encoder"
        )
    objective = objective or source.objective
    lo, hi = source.rating_min, source.rating_max
    rated = target.values[np.isfinite(target.values)] if target.explicit else np.zeros(0)
    if objective == "rating" and len(rated) and rated.min() < rated.max():
        lo, hi = float(rated.min()), float(rated.max())
    return replace(
        source, n_items=target.n_items, n_user_features=0, objective=objective, rating_min=lo, rating_max=hi
    )


def transplant(source: Recommender, target: EventLog, objective: str | None = None) -> Recommender:
    """A model for ``target``'s catalogue that starts from everything ``source`` learned that is domain-free.

    Used as is, it is the source model applied zero-shot; passed as ``meta_train(target, init=...)``, it is
    source pre-training followed by target meta-fine-tuning.
    """
    if source.item_feature_names and list(source.item_feature_names) != list(target.item_feature_names):
        raise ValueError("source and target item features are not the same space (feature names differ)")
    cfg = target_config(source.config, target, objective)
    src = {k: v.detach().cpu() for k, v in source.model.state_dict().items()}
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = MetaRec(cfg)
    state = model.state_dict()
    names = SHARED_ALWAYS + (SAME_OBJECTIVE if cfg.objective == source.config.objective else ())
    for name in names:
        state[name] = src[name].clone()
    for name, value in src.items():
        if name.startswith("tower."):
            state[name] = value.clone()
    state["item_emb"] = torch.zeros_like(state["item_emb"])  # (N, D): ids do not transfer
    state["item_bias"] = torch.zeros_like(state["item_bias"])  # (N,)
    if target.item_features is not None:
        state["item_features"] = torch.as_tensor(np.asarray(target.item_features, np.float32))  # (N, F)
    if cfg.objective == "rating" and cfg.objective != source.config.objective:
        rated = target.values[np.isfinite(target.values)]
        mid = 0.5 * (cfg.rating_min + cfg.rating_max)
        state["mu"] = torch.tensor(float(rated.mean()) if len(rated) else mid)
    model.load_state_dict(state)
    log.info(
        "transplanted %s (%s) to %s: %d items, objective %s",
        source.version,
        source.config.objective,
        target.name,
        cfg.n_items,
        cfg.objective,
    )
    return Recommender(model, target.item_ids, item_feature_names=target.item_feature_names)
