"""The meta-parameters: an item tower, biases, and the user head's meta-learned init and Meta-SGD step sizes.

A user is a small linear head theta = {w: (H,), a: (C,), b: ()} on top of shared item vectors z_i and stream
context features c(u, i) (popularity, recency, co-occurrence with the user's items: ``models.features.item_stats``), so

    s(u, i) = mu + b_i + b + z_i . w + c(u, i) . a

a rating on explicit data, a logit on implicit data. The context weights a are adapted like w: meta-training
learns how much a new user should trust popularity versus co-occurrence, and adaptation personalises it. To
the inner loop a and w are one vector: the head's ``w`` is [w, a] (H + C,) and an item's vector is
[z_i, c(u, i)], so ``models.core.adapt`` needs no notion of context. The head starts from a meta-learned init (shifted by the
user's side features, when there are any) and takes a few gradient steps on the user's own events with
meta-learned per-parameter step sizes; see ``models.core.adapt``.

Items are an id embedding plus a projection of their side features. Training drops the id part of random items
(``id_dropout``), so the tower also learns to place an item from its features alone; a new item is exactly
that, an item whose id embedding and id bias are zero.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor, nn

from models.core.adapt import Head
from models.core.config import ModelConfig

# Serving evaluates the context MLP on every (user, item) of a batch: on a large catalogue, in cache-sized
# pieces (``_blocked``). Below this many items per user (MovieLens: 1,682) it takes the plain path unchanged.
BLOCKED_OFFSET_MIN_ITEMS = 4096
OFFSET_BLOCK_ROWS = 8192  # rows per piece: 1 MiB of hidden activations (32 users x 17.6k items: 4x faster)


class MetaRec(nn.Module):
    """Item tower + global/item biases + head init and Meta-SGD step sizes. Read-only while serving."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, f, g, d, h = cfg.n_items, cfg.n_item_features, cfg.n_user_features, cfg.dim, cfg.head_dim
        self.item_emb = nn.Parameter(torch.randn(n, d) * 0.1)  # (N, D)
        self.item_bias = nn.Parameter(torch.zeros(n))  # (N,)
        self.register_buffer("item_features", torch.zeros(n, f))  # (N, F) part of the checkpoint
        self.feat_proj = nn.Parameter(torch.randn(f, d) / math.sqrt(max(f, 1)))  # (F, D)
        self.feat_bias = nn.Parameter(torch.zeros(f))  # (F,)
        self.tower = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, h), nn.LayerNorm(h))
        self.mu = nn.Parameter(torch.zeros(()))
        self.head_w = nn.Parameter(torch.randn(h) * 0.01)  # (H,) meta-learned init of w
        self.head_b = nn.Parameter(torch.zeros(()))
        self.user_proj = nn.Parameter(torch.zeros(g, h + 1))  # (G, H + 1) user features -> init offset
        init_log_lr = math.log(cfg.inner_lr_init)
        self.log_lr_w = nn.Parameter(torch.full((h,), init_log_lr))  # (H,) Meta-SGD step sizes, log scale
        self.log_lr_b = nn.Parameter(torch.tensor(init_log_lr))
        if cfg.n_context:
            # With context, popularity reaches the score through the context, which is current. The item
            # biases, the head's init and the user-feature offset would learn the training log's popularity
            # instead, which is stale when serving and, inside training, partly the future of a task: they stay
            # zero (``frozen``) and z . w comes from adaptation alone.
            self.head_w.data.zero_()
        if cfg.n_context:  # only then: checkpoints of models without context keep their exact tensor set
            # a shared, non-adapted read of the context: how popularity, recency and co-occurrence combine
            # (and differ by the user's position); the adapted weights a personalise on top of it
            self.context_mlp = nn.Sequential(nn.Linear(cfg.n_context, 32), nn.GELU(), nn.Linear(32, 1))
            self.head_a = nn.Parameter(torch.zeros(cfg.n_context))  # (C,) meta-learned init of a
            self.log_lr_a = nn.Parameter(torch.full((cfg.n_context,), init_log_lr))  # (C,)

    def frozen(self) -> list[nn.Parameter]:
        """Parameters meta-training leaves at their initial value (see ``__init__``)."""
        if not self.cfg.n_context:
            return []
        return [self.item_bias, self.head_w, self.user_proj]

    # --- items ----------------------------------------------------------------------------------------------
    def item_vectors(self, drop_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The catalogue's vectors (N, H) and head-independent score offsets mu + b_i (N,).

        ``drop_ids`` (N,) bool marks items to encode from their features only (training's id dropout).
        """
        emb, bias = self.item_emb, self.item_bias  # (N, D), (N,)
        if drop_ids is not None:
            keep = (~drop_ids).to(emb.dtype)  # (N,)
            emb, bias = emb * keep[:, None], bias * keep
        return self._encode(emb, bias, self.item_features)

    def cold_vectors(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Vectors and offsets of items known only by their features (M, F): (M, H), (M,)."""
        m = features.shape[0]
        zeros = features.new_zeros(m, self.cfg.dim)
        return self._encode(zeros, features.new_zeros(m), features)

    def _encode(self, emb: Tensor, bias: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        x = emb + features @ self.feat_proj  # (M, D)
        offset = self.mu + bias + features @ self.feat_bias  # (M,)
        return self.tower(x), offset  # (M, H), (M,)

    def context_offset(self, context: Tensor) -> Tensor:
        """The head-independent part of the context's score: (..., C) -> (...).

        Without autograd, a batch of large catalogues (B, N, C) goes through the MLP in pieces: the same
        values (tests/unit/models/test_context_offset.py), several times faster, since the (B x N, 32)
        hidden activations of a whole batch (72 MB for 32 users on Last.fm) never leave the cache.
        """
        if context.dim() == 3 and context.shape[1] >= BLOCKED_OFFSET_MIN_ITEMS and not torch.is_grad_enabled():
            return _blocked(self.context_mlp, context.reshape(-1, context.shape[-1])).view(context.shape[:-1])
        return self.context_mlp(context).squeeze(-1)

    # --- user head ------------------------------------------------------------------------------------------
    def head_init(self, batch: int, user_features: Tensor | None = None) -> Head:
        """Every user's starting head {"w": (B, H + C), "b": (B,)}: the meta-init, shifted by user features.

        ``w`` is the taste vector then the context weights a (C = 0 without context)."""
        w = self.head_w.expand(batch, -1)  # (B, H)
        b = self.head_b.expand(batch)  # (B,)
        if user_features is not None and self.cfg.n_user_features:
            offset = user_features @ self.user_proj  # (B, H + 1)
            w, b = w + offset[:, :-1], b + offset[:, -1]
        if self.cfg.n_context:
            w = torch.cat([w, self.head_a.expand(batch, -1)], dim=1)  # (B, H + C)
        return {"w": w, "b": b}

    def step_sizes(self) -> Head:
        """Meta-SGD's per-parameter learning rates {"w": (H + C,), "b": ()}, kept positive by a log scale."""
        log_lr_w = self.log_lr_w
        if not self.cfg.adapt_taste:  # a step size of exactly zero: w stays at its init
            log_lr_w = torch.full_like(log_lr_w, float("-inf"))
        if self.cfg.n_context:
            log_lr_w = torch.cat([log_lr_w, self.log_lr_a])  # (H + C,)
        return {"w": log_lr_w.exp(), "b": self.log_lr_b.exp()}

    # --- catalogue growth -----------------------------------------------------------------------------------
    def with_items(self, features: Tensor) -> "MetaRec":
        """A new model whose catalogue also has ``features.shape[0]`` new items (features only, zero ids).

        The model serving now is left untouched, so readers never see a half-grown catalogue.
        """
        extra = features.shape[0]
        grown = MetaRec(replace(self.cfg, n_items=self.cfg.n_items + extra)).to(self.item_emb.device)
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        state["item_emb"] = torch.cat([state["item_emb"], state["item_emb"].new_zeros(extra, self.cfg.dim)])
        state["item_bias"] = torch.cat([state["item_bias"], state["item_bias"].new_zeros(extra)])
        state["item_features"] = torch.cat([state["item_features"], features.to(state["item_features"])])
        grown.load_state_dict(state)
        return grown.requires_grad_(self.item_emb.requires_grad).train(self.training)


def _blocked(mlp: nn.Module, rows: Tensor) -> Tensor:
    """``mlp(rows).squeeze(-1)`` for (R, C) rows, ``OFFSET_BLOCK_ROWS`` at a time: (R,)."""
    out = rows.new_empty(rows.shape[0])
    for start in range(0, rows.shape[0], OFFSET_BLOCK_ROWS):
        out[start : start + OFFSET_BLOCK_ROWS] = mlp(rows[start : start + OFFSET_BLOCK_ROWS]).squeeze(-1)
    return out
