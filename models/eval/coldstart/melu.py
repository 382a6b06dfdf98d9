"""MeLU (Lee et al., KDD 2019), re-implemented as published, as a cold-start baseline.

The network: one 32-d embedding per item field and per user field (see ``coldstart_fields``; on MovieLens-100K
the item fields are genres (multi-hot, mean of genre vectors) and release year (10 buckets), the user fields
are gender, age (10 buckets), occupation and zip prefix -- the paper's rate/director/actor fields do not exist
in 100K), concatenated and fed to a decision MLP 64-64-1 with ReLU. Meta-training is MAML: per task,
``local_steps`` SGD steps on the support MSE update only the decision layers (fc1, fc2, out -- "local
update"); the query MSE after adaptation updates everything, embeddings included ("global update"), with Adam
over batches of 32 tasks. Second-order terms are kept (cheap at this size). Tasks are batched as padded
supports with a per-task copy of the decision layers (batched matmuls); padding is masked out of every loss.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from models.data.events import EventLog
from models.eval.coldstart.fields import FieldTable, field_table
from models.eval.coldstart.methods import TaskData

log = logging.getLogger(__name__)

Params = dict[str, Tensor]
LOCAL_NAMES: tuple[str, ...] = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "out.weight", "out.bias")


@dataclass(frozen=True)
class MeLUConfig:
    """The paper's hyperparameters by default (MeLU-5)."""

    embed_dim: int = 32
    hidden: int = 64
    local_steps: int = 5
    local_lr: float = 5e-6
    global_lr: float = 5e-5
    batch_tasks: int = 32
    epochs: int = 30
    bins: int = 10
    seed: int = 0


class _FieldEmbedding(nn.Module):
    """One 32-d vector per field of one side, concatenated: codes (N, C) + multi-hots -> (..., F * E)."""

    def __init__(self, table: FieldTable, dim: int) -> None:
        super().__init__()
        self.register_buffer("codes", torch.as_tensor(table.codes))
        for k, m in enumerate(table.multi):
            self.register_buffer(f"multi{k}", torch.as_tensor(m))
        self.n_multi = len(table.multi)
        self.cats = nn.ModuleList(nn.Embedding(v, dim) for v in table.vocab)
        self.multis = nn.ModuleList(nn.Linear(m.shape[1], dim, bias=False) for m in table.multi)

    def forward(self, index: Tensor) -> Tensor:
        parts = [emb(self.codes[index, c]) for c, emb in enumerate(self.cats)]
        for k, lin in enumerate(self.multis):
            hot = getattr(self, f"multi{k}")[index]  # (..., V)
            parts.append(lin(hot) / hot.sum(-1, keepdim=True).clamp(min=1.0))
        return torch.cat(parts, dim=-1)


class MeLUNet(nn.Module):
    """Field embeddings (global only) and the decision MLP (locally adapted)."""

    def __init__(self, items: FieldTable, users: FieldTable, cfg: MeLUConfig) -> None:
        super().__init__()
        self.item_emb = _FieldEmbedding(items, cfg.embed_dim)
        self.user_emb = _FieldEmbedding(users, cfg.embed_dim)
        width = (items.n_fields + users.n_fields) * cfg.embed_dim
        self.fc1 = nn.Linear(width, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, 1)

    def embed(self, items: Tensor, users: Tensor) -> Tensor:
        """(...,) item and user indices -> (..., D) concatenated field vectors."""
        return torch.cat([self.item_emb(items), self.user_emb(users)], dim=-1)

    def local_params(self) -> Params:
        """The decision layers' parameters, the only ones the local update touches."""
        named = dict(self.named_parameters())
        return {k: named[k] for k in LOCAL_NAMES}


def decide(fc: Params, x: Tensor) -> Tensor:
    """The decision MLP as a pure function of per-task params: fc (B, ...), x (B, L, D) -> (B, L) ratings."""
    h = torch.relu(torch.baddbmm(fc["fc1.bias"][:, None], x, fc["fc1.weight"].transpose(1, 2)))  # (B, L, 64)
    h = torch.relu(torch.baddbmm(fc["fc2.bias"][:, None], h, fc["fc2.weight"].transpose(1, 2)))  # (B, L, 64)
    return torch.baddbmm(fc["out.bias"][:, None], h, fc["out.weight"].transpose(1, 2)).squeeze(-1)  # (B, L)


def task_mse(fc: Params, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
    """Masked MSE per task (B,); tasks share no parameters in ``fc``, so the sum's gradient is per task."""
    return ((decide(fc, x) - y) ** 2 * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def local_update(
    fc0: Params, x: Tensor, y: Tensor, m: Tensor, steps: int, lr: float, create_graph: bool
) -> Params:
    """MeLU's local update for a batch of tasks: shared fc0, x (B, S, D), y and m (B, S) -> per-task fc (B,
    ...).

    Batched by giving every task its own copy of the decision layers (an expand, so gradients flow back to
    fc0); ``create_graph`` keeps the second-order terms for meta-training.
    """
    batch = x.shape[0]
    fc = {k: v.expand(batch, *v.shape) for k, v in fc0.items()}
    with torch.enable_grad():
        if not create_graph:
            fc = {k: v.detach().requires_grad_(True) for k, v in fc.items()}
        for _ in range(steps):
            loss = task_mse(fc, x, y, m).sum()
            grads = torch.autograd.grad(loss, list(fc.values()), create_graph=create_graph)
            fc = {k: v - lr * g for (k, v), g in zip(fc.items(), grads)}
    return fc if create_graph else {k: v.detach() for k, v in fc.items()}


def _pad(rows: list[np.ndarray], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Ragged rows -> (B, L) padded tensor and (B, L) float mask."""
    width = max(len(r) for r in rows)
    out = torch.zeros(len(rows), width, dtype=dtype)
    mask = torch.zeros(len(rows), width)
    for b, r in enumerate(rows):
        out[b, : len(r)] = torch.as_tensor(r, dtype=dtype)
        mask[b, : len(r)] = 1.0
    return out, mask


class MeLU:
    """The MeLU baseline behind the cold-start method contract."""

    def __init__(self, cfg: MeLUConfig | None = None, name: str = "melu") -> None:
        self.cfg = cfg or MeLUConfig()
        self.name = name
        self.net: MeLUNet | None = None
        self.history: list[float] = []  # mean query loss per epoch

    def describe(self) -> dict[str, object]:
        return {
            "config": asdict(self.cfg),
            "final_train_query_mse": self.history[-1] if self.history else None,
        }

    def _batch(self, tasks: list[TaskData]) -> tuple[Tensor, ...]:
        assert self.net is not None
        users = torch.tensor([t.user for t in tasks])[:, None]  # (B, 1)
        s_items, s_mask = _pad([t.support_items for t in tasks], torch.long)  # (B, S)
        s_vals, _ = _pad([t.support_values for t in tasks], torch.float32)
        q_items, q_mask = _pad([t.query_items for t in tasks], torch.long)  # (B, Q)
        x_s = self.net.embed(s_items, users.expand_as(s_items))  # (B, S, D)
        x_q = self.net.embed(q_items, users.expand_as(q_items))  # (B, Q, D)
        return x_s, s_vals, s_mask, x_q, q_mask

    def _adapted_query(self, tasks: list[TaskData]) -> tuple[Tensor, Tensor]:
        """Predictions on each task's query after the local update: (B, Q), and the query mask."""
        assert self.net is not None
        x_s, y_s, m_s, x_q, m_q = self._batch(tasks)
        fc0 = self.net.local_params()
        fc = local_update(
            fc0, x_s, y_s, m_s, self.cfg.local_steps, self.cfg.local_lr, torch.is_grad_enabled()
        )
        return decide(fc, x_q), m_q

    def fit(self, train_log: EventLog, train_tasks: list[TaskData]) -> None:
        """Meta-train on the training tasks (global update on query MSE after the local update)."""
        torch.manual_seed(self.cfg.seed)
        items = field_table(
            train_log.item_features, train_log.item_feature_names, train_log.n_items, self.cfg.bins
        )
        users = field_table(
            train_log.user_features, train_log.user_feature_names, train_log.n_users, self.cfg.bins
        )
        self.net = MeLUNet(items, users, self.cfg)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.global_lr)
        rng = np.random.default_rng(self.cfg.seed)
        for epoch in range(self.cfg.epochs):
            order = rng.permutation(len(train_tasks))
            losses = []
            for start in range(0, len(order), self.cfg.batch_tasks):
                batch = [train_tasks[i] for i in order[start : start + self.cfg.batch_tasks]]
                pred, mask = self._adapted_query(batch)  # (B, Q)
                target, _ = _pad([t.query_values for t in batch], torch.float32)  # type: ignore[misc]
                loss = ((pred - target) ** 2 * mask).sum() / mask.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            self.history.append(float(np.mean(losses)) if losses else float("nan"))
            log.debug("melu epoch %d query mse %.4f", epoch, self.history[-1])

    def predict(self, tasks: list[TaskData]) -> list[np.ndarray]:
        """Query predictions after adapting the decision layers on each task's support."""
        out: list[np.ndarray] = []
        for start in range(0, len(tasks), 256):
            batch = tasks[start : start + 256]
            with torch.no_grad():
                pred, _ = self._adapted_query(batch)
            out.extend(pred[b, : len(t.query_items)].numpy().copy() for b, t in enumerate(batch))
        return out
