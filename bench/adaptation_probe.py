"""Why does a user's support barely move the meta-init? Two probes of the served model, on validation events.

``bench.adaptation_gain --probe`` feeds a ``Probe`` every chunk of a validation replay (the requests exactly as
served). It measures:

- **The inner gradient's structure.** Each user's first inner-loop step direction at the init, on the adapted
  context weights, by history bucket: its size and the share of its energy that is common to all users
  (``|mean g|^2 / mean |g|^2``). A step that mostly points the same way for everyone carries little about the
  user; the init could have taken it for them.
- **What personalising could gain at all (a ceiling).** For each scored event among a user's first 10, the
  adapted parameters (the context weights a; with the taste vector w too when the model adapts it) are fitted by
  maximum a posteriori (a full-catalogue softmax, Gaussian prior around the init with weight ``reg``) to the
  user's *other* first-10 events of the window, earlier and later ones alike, and the held event is ranked
  with them. This oracle reads the user's future, which no method may; if it cannot beat the init, no
  adaptation from those events can. A population shift fitted on the other users (two folds by user) shows
  how much of any gain is drift between the training period and the window rather than the user.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from models.core.adapt import with_context
from models.serving import recommender as rr
from models.serving.encode import draw_weights, negatives, shown_negatives
from models.serving.kernel import adapt_forward

ORACLE_CANDIDATES = 4096  # catalogues up to this size are scored whole; larger ones on the init's top items
REGS = (0.01, 0.1, 1.0)  # prior weights of the oracle's fits
FIT_STEPS = 100
ORACLE_MAX_EVENTS = 600  # the oracle fits one model per held event: the first users' events up to this many


class Probe:
    """Collects gradients and first-10 contexts over one model's replay; ``summary`` turns them into figures."""

    def __init__(self) -> None:
        self.grads: list[np.ndarray] = []  # (C,) per scored event
        self.buckets: list[int] = []
        self.events: list[dict[str, Any]] = []  # first-10 events: contexts, offsets, target, excluded
        self.taste = False
        self.names: Sequence[str] = ()

    def observe(self, method, requests: Sequence[rr.AdaptRequest], n_before: Sequence[int],
                targets: Sequence[str]) -> None:
        rec = method.model
        snap, model = rec._snap, rec.model
        cfg = model.cfg
        self.taste = cfg.adapt_taste
        n_items = len(snap.item_ids)
        batch, reader = rec._encode(snap, requests)
        every = np.broadcast_to(np.arange(n_items), (len(requests), n_items))  # (B, N)
        with torch.inference_mode():
            ctx = rec._context(snap, batch, reader, every)  # (B, N, C) as served: own items left out, arrivals
            items, tgt, mask = batch.items, batch.targets, batch.mask  # (B, S)
            neg = negatives(requests, n_items, cfg.n_negatives, cfg.seed, draw_weights(rec.stats, cfg))
            neg = shown_negatives(snap.index, requests, neg)  # (B, K) as the server draws them
            both = torch.cat([items, neg], dim=1)  # (B, S + K)
            rows = torch.arange(len(requests))[:, None]
            vecs = with_context(snap.vecs[both], ctx[rows, both])
            bias = snap.bias[both] + model.context_offset(ctx[rows, both])
            head0 = model.head_init(len(requests))
            unit = {"w": torch.ones(head0["w"].shape[1]), "b": torch.tensor(1.0)}
            step = adapt_forward(head0, unit, vecs, bias, tgt, mask, steps=1, objective=cfg.objective,
                                 prior=cfg.support_prior)
            grad = (head0["w"] - step.heads["w"])[:, cfg.head_dim:]  # (B, C) the first step's direction
            offset = model.context_offset(ctx) + snap.bias[None, :]  # (B, N)
        for b, n in enumerate(n_before):
            self.grads.append(grad[b].numpy().copy())
            self.buckets.append(int(n))
            if n <= 9 and len(self.events) < ORACLE_MAX_EVENTS:
                self.events.append(self._event(snap, requests[b], ctx[b], offset[b], targets[b]))
        self.head_a = model.head_a.detach().clone()
        self.vecs = snap.vecs

    def _event(self, snap, request, ctx, offset, target: str) -> dict[str, Any]:
        """One first-10 event's context over the candidates (the catalogue, or the init's best items)."""
        excluded = [snap.index[i] for i in request.exclude if i in snap.index]
        if ctx.shape[0] <= ORACLE_CANDIDATES:
            cand = torch.arange(ctx.shape[0])
        else:
            init = offset + ctx @ snap.model.head_a
            init[excluded] = float("-inf")
            cand = init.topk(ORACLE_CANDIDATES).indices
        keep = torch.ones(ctx.shape[0], dtype=torch.bool)
        keep[excluded] = False
        position = {int(c): j for j, c in enumerate(cand.tolist())}
        vecs = snap.vecs if len(cand) == ctx.shape[0] else snap.vecs[cand]  # the whole catalogue: no copy
        return {"user": request.user_id, "vecs": vecs, "ctx": ctx[cand].to(torch.float16),
                "offset": offset[cand], "allowed": keep[cand], "target": position.get(snap.index[target], -1)}

    # --- figures ----------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {"inner_gradient": self._gradient_summary(), "personalisation_ceiling": self._oracle()}

    def _gradient_summary(self) -> dict[str, Any]:
        g, n = np.stack(self.grads), np.asarray(self.buckets)
        out = {}
        for name, lo, hi in (("1-4", 1, 4), ("5-9", 5, 9), ("10-49", 10, 49), ("50+", 50, 10**9)):
            sel = (n >= lo) & (n <= hi)
            if sel.sum() < 2:
                continue
            mean = g[sel].mean(0)
            out[name] = {"events": int(sel.sum()), "norm": round(float(np.linalg.norm(g[sel], axis=1).mean()), 4),
                         "common_share": round(float((mean ** 2).sum() / (g[sel] ** 2).sum(1).mean()), 3),
                         "mean_direction": np.round(mean, 4).tolist()}
        return out

    def _oracle(self) -> dict[str, Any]:
        ev = [e for e in self.events if e["target"] >= 0]
        if not ev:
            return {}
        users = np.array([e["user"] for e in ev])
        out: dict[str, Any] = {"events": len(ev), "users": len(np.unique(users))}
        hits = {reg: [] for reg in REGS}
        init = []
        for user in np.unique(users):
            group = _stack([ev[k] for k in np.flatnonzero(users == user)], self.taste)
            init += self._hits(group, torch.zeros(1, len(group["target"]), len(self.head_a)), None)[0].tolist()
            if len(group["target"]) < 2:  # nothing else to fit on: the init
                for reg in REGS:
                    hits[reg] += init[-1:]
                continue
            da, dw = self._fit_loo(group)
            for r, reg in enumerate(REGS):
                hits[reg] += self._hits(group, da[r : r + 1], None if dw is None else dw[r : r + 1])[0].tolist()
        out["init"] = round(float(np.mean(init)), 4)
        for reg in REGS:
            out[f"per_user_loo_reg_{reg:g}"] = round(float(np.mean(hits[reg])), 4)
        fold = np.array([zlib.crc32(str(u).encode()) % 2 for u in users])
        shifted = []
        for f in (0, 1):
            fit, score = _stack([e for e, g in zip(ev, fold) if g != f]), _stack([e for e, g in zip(ev, fold) if g == f])
            if not len(fit["target"]) or not len(score["target"]):
                continue
            da = self._fit_shared(fit)
            shifted += self._hits(score, da.expand(1, len(score["target"]), -1), None)[0].tolist()
        out["population_shift_two_folds"] = round(float(np.mean(shifted)), 4) if shifted else None
        return out

    def _logits(self, g: dict[str, Tensor], da: Tensor, dw: Tensor | None) -> Tensor:
        """Scores (R, J, E, M): for each prior weight r and fit j, every event e's candidates."""
        a = self.head_a + da  # (R, J, C)
        s = g["offset"] + torch.einsum("emc,rjc->rjem", g["ctx"], a)  # (R, J, E, M)
        if dw is not None:
            s = s + torch.einsum("emh,rjh->rjem", g["vecs"], dw)
        return s.masked_fill(~g["allowed"], float("-inf"))

    def _hits(self, g: dict[str, Tensor], da: Tensor, dw: Tensor | None) -> Tensor:
        """Hits (R, E): event e ranked by fit e (its own leave-one-out fit)."""
        n = len(g["target"])
        own = torch.arange(n)
        with torch.no_grad():
            if da.shape[1] == 1:
                da = da.expand(-1, n, -1)
                dw = None if dw is None else dw.expand(-1, n, -1)
            s = self._logits(g, da, dw)[:, own, own]  # (R, E, M)
            top = s.topk(10, dim=-1).indices
        return (top == g["target"][None, :, None]).any(-1).float()

    def _fit_loo(self, g: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """For every prior weight and held event j, MAP parameters on the group's other events."""
        n = len(g["target"])
        da = torch.zeros(len(REGS), n, len(self.head_a), requires_grad=True)
        dw = torch.zeros(len(REGS), n, self.vecs.shape[1], requires_grad=True) if self.taste else None
        params = [da] + ([dw] if dw is not None else [])
        weight = (1.0 - torch.eye(n))  # (J, E): fit j leaves event j out
        regs = torch.tensor(REGS)[:, None]
        return self._optimise(g, params, da, dw, weight, regs)

    def _fit_shared(self, g: dict[str, Tensor]) -> Tensor:
        """One shift of the context weights, fitted on every event of ``g`` (a population shift)."""
        da = torch.zeros(1, 1, len(self.head_a), requires_grad=True)
        self._optimise(g, [da], da, None, torch.ones(1, len(g["target"])), torch.tensor([[REGS[0]]]))
        return da.detach()

    def _optimise(self, g, params, da, dw, weight: Tensor, regs: Tensor) -> tuple[Tensor, Tensor | None]:
        opt = torch.optim.Adam(params, lr=0.05)
        target = g["target"]
        for _ in range(FIT_STEPS):
            logits = self._logits(g, da, dw)  # (R, J, E, M)
            nll = -logits.log_softmax(-1).gather(-1, target.expand(*logits.shape[:2], -1)[..., None])[..., 0]
            per_fit = (nll * weight).sum(-1) / weight.sum(-1).clamp(min=1.0)  # (R, J)
            penalty = sum((q ** 2).sum(-1) for q in params)  # (R, J)
            loss = (per_fit + regs * penalty).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return da.detach(), None if dw is None else dw.detach()


def _stack(events: list[dict[str, Any]], taste: bool = False) -> dict[str, Tensor]:
    """A group of events as tensors: ctx (E, M, C), offset and allowed (E, M), target (E,), vecs (E, M, H)."""
    if not events:
        return {"target": torch.zeros(0, dtype=torch.long)}
    return {"ctx": torch.stack([e["ctx"].float() for e in events]),
            "offset": torch.stack([e["offset"] for e in events]),
            "allowed": torch.stack([e["allowed"] for e in events]),
            "target": torch.tensor([e["target"] for e in events]),
            "vecs": torch.stack([e["vecs"] for e in events]) if taste else None}


def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-model probe summaries (one per window and seed) and the oracle's hit rates pooled over them."""
    pooled: dict[str, Any] = {}
    oracles = [s["personalisation_ceiling"] for s in summaries if s["personalisation_ceiling"]]
    total = sum(o["events"] for o in oracles)
    if total:
        for key in oracles[0]:
            if key not in ("events", "users"):
                pooled[key] = round(sum(o[key] * o["events"] for o in oracles) / total, 4)
        pooled["events"], pooled["users"] = total, sum(o["users"] for o in oracles)
    return {"per_model": summaries, "personalisation_ceiling_pooled": pooled}
