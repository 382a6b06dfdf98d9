"""Requests -> the index arrays a batch is computed on: one pass over the ids, no per-user numpy work.

Ids map to catalogue indices through one dict (``map`` runs the lookups at C speed); everything after this is
batched array code, so the per-user Python on the model thread is this module's few comprehensions.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from models.core.config import ModelConfig
from models.features.context import UserViews, user_views
from models.features.history import HistoryBook
from models.serving.requests import AdaptRequest

_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Encoded:
    """A batch of requests as arrays."""

    items: Tensor  # (B, S) support item indices (0 where padding)
    targets: Tensor  # (B, S)
    mask: Tensor  # (B, S) bool
    sizes: list[int]  # known support events per user
    support: list[list[int]]  # each user's known support items, oldest first
    ratings: list[list[tuple[int, float]]]  # each user's (item, target) pairs (a rating model's context)
    excluded: list[np.ndarray]  # each user's excluded item indices
    views: UserViews | None  # what the implicit context reads (None without context)


def encode(index: dict[str, int], requests: Sequence[AdaptRequest], cfg: ModelConfig,
           with_views: bool, book: HistoryBook | None = None) -> Encoded:
    """Map a batch of requests to indices: the last ``max_support`` known support events, exclusions, views.

    A request without a history (an offline caller) stands for its excluded items: those an offline replay's
    ``book`` counted first, in the book's order, then the rest as not yet counted."""
    support, ratings, excluded, histories, fresh = [], [], [], [], []
    for r in requests:
        codes = list(map(index.get, (i for i, _ in r.support)))
        pairs = [(c, t) for c, (_, t) in zip(codes, r.support) if c is not None][-cfg.max_support:]
        ratings.append(pairs)
        support.append([c for c, _ in pairs])
        excluded.append(np.fromiter((c for c in map(index.get, r.exclude) if c is not None), np.int64))
        if with_views and r.history:
            histories.append([-1 if c is None else c for c in map(index.get, r.history)])
            fresh.append(r.fresh)
        elif with_views:  # the excluded items, those the book counted first, in its order
            seen = set(excluded[-1].tolist())
            counted = [i for i in (book.history(r.user_id) if book is not None else []) if i in seen]
            extra = sorted(seen.difference(counted))
            histories.append(counted + extra)
            fresh.append(len(extra))
    sizes = [len(p) for p in ratings]
    width = max([1, *sizes])
    items = torch.zeros(len(requests), width, dtype=torch.long)
    targets = torch.zeros(len(requests), width)
    rows = [b for b, pairs in enumerate(ratings) for _ in pairs]
    if rows:  # one tensor per batch, not one per user
        cols = [j for pairs in ratings for j in range(len(pairs))]
        items[rows, cols] = torch.tensor([p[0] for pairs in ratings for p in pairs])
        targets[rows, cols] = torch.tensor([p[1] for pairs in ratings for p in pairs], dtype=torch.float32)
    mask = torch.arange(width)[None, :] < torch.tensor(sizes)[:, None]  # (B, S)
    views = user_views(histories, fresh, support, len(index)) if with_views else None
    return Encoded(items, targets, mask, sizes, support, ratings, excluded, views)


def negatives(requests: Sequence[AdaptRequest], n_items: int, k: int, seed: int) -> Tensor:
    """(B, K) uniform negatives per user, a hash of (seed, user id, k): a user's negatives never depend on the
    batch, and nothing is cached per user."""
    users = np.fromiter((zlib.crc32(r.user_id.encode()) for r in requests), np.uint64, len(requests))  # (B,)
    x = (users[:, None] << np.uint64(20)) ^ (np.uint64(seed) << np.uint64(52)) ^ np.arange(k, dtype=np.uint64)
    with np.errstate(over="ignore"):  # splitmix64: wrapping arithmetic is the point
        x = (x + _MIX) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return torch.as_tensor((x % np.uint64(max(n_items, 1))).astype(np.int64))  # (B, K)


def shown_negatives(index: dict[str, int], requests: Sequence[AdaptRequest], uniform: Tensor) -> Tensor:
    """(B, K) ``uniform`` negatives with each user's shown-and-not-taken items (``AdaptRequest.negatives``,
    ids outside the catalogue skipped) in the first slots, at most K of them."""
    if not any(r.negatives for r in requests):
        return uniform
    out = uniform.clone()
    k = out.shape[1]
    for b, r in enumerate(requests):
        codes = [c for c in map(index.get, r.negatives) if c is not None][:k]
        if codes:
            out[b, : len(codes)] = torch.tensor(codes, dtype=out.dtype)
    return out


def user_features(requests: Sequence[AdaptRequest], cfg: ModelConfig, device: torch.device) -> Tensor | None:
    """(B, G) side features of the users (zeros where a request has none), None for a model without them."""
    if not cfg.n_user_features:
        return None
    rows = np.zeros((len(requests), cfg.n_user_features), np.float32)
    for b, r in enumerate(requests):
        if r.user_features is not None:
            rows[b] = np.asarray(r.user_features, np.float32)
    return torch.as_tensor(rows, device=device)
