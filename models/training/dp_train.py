"""Meta-training with user-level differential privacy (DP-SGD over users, as in McMahan et al., "Learning
Differentially Private Recurrent Language Models", ICLR 2018, with Adam applied to the privatised gradient).

Each step:

1. every user is sampled independently with probability ``q`` (Poisson sampling: what the accountant assumes);
2. each sampled user contributes ONE task (their own events, cut as in :func:`models.training.train.sample_tasks`),
and the
   meta-gradient of that task's outer loss is taken for that user alone;
3. the user's whole gradient (all meta-parameters) is clipped to L2 norm ``clip``; the clipped gradients are
   summed, Gaussian noise of std ``noise_multiplier * clip`` is added, and the sum is divided by the expected
   batch size ``q * n_users``;
4. Adam steps on that; the accountant (:class:`models.training.dp_accounting.RDPAccountant`) records the step.

What is and is not private: the users' events are (each user's influence on every update is bounded by the
clipping, and hidden by the noise). The item catalogue, item text and the rating scale are treated as public;
so the global offset starts at the middle of the rating scale instead of the data's mean rating, which
:mod:`models.training.train` uses. The number of users is public (it sets ``q``), as is usual for DP-SGD.

The non-private trainer is not changed: this module reuses its task construction and outer loss.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from models.core.adapt import adapt, score
from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.data.events import EventLog
from models.serving.recommender import Recommender
from models.training.dp_accounting import RDPAccountant, clip_per_user, noise_for_epsilon, noisy_sum
from models.training.train import TaskBatch, Track, default_config, sample_tasks, user_tracks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPConfig:
    """The privacy side of training. ``target_epsilon`` (if set) picks ``noise_multiplier`` for the run."""

    clip: float = 1.0  # L2 bound on one user's meta-gradient
    noise_multiplier: float = 1.0  # sigma: noise std in units of ``clip``
    expected_batch: int = 64  # q * n_users
    delta: float | None = None  # default: 1 / n_users^1.1 (below 1 / n, as DP needs)
    target_epsilon: float | None = None


@dataclass(frozen=True)
class DPReport:
    """What the run spent: (epsilon, delta) for the users of the training log, and how it got there."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    clip: float
    users: int
    mean_clipped_share: float  # share of sampled users whose gradient was clipped


@dataclass(frozen=True)
class StepGrads:
    """One step's per-user gradients: norms before clipping (B,) and the privatised sum per parameter."""

    norms: Tensor  # (B,)
    clipped: list[Tensor]  # per parameter (B, ...)
    noised: list[Tensor]  # per parameter (...)


def one_user(tasks: TaskBatch, b: int) -> TaskBatch:
    """Row ``b`` of a task batch as a batch of one (the seen pairs re-indexed to row 0)."""
    keep = tasks.seen[0] == b
    seen = torch.stack([torch.zeros_like(tasks.seen[0][keep]), tasks.seen[1][keep]])
    rows = slice(b, b + 1)
    return TaskBatch(
        tasks.users[rows],
        tasks.sup_items[rows],
        tasks.sup_targets[rows],
        tasks.sup_mask[rows],
        tasks.qry_items[rows],
        tasks.qry_targets[rows],
        tasks.qry_mask[rows],
        seen,
    )


class _TaskLoss(nn.Module):
    """One user's outer loss as a module call, so ``torch.func.functional_call`` can swap the parameters."""

    def __init__(self, model: MetaRec) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        drop: Tensor,
        neg: Tensor,
        sup_items: Tensor,
        sup_targets: Tensor,
        sup_mask: Tensor,
        qry_items: Tensor,
        qry_targets: Tensor,
        qry_mask: Tensor,
        seen: Tensor,
        feats: Tensor,
    ) -> Tensor:
        """Mirrors ``models.training.train.outer_loss`` for ONE user (a dense (N,) seen mask, not index pairs)."""
        m, cfg = self.model, self.model.cfg
        vecs, bias = m.item_vectors(drop)  # (N, H), (N,)
        head0 = m.head_init(1, feats[None] if cfg.n_user_features else None)
        out = adapt(
            head0,
            m.step_sizes(),
            vecs[sup_items][None],
            bias[sup_items][None],
            sup_targets[None],
            sup_mask[None],
            vecs[neg][None],
            bias[neg][None],
            steps=cfg.inner_steps,
            objective=cfg.objective,
            first_order=cfg.first_order,
            prior=cfg.support_prior,
        )
        qmask = qry_mask.to(vecs.dtype)  # (Q,)
        if cfg.objective == "rating":
            pred = vecs[qry_items] @ out.heads["w"][0] + out.heads["b"][0] + bias[qry_items]  # (Q,)
            return ((pred - qry_targets) ** 2 * qmask).sum() / qmask.sum().clamp(min=1.0)
        logits = score(out.heads, vecs, bias)[0]  # (N,)
        logits = torch.where(seen, torch.full_like(logits, float("-inf")), logits)
        nll = -torch.log_softmax(logits, dim=0)[qry_items]  # (Q,)
        nll = torch.where(qry_mask, nll, 0.0)  # padding may point at a seen (-inf) item
        return nll.sum() / qmask.sum().clamp(min=1.0)


def per_user_grads(
    model: MetaRec, tasks: TaskBatch, gen: torch.Generator, user_features: Tensor | None = None
) -> list[Tensor]:
    """Each user's meta-gradient, one task per user, vmapped over users: per parameter (B, *param.shape).

    The id-dropout mask is shared by the batch and the negatives are drawn per user, both independent of the
    data, so a user's gradient depends on that user's task alone.
    """
    cfg = model.cfg
    batch, n_items = tasks.users.shape[0], cfg.n_items
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {f"model.{n}": p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {f"model.{n}": b for n, b in model.named_buffers()}
    wrapper = _TaskLoss(model)
    drop = torch.rand(n_items, generator=gen) < cfg.id_dropout  # (N,)
    neg = torch.randint(n_items, (batch, max(cfg.n_negatives, 1)), generator=gen)  # (B, K)
    seen = torch.zeros(batch, n_items, dtype=torch.bool)
    seen[tasks.seen[0], tasks.seen[1]] = True  # (B, N)
    feats = (
        user_features[tasks.users]
        if user_features is not None
        else torch.zeros(batch, max(cfg.n_user_features, 1))
    )  # (B, G)

    def loss(p: dict[str, Tensor], *row: Tensor) -> Tensor:
        return functional_call(wrapper, {**p, **fixed}, (drop, *row))

    per_user = vmap(grad(loss), in_dims=(None, 0, 0, 0, 0, 0, 0, 0, 0, 0))(
        params,
        neg,
        tasks.sup_items,
        tasks.sup_targets,
        tasks.sup_mask,
        tasks.qry_items,
        tasks.qry_targets,
        tasks.qry_mask,
        seen,
        feats,
    )
    return [per_user[f"model.{n}"] for n in names]


def private_step_grads(
    model: MetaRec,
    tasks: TaskBatch,
    gen: torch.Generator,
    clip: float,
    noise_multiplier: float,
    user_features: Tensor | None = None,
) -> StepGrads:
    """Per-user gradients, clipped to ``clip`` each, summed, noised: the only way data reaches an update."""
    grads = per_user_grads(model, tasks, gen, user_features)
    clipped, norms = clip_per_user(grads, clip)
    return StepGrads(norms, clipped, noisy_sum(clipped, clip, noise_multiplier, gen))


def poisson_sample(n: int, q: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the users sampled this step, each independently with probability ``q``."""
    return np.flatnonzero(rng.random(n) < q)


def resolve_noise(dp: DPConfig, n_users: int, steps: int) -> tuple[float, float, float]:
    """(sample rate, delta, noise multiplier) for a run of ``steps`` steps over ``n_users`` users."""
    q = min(1.0, dp.expected_batch / n_users)
    delta = dp.delta if dp.delta is not None else 1.0 / n_users**1.1
    sigma = dp.noise_multiplier
    if dp.target_epsilon is not None:
        sigma = noise_for_epsilon(dp.target_epsilon, delta, q, steps)
    return q, delta, sigma


def dp_meta_train(
    log_: EventLog,
    cfg: ModelConfig | None = None,
    *,
    steps: int,
    dp: DPConfig | None = None,
    seed: int = 0,
) -> tuple[Recommender, DPReport]:
    """Meta-train on ``log_`` with user-level DP; returns the model and the privacy it spent."""
    dp = dp or DPConfig()
    cfg = cfg or default_config(log_, seed, "rating" if log_.explicit else "implicit", context=False)
    if cfg.n_context:
        raise ValueError("differentially private training takes no context features (n_context=0): item "
                         "statistics count everyone's events without noise")
    model = _fresh_model(log_, cfg, seed)
    tracks: list[Track] = user_tracks(log_, cfg.objective)
    if not tracks:
        raise ValueError(f"{log_.name}: no user has an event usable as a {cfg.objective} target")
    q, delta, sigma = resolve_noise(dp, len(tracks), steps)
    user_feats = None
    if cfg.n_user_features and log_.user_features is not None:
        user_feats = torch.as_tensor(np.asarray(log_.user_features, np.float32))
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, accountant = torch.optim.Adam(params, lr=cfg.outer_lr), RDPAccountant()
    clipped_share: list[float] = []
    began = time.monotonic()
    for _step in range(steps):
        picked = poisson_sample(len(tracks), q, rng)
        accountant.step(q, sigma)
        if len(picked):
            tasks = sample_tasks([tracks[i] for i in picked], len(picked), cfg, rng)
            out = private_step_grads(model, tasks, gen, dp.clip, sigma, user_feats)
            noised = out.noised
            clipped_share.append(float((out.norms > dp.clip).float().mean()))
        else:  # nobody sampled: the update is pure noise, as the mechanism requires
            noised = noisy_sum([torch.zeros(1, *p.shape) for p in params], dp.clip, sigma, gen)
        opt.zero_grad(set_to_none=True)
        for p, g in zip(params, noised):
            p.grad = g / (q * len(tracks))
        opt.step()
    report = DPReport(
        accountant.epsilon(delta),
        delta,
        sigma,
        q,
        steps,
        dp.clip,
        len(tracks),
        float(np.mean(clipped_share)) if clipped_share else 0.0,
    )
    log.info(
        "DP meta-training: %d steps in %.1fs, sigma %.3f, q %.4f -> epsilon %.3f at delta %.2e",
        steps,
        time.monotonic() - began,
        sigma,
        q,
        report.epsilon,
        delta,
    )
    return Recommender(model.eval(), log_.item_ids, item_feature_names=log_.item_feature_names), report


def _fresh_model(log_: EventLog, cfg: ModelConfig, seed: int) -> MetaRec:
    """A new model for ``log_``'s catalogue; public information only (item features, the rating scale)."""
    if cfg.n_items != log_.n_items:
        raise ValueError(f"cfg.n_items={cfg.n_items} but the log has {log_.n_items} items")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MetaRec(cfg)
    if cfg.n_item_features:
        if log_.item_features is None or log_.item_features.shape[1] != cfg.n_item_features:
            raise ValueError("the config wants item features the log does not have")
        model.item_features.copy_(torch.as_tensor(np.asarray(log_.item_features, np.float32)))
    if cfg.objective == "rating":
        model.mu.data.fill_(0.5 * (cfg.rating_min + cfg.rating_max))
    return model.train()
