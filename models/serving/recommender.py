"""What the stream worker calls: adapt a batch of users on their recent events and rank the catalogue.

One ``Recommender`` is one model version. Its meta-parameters never change while it serves; the catalogue can
grow (``add_items``), which builds a new snapshot beside the old one and swaps a single reference, so
concurrent ``recommend`` calls from worker threads each see one consistent catalogue without taking a lock.

A model with stream context features (``ModelConfig.n_context``) also owns an ``ItemStats``: item counts,
decayed counts, co-occurrences and transitions that ``observe`` updates with the events the caller sees, and
that ``recommend`` turns into each user's context features. ``meta_train`` hands back a Recommender whose
statistics already hold its training log; a caller that never calls ``observe`` still gets lists, from
statistics that stop at that log.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.core.adapt import Adapted, flatten_heads, score_in_context, with_context
from models.core.checkpoint import load_checkpoint, save_checkpoint
from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.features.item_stats import ItemStats
from models.serving.kernel import adapt_forward
from models.serving.requests import AdaptRequest  # built in requests.py; importable from here too

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptResult:
    items: list[str]  # top-k, best first
    scores: list[float]
    head: np.ndarray  # adapted head [w, b] flattened, float32, (H + 1,)
    loss_before: float  # support loss at the meta-init (nan if the support set is empty)
    loss_after: float  # support loss after adaptation (nan if the support set is empty)


@dataclass(frozen=True)
class _Snapshot:
    """Everything one call reads: the model and its catalogue's cached vectors, replaced whole."""

    model: MetaRec
    item_ids: tuple[str, ...]
    index: dict[str, int]
    vecs: Tensor  # (N, H)
    bias: Tensor  # (N,) mu + item bias
    cold_vec: Tensor  # (H,) an item known by nothing (used by predict for unknown ids)
    cold_bias: Tensor  # ()
    feature_names: tuple[str, ...] = field(default=())


def new_version() -> str:
    return time.strftime("m%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def resolve_device(device: str | torch.device) -> torch.device:
    """``cuda`` when asked for and present; otherwise CPU (with a warning if CUDA was asked for)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("CUDA requested but not available: serving on CPU")
        return torch.device("cpu")
    return dev


class Recommender:
    """A meta-trained model version, ready to adapt and rank for batches of users."""

    def __init__(
        self,
        model: MetaRec,
        item_ids: Sequence[str],
        *,
        version: str | None = None,
        item_feature_names: Sequence[str] = (),
        device: str | torch.device = "cpu",
        stats: ItemStats | None = None,
    ) -> None:
        if len(item_ids) != model.cfg.n_items:
            raise ValueError(f"{len(item_ids)} item ids for a model of {model.cfg.n_items} items")
        self.version = version or new_version()
        self.device = resolve_device(device)
        model = model.to(self.device).eval().requires_grad_(False)
        self._grow_lock = threading.Lock()
        self._snap = _snapshot(model, tuple(item_ids), tuple(item_feature_names))
        self._stats: ItemStats | None = None
        if model.cfg.n_context:
            self.use_stats(stats or ItemStats(model.cfg.n_items))

    # --- attributes -----------------------------------------------------------------------------------------
    @property
    def config(self) -> ModelConfig:
        return self._snap.model.cfg

    @property
    def item_ids(self) -> list[str]:
        return list(self._snap.item_ids)

    @property
    def item_feature_names(self) -> list[str]:
        return list(self._snap.feature_names)

    @property
    def model(self) -> MetaRec:
        """The meta-parameters (read-only: frozen, eval mode)."""
        return self._snap.model

    @property
    def stats(self) -> ItemStats | None:
        """The item statistics behind the context features (None for a model without context)."""
        return self._stats

    def use_stats(self, stats: ItemStats) -> None:
        """Serve from ``stats`` (e.g. a copy carried over from the previous model version)."""
        if stats.n_items < self.config.n_items:
            stats.grow(self.config.n_items - stats.n_items)
        self._stats = stats

    def observe(self, events: Sequence[tuple[str, str, float] | tuple[str, str, float, float | None]],
                ) -> None:
        """Count events (user id, item id, seconds[, rating]) into the item statistics, in time order.

        Call it with every interaction the caller learns (after ranking for it, as the stream does: test then
        train); items outside the catalogue are skipped. A no-op for a model without context features. The
        optional fourth field (None/NaN: not a rating) feeds the item means a rating model's context reads.
        """
        if self._stats is None or not events:
            return
        index = self._snap.index
        values = [e[3] if len(e) > 3 else None for e in events]
        self._stats.observe([e[0] for e in events], [index.get(e[1], -1) for e in events],
                            [e[2] for e in events], values)

    def forget(self, user_id: str) -> None:
        """Drop a deleted user's item history from the statistics (a no-op for a model without context)."""
        if self._stats is not None:
            self._stats.forget(user_id)

    # --- persistence ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Recommender":
        """Load a checkpoint folder; raises ``models.core.checkpoint.CheckpointError`` if it is unusable."""
        ckpt = load_checkpoint(path)
        return cls(ckpt.model, ckpt.item_ids, version=ckpt.version,
                   item_feature_names=ckpt.item_feature_names, device=device, stats=ckpt.stats)

    def save(self, path: str | Path, version: str | None = None) -> None:
        """Save to ``path``; a given ``version`` names the saved model and, from now on, this one too."""
        if version is not None:
            self.version = version
        snap = self._snap
        save_checkpoint(path, snap.model, snap.item_ids, self.version, snap.feature_names, self._stats)

    # --- serving --------------------------------------------------------------------------------------------
    def recommend(
        self, requests: Sequence[AdaptRequest], k: int, *, steps: int | None = None
    ) -> list[AdaptResult]:
        """Adapt each user on their support set and return their top-``k`` unseen items, best first.

        Fewer than ``k`` items come back only when the user has excluded nearly the whole catalogue. ``steps``
        overrides the number of inner steps (0 = the meta-init alone), for ablations.
        """
        if not requests:
            return []
        snap = self._snap  # one catalogue for the whole call
        context = self._context(snap, requests)  # (B, N, C) or None
        out, sizes = self._adapt(snap, requests, steps, context)
        with torch.inference_mode():
            scores = score_in_context(out.heads, snap.vecs, snap.bias, context)  # (B, N)
            if context is not None:
                scores = scores + snap.model.context_offset(context)
            rows, cols = _excluded(snap.index, requests)
            scores[rows.to(scores.device), cols.to(scores.device)] = float("-inf")
            top = scores.topk(min(k, scores.shape[1]), dim=1)
        values, indices = top.values.cpu().numpy(), top.indices.cpu().numpy()
        heads = flatten_heads(out.heads).cpu().numpy().astype(np.float32)
        before, after = out.loss_before.cpu().numpy(), out.loss_after.cpu().numpy()
        results = []
        for b in range(len(requests)):
            keep = np.isfinite(values[b])
            results.append(AdaptResult(
                items=[snap.item_ids[i] for i in indices[b][keep]],
                scores=values[b][keep].tolist(),
                head=heads[b].copy(),
                loss_before=float(before[b]) if sizes[b] else float("nan"),
                loss_after=float(after[b]) if sizes[b] else float("nan"),
            ))
        return results

    def predict(
        self, requests: Sequence[AdaptRequest], item_ids: Sequence[str], *, steps: int | None = None
    ) -> np.ndarray:
        """Scores (B, len(item_ids)) after adaptation: ratings on the rating objective (clipped to the scale).

        Ids outside the catalogue get the vector of an item known by nothing. ``steps`` overrides the number
        of inner steps (0 = the meta-init alone), for ablations.
        """
        snap = self._snap
        if not requests:
            return np.zeros((0, len(item_ids)), np.float32)
        context = self._context(snap, requests)  # (B, N, C) or None
        out, _sizes = self._adapt(snap, requests, steps, context)
        idx = torch.tensor([snap.index.get(i, -1) for i in item_ids], dtype=torch.long, device=self.device)
        known = idx >= 0  # (M,)
        with torch.inference_mode():
            vecs = torch.where(known[:, None], snap.vecs[idx.clamp(min=0)], snap.cold_vec)  # (M, H)
            bias = torch.where(known, snap.bias[idx.clamp(min=0)], snap.cold_bias)  # (M,)
            if context is not None:  # unknown items have no statistics: zero context
                context = context[:, idx.clamp(min=0)] * known[None, :, None]  # (B, M, C)
            scores = score_in_context(out.heads, vecs, bias, context)  # (B, M)
            if context is not None:
                scores = scores + snap.model.context_offset(context)
            if self.config.objective == "rating":
                scores = scores.clamp(self.config.rating_min, self.config.rating_max)
        return scores.cpu().numpy().astype(np.float32)

    def add_items(self, item_ids: Sequence[str], features: np.ndarray | None = None) -> None:
        """Extend the catalogue; new items are placed by their features alone. Known ids are skipped."""
        with self._grow_lock:
            snap = self._snap
            fresh = [(n, i) for n, i in enumerate(item_ids) if i not in snap.index]
            if len(set(i for _, i in fresh)) != len(fresh):
                raise ValueError("add_items got the same new item id twice")
            if not fresh:
                return
            n_feat = snap.model.cfg.n_item_features
            feats = np.zeros((len(item_ids), n_feat), np.float32)
            if features is not None:
                feats = np.asarray(features)
            if feats.shape != (len(item_ids), n_feat):
                raise ValueError(f"features must be ({len(item_ids)}, {n_feat}), got {feats.shape}")
            rows = torch.as_tensor(feats[[n for n, _ in fresh]], dtype=torch.float32, device=self.device)
            grown = snap.model.with_items(rows).eval()
            ids = snap.item_ids + tuple(i for _, i in fresh)
            if self._stats is not None:
                self._stats.grow(len(ids) - self._stats.n_items)
            self._snap = _snapshot(grown, ids, snap.feature_names)
        log.info("catalogue grew by %d items to %d", len(fresh), len(ids))

    # --- internals ------------------------------------------------------------------------------------------
    def _context(self, snap: _Snapshot, requests: Sequence[AdaptRequest]) -> Tensor | None:
        """Each user's context features (B, N, C) from the item statistics: seen items, then the support's
        items in order (most recent last; each support item's transitions as at its arrival); a rating model's
        come from item means and the user's support ratings (``rating_context``). None without context."""
        if self._stats is None:
            return None
        index = snap.index
        if snap.model.cfg.objective == "rating":  # item means, and the user's ratings spread by similarity
            supports = [[(index[i], t) for i, t in r.support if i in index] for r in requests]
            context = torch.as_tensor(self._stats.rating_context(supports), device=self.device)  # (B, N', R)
            n = len(snap.item_ids)
            return F.pad(context, (0, 0, 0, max(0, n - context.shape[1])))[:, :n]  # (B, N, R)
        seen = [[c for c in map(index.get, r.exclude) if c is not None] for r in requests]
        support = [[index[i] for i, _ in r.support if i in index] for r in requests]
        recent = [items[-8:] for items in support]
        users = [r.user_id for r in requests]  # the keys ``observe`` fed: the users' own pairs are left out
        context = torch.as_tensor(self._stats.context(seen, recent, users, support), device=self.device)
        n = len(snap.item_ids)
        if context.shape[1] < n:  # items added to the catalogue after the statistics were last grown
            context = F.pad(context, (0, 0, 0, n - context.shape[1]))
        return context[:, :n]

    def _adapt(
        self, snap: _Snapshot, requests: Sequence[AdaptRequest], steps: int | None,
        context: Tensor | None = None,
    ) -> tuple[Adapted, list[int]]:
        cfg = snap.model.cfg
        items, targets, mask, sizes = _pad_support(snap.index, requests, cfg.max_support)
        dev = self.device
        items, targets, mask = items.to(dev), targets.to(dev), mask.to(dev)
        with torch.inference_mode():
            if cfg.objective == "implicit":
                neg = _negatives(requests, len(snap.item_ids), cfg.n_negatives, cfg.seed).to(dev)  # (B, K)
                items = torch.cat([items, neg], dim=1)  # (B, S + K): one gather, one product per step
            vecs, bias = snap.vecs[items], snap.bias[items]  # (B, S + K, H), (B, S + K)
            if context is not None:
                rows = torch.arange(len(requests), device=dev)[:, None]
                vecs = with_context(vecs, context[rows, items])  # (B, S + K, H + C)
                bias = bias + snap.model.context_offset(context[rows, items])
            out = adapt_forward(
                snap.model.head_init(len(requests), _user_features(requests, cfg, dev)),
                snap.model.step_sizes(),
                vecs, bias, targets, mask,
                steps=cfg.inner_steps if steps is None else steps, objective=cfg.objective,
                prior=cfg.support_prior,
            )
        return out, sizes


def _snapshot(model: MetaRec, item_ids: tuple[str, ...], feature_names: tuple[str, ...]) -> _Snapshot:
    with torch.no_grad():
        vecs, bias = model.item_vectors()
        cold_vec, cold_bias = model.cold_vectors(model.item_features.new_zeros(1, model.cfg.n_item_features))
    index = {item: n for n, item in enumerate(item_ids)}
    return _Snapshot(model, item_ids, index, vecs, bias, cold_vec[0], cold_bias[0], feature_names)


def _pad_support(
    index: dict[str, int], requests: Sequence[AdaptRequest], max_support: int
) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """Known support items, the last ``max_support`` of each user, padded to the longest: (B, S) x 3."""
    kept = [[(index[i], t) for i, t in r.support if i in index][-max_support:] for r in requests]
    sizes = [len(k) for k in kept]
    width = max(1, max(sizes))
    rows = [b for b, pairs in enumerate(kept) for _ in pairs]
    cols = [j for pairs in kept for j in range(len(pairs))]
    items = torch.zeros(len(requests), width, dtype=torch.long)
    targets = torch.zeros(len(requests), width)
    if rows:  # one tensor per batch, not one per user
        items[rows, cols] = torch.tensor([p[0] for pairs in kept for p in pairs])
        targets[rows, cols] = torch.tensor([p[1] for pairs in kept for p in pairs], dtype=torch.float32)
    mask = torch.arange(width)[None, :] < torch.tensor(sizes)[:, None]  # (B, S)
    return items, targets, mask, sizes


def _negatives(requests: Sequence[AdaptRequest], n_items: int, k: int, seed: int) -> Tensor:
    """K uniform negatives per user, seeded by the user id: a user's result never depends on the batch."""
    return torch.as_tensor(np.stack([_user_negatives(seed, r.user_id, n_items, k) for r in requests]),
                           dtype=torch.long)  # (B, K)


@lru_cache(maxsize=32768)
def _user_negatives(seed: int, user_id: str, n_items: int, k: int) -> np.ndarray:
    """One user's negatives, cached: seeding a generator costs more than the rest of a user's bookkeeping, and
    active users come back batch after batch (32768 users x K int32 ~ 8 MiB at K = 64)."""
    rng = np.random.default_rng([seed, zlib.crc32(user_id.encode())])
    out = rng.integers(0, n_items, k).astype(np.int32)
    out.flags.writeable = False
    return out


def _user_features(requests: Sequence[AdaptRequest], cfg: ModelConfig, device: torch.device) -> Tensor | None:
    if not cfg.n_user_features:
        return None
    rows = np.zeros((len(requests), cfg.n_user_features), np.float32)
    for b, r in enumerate(requests):
        if r.user_features is not None:
            rows[b] = np.asarray(r.user_features, np.float32)
    return torch.as_tensor(rows, device=device)


def _excluded(index: dict[str, int], requests: Sequence[AdaptRequest]) -> tuple[Tensor, Tensor]:
    """(row, column) pairs of every known excluded item."""
    rows: list[int] = []
    cols: list[int] = []
    for b, r in enumerate(requests):
        known = [c for c in map(index.get, r.exclude) if c is not None]
        cols.extend(known)
        rows.extend([b] * len(known))
    return torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
