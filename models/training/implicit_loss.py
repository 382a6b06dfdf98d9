"""Meta-training's implicit query loss over a sample of a large catalogue.

The implicit objective is a softmax over the catalogue: -log p(q) for each query item q, among every item the
user has not seen. With context features every item's logit goes through the context MLP, once per task, so a
batch of 64 tasks on Last.fm's 17.6k artists costs 1.1M MLP rows forward and back (about 1 s a step on one
core). Above ``SAMPLED_SOFTMAX_MIN_ITEMS`` items a task batch instead carries ``SAMPLE_SIZE`` candidates drawn
uniformly without replacement from the catalogue (``add_candidates``), and its context features only for its
support, query and candidate items (``models.training.task_context``). The softmax's normaliser, the sum of exp(logit)
over the unseen items other than q, is then estimated from the unseen candidates other than q, each standing
for N / M items (inclusion probability M / N: the "logQ" correction, a constant for a uniform sample):

    -log p(q) ~ -s_q + log(exp(s_q) + N / M x sum over candidates j (unseen, j != q) of exp(s_j))

When the candidates are the whole catalogue this is the full loss (tests/unit/models/test_implicit_loss.py).
The inner loop's negatives are drawn from the candidates, so they stay uniform over the catalogue (or, with
``negative_power``, follow popularity among a uniform sample of it). Smaller
catalogues (MovieLens: 1,682 items) never get candidates and train exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.core.adapt import adapt, negative_weights, score_in_context, with_context
from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.features.context import CONTEXT_NAMES

SAMPLED_SOFTMAX_MIN_ITEMS = 4096  # catalogues this large (with context features) train on a sample
SAMPLE_SIZE = 2048  # M: candidates per task batch, shared by its tasks
COUNT_FEATURE = CONTEXT_NAMES.index("log_share_count")  # popularity, for negatives drawn by it


def samples_catalogue(cfg: ModelConfig) -> bool:
    """Whether meta-training ``cfg``'s model scores a sample of the catalogue (implicit, with context)."""
    return cfg.objective == "implicit" and bool(cfg.n_context) and cfg.n_items >= SAMPLED_SOFTMAX_MIN_ITEMS


def context_width(cfg: ModelConfig) -> int:
    """How many items' context features a training task keeps: the catalogue, or at most its support, query
    and candidates."""
    if not samples_catalogue(cfg):
        return cfg.n_items
    return cfg.max_support + cfg.query_size + min(SAMPLE_SIZE, cfg.n_items)


def add_candidates(batches: Sequence, cfg: ModelConfig, seed: int) -> list:
    """Each task batch with ``candidates`` (M,) sorted item indices, when ``cfg`` samples the catalogue;
    otherwise the batches unchanged. Seeded apart from task sampling, which stays as it was."""
    if not samples_catalogue(cfg):
        return list(batches)
    rng = np.random.default_rng([seed, 2])
    size = min(SAMPLE_SIZE, cfg.n_items)
    return [replace(tb, candidates=torch.as_tensor(np.sort(rng.choice(cfg.n_items, size, replace=False))))
            for tb in batches]


def sampled_outer_loss(model: MetaRec, tasks, gen: torch.Generator, feats: Tensor | None = None) -> Tensor:
    """``models.training.train.outer_loss`` (implicit, with context) for a batch with ``candidates``.

    ``tasks.context`` is (B, S + Q + M, C): the features of each task's support items, query items, then the
    candidates. Draws from ``gen`` as the full loss does, so with every item as a candidate, in order, the
    two agree (to float rounding).
    """
    cfg = model.cfg
    cand = tasks.candidates  # (M,)
    batch, sup, qry, m = tasks.sup_items.shape[0], tasks.sup_items.shape[1], tasks.qry_items.shape[1], len(cand)
    drop = torch.rand(cfg.n_items, generator=gen) < cfg.id_dropout  # (N,)
    vecs, bias = model.item_vectors(drop)  # (N, H), (N,)
    ctx = tasks.context.float()  # (B, S + Q + M, C)
    neg = draw_negatives(cfg, ctx[:, sup + qry :], batch, m, gen)  # (B, K) positions among the candidates
    offset = model.context_offset(ctx)  # (B, S + Q + M) the context MLP, on these items only
    c_sup, c_qry, c_cand = ctx.split([sup, qry, m], dim=1)
    o_sup, o_qry, o_cand = offset.split([sup, qry, m], dim=1)
    rows = torch.arange(batch)[:, None]
    neg_items = cand[neg]  # (B, K)
    out = adapt(
        model.head_init(batch, feats), model.step_sizes(),
        with_context(vecs[tasks.sup_items], c_sup), bias[tasks.sup_items] + o_sup, tasks.sup_targets,
        tasks.sup_mask, with_context(vecs[neg_items], c_cand[rows, neg]), bias[neg_items] + o_cand[rows, neg],
        steps=cfg.inner_steps, objective=cfg.objective, first_order=cfg.first_order, prior=cfg.support_prior,
    )
    w, b = out.heads["w"], out.heads["b"]  # (B, H + C), (B,)
    qvecs = with_context(vecs[tasks.qry_items], c_qry)  # (B, Q, H + C)
    pos = torch.einsum("bqh,bh->bq", qvecs, w) + b[:, None] + bias[tasks.qry_items] + o_qry  # (B, Q)
    logits = score_in_context(out.heads, vecs[cand], bias[cand], c_cand) + o_cand  # (B, M)
    logits = logits + math.log(cfg.n_items / m)  # each candidate stands for N / M items
    logits = _mask_seen(logits, tasks.seen, cand, cfg.n_items)
    others = logits[:, None, :].masked_fill(tasks.qry_items[:, :, None] == cand, float("-inf"))  # (B, Q, M)
    nll = -F.log_softmax(torch.cat([pos[:, :, None], others], dim=2), dim=2)[:, :, 0]  # (B, Q)
    nll = torch.where(tasks.qry_mask, nll, 0.0)
    return nll.sum() / tasks.qry_mask.float().sum().clamp(min=1.0)


def draw_negatives(cfg: ModelConfig, context: Tensor | None, batch: int, m: int, gen: torch.Generator) -> Tensor:
    """(B, K) inner-loop negatives, positions among ``m`` items whose context is ``context`` (B, M, C):
    uniform, or by popularity as of the task's cut when ``cfg.negative_power`` (``models.core.adapt``)."""
    if not cfg.negative_power or context is None or cfg.objective != "implicit":
        return torch.randint(m, (batch, cfg.n_negatives), generator=gen)
    scaled = torch.expm1(context[:, :, COUNT_FEATURE].float())  # (B, M) count x N / total
    weights = negative_weights(scaled, cfg.negative_power)  # (B, M)
    return torch.multinomial(weights, cfg.n_negatives, replacement=True, generator=gen)


def _mask_seen(logits: Tensor, seen: Tensor, cand: Tensor, n_items: int) -> Tensor:
    """``logits`` (B, M) with -inf where a candidate is among the row's seen items (``seen``: (2, P) pairs)."""
    position = torch.full((n_items,), -1, dtype=torch.long)
    position[cand] = torch.arange(len(cand))
    col = position[seen[1]]  # (P,)
    hit = col >= 0
    return logits.index_put((seen[0][hit], col[hit]), torch.tensor(float("-inf")))
