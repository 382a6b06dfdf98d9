"""Meta-training tasks: each user's events as a time-ordered track, and batches of tasks cut from them.

A task is one user cut at a random point t of their time-ordered history: the support set is what they did
before t (at most ``max_support`` events, and t = 0 is allowed, so the init itself learns to serve brand-new
users), the query is what they did next. Split from ``models.training.train`` (which re-exports these names)
to keep each file small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.core.config import ModelConfig
from models.core.targets import event_target
from models.data.events import EVENT_TYPES, EventLog

COLD_SHARE = ModelConfig.cold_share  # share of tasks cut within a user's first few events: new users matter
# most in a stream's ranking (a rating model's may differ: ModelConfig.cold_share)
COLD_CUTS = 4


@dataclass(frozen=True)
class Track:
    """One user's events in time order, as the trainer sees them."""

    user: int
    items: np.ndarray  # (n,) item index
    targets: np.ndarray  # (n,) float32 inner-loop target, NaN = not adapted on
    starts: np.ndarray  # positions that may be a query event (implicit: first time the user meets the item)
    at: np.ndarray | None = None  # (n,) each event's position in the log (time order when the log is sorted)


@dataclass(frozen=True)
class TaskBatch:
    """Padded support and query sets for B users."""

    users: Tensor  # (B,)
    sup_items: Tensor  # (B, S)
    sup_targets: Tensor  # (B, S)
    sup_mask: Tensor  # (B, S) bool
    qry_items: Tensor  # (B, Q)
    qry_targets: Tensor  # (B, Q)
    qry_mask: Tensor  # (B, Q) bool
    seen: Tensor  # (2, P) (row, item) pairs of items seen before the cut, masked out of the implicit softmax
    cut_at: Tensor | None = None  # (B,) log position of each task's first query event
    context: Tensor | None = None  # (B, N, C) context features as of before the cut (models.training.task_context)
    candidates: Tensor | None = None  # (M,) a sample of a large catalogue to score (models.training.implicit_loss)


def event_targets(log_: EventLog, objective: str) -> np.ndarray:
    """``event_target`` of every event (E,), NaN for None; called once per distinct (type, value)."""
    values = np.nan_to_num(log_.values.astype(np.float64), nan=-np.inf)  # (E,) -inf stands for "no value"
    pairs = np.stack([log_.types.astype(np.float64), values], 1)  # (E, 2)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    mapped = [event_target(EVENT_TYPES[int(k)], None if np.isinf(v) else float(v), objective)
              for k, v in uniq]
    table = np.array([np.nan if t is None else t for t in mapped], np.float32)
    return table[inverse.reshape(-1)]


def user_tracks(log_: EventLog, objective: str) -> list[Track]:
    """Every user with at least one possible query event, events mapped by ``event_target``."""
    all_targets = event_targets(log_, objective)
    tracks = []
    for user, pos in log_.user_sequences():
        items, targets = log_.items[pos], all_targets[pos]
        usable = np.isfinite(targets)
        if objective == "implicit":
            first = np.zeros(len(pos), bool)
            first[np.unique(items, return_index=True)[1]] = True
            usable &= first
        starts = np.flatnonzero(usable)
        if len(starts):
            tracks.append(Track(user, items, targets, starts, pos))
    return tracks


def sample_tasks(tracks: list[Track], batch: int, cfg: ModelConfig, rng: np.random.Generator) -> TaskBatch:
    """B random tasks: a user, a cut (often early: ``cfg.cold_share``), the support before it, the query
    after."""
    picks = rng.choice(len(tracks), size=min(batch, len(tracks)), replace=False)
    sup, qry, seen_rows, seen_items, users, cuts = [], [], [], [], [], []
    for row, t_idx in enumerate(picks):
        tr = tracks[t_idx]
        cold = rng.random() < cfg.cold_share
        j = rng.integers(min(COLD_CUTS, len(tr.starts)) if cold else len(tr.starts))
        cut = int(tr.starts[j])
        q = tr.starts[j : j + cfg.query_size]
        before = np.flatnonzero(np.isfinite(tr.targets[:cut]))[-cfg.max_support :]
        sup.append((tr.items[before], tr.targets[before]))
        qry.append((tr.items[q], tr.targets[q]))
        seen = np.unique(tr.items[:cut])
        seen_rows.append(np.full(len(seen), row))
        seen_items.append(seen)
        users.append(tr.user)
        cuts.append(-1 if tr.at is None else int(tr.at[cut]))
    s_items, s_targets, s_mask = _pad(sup)
    q_items, q_targets, q_mask = _pad(qry)
    seen = np.stack([np.concatenate(seen_rows), np.concatenate(seen_items)])  # (2, P)
    seen = torch.as_tensor(seen, dtype=torch.long)
    return TaskBatch(torch.as_tensor(users), s_items, s_targets, s_mask, q_items, q_targets, q_mask, seen,
                     torch.as_tensor(cuts))


def _pad(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Tensor, Tensor, Tensor]:
    width = max(1, max(len(i) for i, _ in rows))
    items = np.zeros((len(rows), width), np.int64)
    targets = np.zeros((len(rows), width), np.float32)
    mask = np.zeros((len(rows), width), bool)
    for b, (i, t) in enumerate(rows):
        items[b, : len(i)], targets[b, : len(i)], mask[b, : len(i)] = i, t, True
    return torch.from_numpy(items), torch.from_numpy(targets), torch.from_numpy(mask)
