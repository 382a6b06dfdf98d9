"""What the stream worker calls: adapt a batch of users on their recent events, retrieve candidates, rank them.

One ``Recommender`` is one model version. Its meta-parameters never change while it serves; the catalogue can
grow (``add_items``), which builds a new snapshot beside the old one and swaps a single reference, so
concurrent ``recommend`` calls from worker threads each see one consistent catalogue without taking a lock.

Retrieve, then rank: a user's head is adapted on their support set, then only a bounded set of candidates
(``models.serving.candidates``: item-kNN and next-item neighbours, position and decayed popularity, the top of
the adapted head's inner product, the newest items nearest the user's taste) is scored with context features,
so the cost per user does not grow with the catalogue. ``candidates=None`` scores every item (the reference
the retrieval is measured against).

A model with stream context features (``ModelConfig.n_context``) also owns an ``ItemStats``: per-item counts and
neighbours that ``learn`` updates with the users' events (each with the user's history, which the stream reads
from the user's state: nothing per user is kept here) and that ``recommend`` turns into features. Offline
callers feed events through ``observe``. Unavailable items (``availability``) are never retrieved nor ranked.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
import torch
from torch import Tensor

from models.core.adapt import Adapted, flatten_heads, with_context
from models.core.checkpoint import load_checkpoint, save_checkpoint
from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.features.context import ContextReader
from models.features.history import Learned
from models.features.item_stats import ItemStats
from models.features.rating_context import rating_context
from models.serving.availability import Availability, allowed_mask
from models.serving.candidates import CandidateBudget, PopularLists, excluded_keys, gather_candidates
from models.serving.encode import Encoded, encode, negatives, shown_negatives, user_features
from models.serving.item_index import ItemIndex
from models.serving.kernel import adapt_forward
from models.serving.requests import AdaptRequest, LearnedUser

__all__ = ["AdaptRequest", "AdaptResult", "CandidateBudget", "Recommender", "new_version", "resolve_device"]

log = logging.getLogger(__name__)
NEW_ITEMS_POOL = 256  # the newest added items whose features are matched against a user's support


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
    taste: ItemIndex | None = None  # top-k of the adapted taste over the catalogue
    new_items: Tensor | None = None  # (P,) the newest added items' indices


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
        candidates: CandidateBudget | None = CandidateBudget(),
    ) -> None:
        if len(item_ids) != model.cfg.n_items:
            raise ValueError(f"{len(item_ids)} item ids for a model of {model.cfg.n_items} items")
        self.version = version or new_version()
        self.device = resolve_device(device)
        self.candidates = candidates
        model = model.to(self.device).eval().requires_grad_(False)
        self._grow_lock = threading.Lock()
        self._snap = _snapshot(model, tuple(item_ids), tuple(item_feature_names))
        self._stats: ItemStats | None = None
        self._popular = PopularLists(max(candidates.position, candidates.popular) if candidates else 0)
        self.availability = Availability()  # the worker hands the same one to every version it serves
        if model.cfg.n_context:
            self.use_stats(stats or ItemStats(model.cfg.n_items))

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

    # --- learning the stream --------------------------------------------------------------------------------
    def learn(self, records: Sequence[LearnedUser]) -> None:
        """Count users' new events into the item statistics: each record carries the user's distinct items
        before them (first-arrival order) and the events (item id, seconds, rating or None) in order. The
        stream calls this after ranking a batch (test, then train); items outside the catalogue are skipped.
        A no-op for a model without context.
        """
        if self._stats is None or not records:
            return
        index = self._snap.index
        self._stats.learn([
            Learned(r.user_id, [index.get(i, -1) for i in r.history_before],
                    [(index.get(e[0], -1), *e[1:]) for e in r.events])
            for r in records
        ])

    def observe(self, events: Sequence[tuple], weighted: bool = False) -> None:
        """Offline callers: count time-ordered events (user id, item id, seconds[, rating][, count weight])
        into the item statistics, which keep these users' histories in their history book. ``weighted``: every
        event carries its count weight (operator event weights). The worker calls ``learn``."""
        if self._stats is None or not events:
            return
        index = self._snap.index
        values = [e[3] if len(e) > 3 else None for e in events]
        weights = [e[4] for e in events] if weighted else None
        self._stats.observe([e[0] for e in events], [index.get(e[1], -1) for e in events],
                            [e[2] for e in events], values, weights)

    def forget(self, user_id: str) -> None:
        """Drop an offline caller's history of a deleted user (the stream keeps none; counts stay)."""
        if self._stats is not None:
            self._stats.forget(user_id)

    # --- persistence ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             candidates: CandidateBudget | None = CandidateBudget()) -> "Recommender":
        """Load a checkpoint folder; raises ``models.core.checkpoint.CheckpointError`` if it is unusable."""
        ckpt = load_checkpoint(path)
        return cls(ckpt.model, ckpt.item_ids, version=ckpt.version, item_feature_names=ckpt.item_feature_names,
                   device=device, stats=ckpt.stats, candidates=candidates)

    def save(self, path: str | Path, version: str | None = None) -> None:
        """Save to ``path``; a given ``version`` names the saved model and, from now on, this one too."""
        if version is not None:
            self.version = version
        snap = self._snap
        save_checkpoint(path, snap.model, snap.item_ids, self.version, snap.feature_names, self._stats)

    # --- serving --------------------------------------------------------------------------------------------
    def recommend(
        self, requests: Sequence[AdaptRequest], k: int, *, steps: int | None = None,
        proposed: list[np.ndarray] | None = None, only: Collection[str] | None = None,
    ) -> list[AdaptResult]:
        """Adapt each user on their support set and return their top-``k`` unseen, available items, best first.

        Fewer than ``k`` items only when few are left to propose. ``steps`` overrides the inner steps (0 = the
        meta-init alone). ``proposed`` receives each user's candidate item indices (-1 padded). ``only``
        restricts every list of the call to these items (e.g. a category asked for through the read API).
        """
        if not requests:
            return []
        snap = self._snap  # one catalogue for the whole call
        banned = self.availability.banned(snap.item_ids, snap.index)  # (N,) or None
        allowed = None if only is None else allowed_mask(only, snap.index, len(snap.item_ids))  # (N,)
        banned = banned if allowed is None else ~allowed if banned is None else banned | ~allowed
        batch, reader = self._encode(snap, requests)
        out = self._adapt(snap, requests, batch, reader, steps)
        cols = self._columns(snap, batch, reader, out.heads, banned, allowed)  # (B, M)
        if proposed is not None:
            proposed.extend(cols)
        with torch.inference_mode():
            scores = self._score(snap, batch, reader, out.heads, cols, banned=banned)  # (B, M)
            top = scores.topk(min(k, scores.shape[1]), dim=1)
        values, slots = top.values.cpu().numpy(), top.indices.cpu().numpy()
        picked = np.take_along_axis(cols, slots, 1)  # (B, k) item indices
        heads = flatten_heads(out.heads).cpu().numpy().astype(np.float32)
        before, after = out.loss_before.cpu().numpy(), out.loss_after.cpu().numpy()
        results = []
        for b in range(len(requests)):
            keep = np.isfinite(values[b])
            results.append(AdaptResult(
                items=[snap.item_ids[i] for i in picked[b][keep]],
                scores=values[b][keep].tolist(),
                head=heads[b].copy(),
                loss_before=float(before[b]) if batch.sizes[b] else float("nan"),
                loss_after=float(after[b]) if batch.sizes[b] else float("nan"),
            ))
        return results

    def predict(
        self, requests: Sequence[AdaptRequest], item_ids: Sequence[str], *, steps: int | None = None
    ) -> np.ndarray:
        """Scores (B, len(item_ids)) after adaptation: ratings on the rating objective (clipped to the scale).

        Ids outside the catalogue get the vector of an item known by nothing, and no context. ``steps``
        overrides the number of inner steps (0 = the meta-init alone), for ablations.
        """
        snap = self._snap
        if not requests:
            return np.zeros((0, len(item_ids)), np.float32)
        batch, reader = self._encode(snap, requests)
        out = self._adapt(snap, requests, batch, reader, steps)
        idx = np.fromiter((snap.index.get(i, -1) for i in item_ids), np.int64, len(item_ids))
        cols = np.ascontiguousarray(np.broadcast_to(idx, (len(requests), len(idx))))  # (B, M)
        with torch.inference_mode():
            scores = self._score(snap, batch, reader, out.heads, cols, exclude=False)  # (B, M)
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
            feats = np.zeros((len(item_ids), n_feat), np.float32) if features is None else np.asarray(features)
            if feats.shape != (len(item_ids), n_feat):
                raise ValueError(f"features must be ({len(item_ids)}, {n_feat}), got {feats.shape}")
            rows = torch.as_tensor(feats[[n for n, _ in fresh]], dtype=torch.float32, device=self.device)
            grown = snap.model.with_items(rows).eval()
            ids = snap.item_ids + tuple(i for _, i in fresh)
            if self._stats is not None:
                self._stats.grow(len(ids) - self._stats.n_items)
            self._snap = _snapshot(grown, ids, snap.feature_names, snap)
        log.info("catalogue grew by %d items to %d", len(fresh), len(ids))

    # --- internals ------------------------------------------------------------------------------------------
    def _encode(self, snap: _Snapshot, requests: Sequence[AdaptRequest]) -> tuple[Encoded, ContextReader | None]:
        stats = self._stats
        batch = encode(snap.index, requests, snap.model.cfg, stats is not None,
                       stats.book if stats is not None else None)
        reader = ContextReader(stats, batch.views) if stats is not None and batch.views is not None else None
        return batch, reader

    def _context(self, snap: _Snapshot, batch: Encoded, reader: ContextReader | None,
                 cols: np.ndarray) -> Tensor | None:
        """(B, M, C) context features of items ``cols`` (B, M) (-1: none) for each user; None without context."""
        if reader is None:
            return None
        if snap.model.cfg.objective == "rating":
            feats = rating_context(reader.stats, batch.ratings, cols)
        else:
            feats = reader.at(cols)
        return torch.as_tensor(feats, device=self.device)

    def _adapt(self, snap: _Snapshot, requests: Sequence[AdaptRequest], batch: Encoded,
               reader: ContextReader | None, steps: int | None) -> Adapted:
        cfg, dev = snap.model.cfg, self.device
        items, targets, mask = batch.items.to(dev), batch.targets.to(dev), batch.mask.to(dev)
        cols = np.where(batch.mask.numpy(), batch.items.numpy(), -1)  # (B, S)
        if cfg.objective == "implicit":
            neg = negatives(requests, len(snap.item_ids), cfg.n_negatives, cfg.seed)  # (B, K)
            neg = shown_negatives(snap.index, requests, neg).to(dev)  # shown, not taken: the first slots
            items = torch.cat([items, neg], dim=1)  # (B, S + K): one gather, one product per step
            cols = np.concatenate([cols, neg.cpu().numpy()], axis=1)
        context = self._context(snap, batch, reader, cols)  # (B, S + K, C) or None
        with torch.inference_mode():
            vecs, bias = snap.vecs[items], snap.bias[items]  # (B, S + K, H), (B, S + K)
            if context is not None:
                vecs = with_context(vecs, context)  # (B, S + K, H + C)
                bias = bias + snap.model.context_offset(context)
            return adapt_forward(
                snap.model.head_init(len(requests), user_features(requests, cfg, dev)),
                snap.model.step_sizes(),
                vecs, bias, targets, mask,
                steps=cfg.inner_steps if steps is None else steps, objective=cfg.objective,
                prior=cfg.support_prior,
            )

    def _columns(self, snap: _Snapshot, batch: Encoded, reader: ContextReader | None,
                 heads: dict[str, Tensor], banned: np.ndarray | None = None,
                 allowed: np.ndarray | None = None) -> np.ndarray:
        """(B, M) the items to score per user: the retrieved candidates, or every item (-1: none), none of
        them ``banned`` (N,); a call restricted to ``allowed`` (N,) items scores them all when they fit the
        budget."""
        n, b = len(snap.item_ids), len(batch.sizes)
        budget = self.candidates
        everything = budget is None or not budget.total or n <= budget.total or reader is None
        if allowed is not None and (everything or int(allowed.sum()) <= budget.total):  # type: ignore[union-attr]
            rows = np.flatnonzero(allowed if banned is None else allowed & ~banned)
            rows = rows if len(rows) else np.full(1, -1, np.int64)  # nothing allowed: one padding column
            return np.ascontiguousarray(np.broadcast_to(rows, (b, len(rows))))
        if everything:
            return np.ascontiguousarray(np.broadcast_to(np.arange(n), (b, n)))
        assert budget is not None
        taste = snap.taste.top(heads["w"][:, : snap.vecs.shape[1]].float(), budget.taste) if snap.taste else \
            np.full((b, 0), -1, np.int64)
        return gather_candidates(reader, self._popular.refresh(reader.stats), taste,
                                 _new_items(snap, batch, budget.new), excluded_keys(n, batch.excluded), budget,
                                 banned)

    def _score(self, snap: _Snapshot, batch: Encoded, reader: ContextReader | None, heads: dict[str, Tensor],
               cols: np.ndarray, exclude: bool = True, banned: np.ndarray | None = None) -> Tensor:
        """(B, M) scores of items ``cols`` (-inf where padding or, with ``exclude``, excluded or ``banned``)."""
        context = self._context(snap, batch, reader, cols)  # (B, M, C) or None
        idx = torch.as_tensor(np.where(cols >= 0, cols, 0), device=self.device)  # (B, M)
        known = torch.as_tensor(cols >= 0, device=self.device)
        vecs = torch.where(known[..., None], snap.vecs[idx], snap.cold_vec)  # (B, M, H)
        bias = torch.where(known, snap.bias[idx], snap.cold_bias)  # (B, M)
        taste = heads["w"][:, : vecs.shape[-1]]
        scores = torch.einsum("bmh,bh->bm", vecs, taste) + heads["b"][:, None] + bias
        if context is not None:
            scores = scores + torch.einsum("bmc,bc->bm", context, heads["w"][:, vecs.shape[-1]:])
            scores = scores + snap.model.context_offset(context)
        if exclude:
            out = np.zeros(cols.shape, bool) if banned is None else banned[np.where(cols >= 0, cols, 0)]
            if any(len(e) for e in batch.excluded):
                n = len(snap.item_ids)
                keys = excluded_keys(n, batch.excluded)
                want = np.where(cols >= 0, np.arange(len(cols))[:, None] * n + cols, -1)
                slot = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
                out |= keys[slot] == want
            scores = scores.masked_fill(torch.as_tensor(out | (cols < 0), device=self.device), float("-inf"))
        return scores


def _new_items(snap: _Snapshot, batch: Encoded, k: int) -> np.ndarray:
    """(B, k) the newest added items nearest each user's support by their features (-1: none)."""
    b = len(batch.sizes)
    pool = snap.new_items
    if pool is None or not len(pool) or k <= 0 or not snap.model.cfg.n_item_features:
        return np.full((b, 0), -1, np.int64)
    feats = snap.model.item_features  # (N, F)
    items, mask = batch.items.to(feats.device), batch.mask.to(feats.device)
    profile = (feats[items] * mask[..., None]).sum(1)  # (B, F) the support's summed features
    scores = profile @ feats[pool].T  # (B, P)
    top = scores.topk(min(k, len(pool)), dim=1).indices  # (B, k)
    out = pool[top].cpu().numpy()
    return np.where(mask.any(1, keepdim=True).cpu().numpy(), out, -1)


def _snapshot(model: MetaRec, item_ids: tuple[str, ...], feature_names: tuple[str, ...],
              previous: _Snapshot | None = None) -> _Snapshot:
    with torch.no_grad():
        vecs, bias = model.item_vectors()
        cold_vec, cold_bias = model.cold_vectors(model.item_features.new_zeros(1, model.cfg.n_item_features))
    index = {item: n for n, item in enumerate(item_ids)}
    if previous is not None and previous.taste is not None:
        taste = previous.taste.grown(vecs, bias)
        first_new = len(previous.item_ids)
        old_pool = previous.new_items if previous.new_items is not None else torch.zeros(0, dtype=torch.long)
        added = torch.arange(first_new, len(item_ids), device=vecs.device)
        new_items = torch.cat([old_pool.to(vecs.device), added])[-NEW_ITEMS_POOL:]
    else:
        taste, new_items = ItemIndex(vecs, bias), None
    return _Snapshot(model, item_ids, index, vecs, bias, cold_vec[0], cold_bias[0], feature_names, taste,
                     new_items)
