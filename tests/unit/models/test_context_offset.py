"""The context MLP over a large catalogue, evaluated in pieces while serving, gives the plain values."""

from __future__ import annotations

from dataclasses import replace

import torch

from models.core import metalearner
from models.core.metalearner import BLOCKED_OFFSET_MIN_ITEMS, MetaRec


def test_blocked_offset_is_the_plain_offset(world, monkeypatch):
    cfg = replace(world.model.config, n_items=BLOCKED_OFFSET_MIN_ITEMS)
    torch.manual_seed(0)
    model = MetaRec(cfg).eval()
    context = torch.rand(3, BLOCKED_OFFSET_MIN_ITEMS, cfg.n_context) * 4  # (B, N, C)
    monkeypatch.setattr(metalearner, "OFFSET_BLOCK_ROWS", 1000)  # pieces that do not divide B x N
    with torch.inference_mode():
        plain = model.context_mlp(context).squeeze(-1)
        blocked = model.context_offset(context)
    assert blocked.shape == plain.shape == (3, BLOCKED_OFFSET_MIN_ITEMS)
    torch.testing.assert_close(blocked, plain, rtol=1e-6, atol=1e-7)
    calls = []
    monkeypatch.setattr(metalearner, "_blocked", lambda mlp, rows: calls.append(rows.shape) or mlp(rows))
    with torch.inference_mode():
        model.context_offset(context[:, :100])  # a small catalogue: the plain path
    model.context_offset(context).sum()  # with autograd (training): the plain path
    assert calls == []

