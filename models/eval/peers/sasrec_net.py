"""SASRec's network (Kang & McAuley, "Self-attentive sequential recommendation", ICDM 2018) and its training.

Causal self-attention over a user's last ``max_len`` items (left-padded with index 0; item n is index n + 1),
learned position embeddings, pre-LayerNorm blocks with residuals as in the paper's code, and the item
embeddings shared between input and output. Training predicts every next item of every window. The loss is
the full softmax cross-entropy over the catalogue (stronger than the paper's one-negative BCE: Klenitskiy &
Vasilev, RecSys 2023) up to ``FULL_SOFTMAX_MAX`` items; above it, a softmax over the target and ``negatives``
uniform items shared by the batch, which keeps an epoch on Last.fm's 17.6k artists affordable on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

FULL_SOFTMAX_MAX = 4096


@dataclass(frozen=True)
class SASRecConfig:
    n_items: int
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 50
    dropout: float = 0.2
    negatives: int = 1024  # sampled softmax above FULL_SOFTMAX_MAX items


class Block(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.dim)
        self.attn = nn.MultiheadAttention(cfg.dim, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.ln_ff = nn.LayerNorm(cfg.dim)
        self.ff = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.ReLU(), nn.Dropout(cfg.dropout),
                                nn.Linear(cfg.dim, cfg.dim), nn.Dropout(cfg.dropout))

    def forward(self, x: Tensor, causal: Tensor, keep: Tensor) -> Tensor:
        q = self.ln_attn(x)  # (B, L, D)
        h, _ = self.attn(q, x, x, attn_mask=causal, need_weights=False)  # (B, L, D)
        x = q + h
        x = x + self.ff(self.ln_ff(x))
        return x * keep  # padded positions stay zero


class SASRecNet(nn.Module):
    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)  # (N + 1, D) 0 = padding
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)  # (L, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.blocks))
        self.ln = nn.LayerNorm(cfg.dim)
        causal = torch.triu(torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool), 1)  # True: masked
        self.register_buffer("causal", causal, persistent=False)
        # N(0, 1/D) items: scaled by sqrt(D) at the input, unit-sized logits at the output (N(0, 1) would
        # start the softmax with logits of std sqrt(D) and stall it)
        nn.init.normal_(self.items.weight, std=cfg.dim ** -0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, seqs: Tensor) -> Tensor:
        """(B, L) item indices + 1, left-padded with 0 -> (B, L, D) hidden states."""
        keep = (seqs > 0).unsqueeze(-1).float()  # (B, L, 1)
        pos = torch.arange(seqs.shape[1], device=seqs.device)
        x = self.items(seqs) * math.sqrt(self.cfg.dim) + self.positions(pos)  # (B, L, D)
        x = self.drop(x) * keep
        for block in self.blocks:
            x = block(x, self.causal[: seqs.shape[1], : seqs.shape[1]], keep)
        return self.ln(x)  # (B, L, D)

    def last_scores(self, seqs: Tensor) -> Tensor:
        """(B, N) scores of every item as the next one after each sequence."""
        h = self.forward(seqs)[:, -1]  # (B, D)
        return h @ self.items.weight[1:].T  # (B, N)


def windows(sequences: list[list[int]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every next-item pair of every sequence once: (W, L) inputs and (W, L) targets, left-padded with 0.

    A sequence is cut from its end into windows of ``max_len + 1`` items overlapping by one, so each
    transition is a target exactly once; a target after padding (a sequence's first item) is no transition
    and is left out (0). Item n is stored as n + 1.
    """
    inputs, targets = [], []
    for seq in sequences:
        end = len(seq)
        while end >= 2:
            window = seq[max(0, end - max_len - 1): end]
            pad = [0] * (max_len + 1 - len(window))
            shifted = pad + [i + 1 for i in window]
            inputs.append(shifted[:-1])
            targets.append([t if i else 0 for i, t in zip(shifted[:-1], shifted[1:])])
            end -= max_len
    if not inputs:
        return np.zeros((0, max_len), np.int64), np.zeros((0, max_len), np.int64)
    return np.asarray(inputs, np.int64), np.asarray(targets, np.int64)


def batch_loss(net: SASRecNet, seqs: Tensor, targets: Tensor, gen: torch.Generator) -> Tensor:
    """Mean softmax cross-entropy of the targets (full, or sampled above ``FULL_SOFTMAX_MAX`` items)."""
    h = net(seqs)  # (B, L, D)
    mask = targets > 0  # (B, L)
    h, targets = h[mask], targets[mask] - 1  # (T, D), (T,)
    table = net.items.weight[1:]  # (N, D)
    n = table.shape[0]
    if n <= FULL_SOFTMAX_MAX:
        return F.cross_entropy(h @ table.T, targets)  # (T, N) logits
    negatives = torch.randint(0, n, (net.cfg.negatives,), generator=gen)  # (K,) shared by the batch
    positive = (h * table[targets]).sum(-1, keepdim=True)  # (T, 1)
    logits = torch.cat([positive, h @ table[negatives].T], dim=1)  # (T, 1 + K)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))


def train_epochs(net: SASRecNet, sequences: list[list[int]], epochs: int, seed: int, lr: float = 1e-3,
                 batch: int = 128) -> float:
    """``epochs`` passes over every window, Adam; returns the last epoch's mean loss. Seeded throughout."""
    inputs, targets = windows(sequences, net.cfg.max_len)
    if not len(inputs) or epochs <= 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.98))
    x_all, y_all = torch.from_numpy(inputs), torch.from_numpy(targets)
    net.train()
    last = float("nan")
    with torch.random.fork_rng():  # dropout draws from the global generator: seed it, then restore it
        torch.manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=gen)
            total, batches = 0.0, 0
            for start in range(0, len(order), batch):
                idx = order[start: start + batch]
                loss = batch_loss(net, x_all[idx], y_all[idx], gen)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, batches = total + float(loss.detach()), batches + 1
            last = total / batches
    net.eval()
    return last
