"""Meta-training: learn the item tower, the head's init and its step sizes so that a few steps on a user's
past events predict their next ones.

A task is one user cut at a random point t of their time-ordered history: the support set is what they did
before t (at most ``max_support`` events, and t = 0 is allowed, so the init itself learns to serve brand-new
users), the query is what they did next. The outer loss is taken on the query after adapting on the support,
and Adam updates the meta-parameters through the inner loop (second order unless ``first_order``).
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.core.adapt import adapt, score_in_context, with_context
from models.core.config import HUBER_DELTA, ModelConfig
from models.core.metalearner import MetaRec
from models.core.targets import event_target
from models.data.events import EVENT_TYPES, EventLog
from models.features.context import N_CONTEXT
from models.features.rating_context import N_RATING_CONTEXT
from models.serving.recommender import Recommender
from models.training.implicit_loss import add_candidates, context_width, sampled_outer_loss
from models.training.task_context import attach_context, bank_batches
from models.training.task_rating_context import attach_rating_context

log = logging.getLogger(__name__)

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


def default_config(log_: EventLog, seed: int = 0, objective: str = "implicit",
                   context: bool = True) -> ModelConfig:
    """A config sized for ``log_``: its catalogue and side features.

    Ranking is what is served, so the default objective is "will interact" (implicit) on explicit data too: a
    rating head ranks well-rated niche items no one picks next. ``objective="rating"`` gives a rating model
    (for rating predictions), whose context features are the stream's item means (``models.training.task_rating_context``);
    ``context=False`` gives none (item statistics are counts of everyone's events: differentially private
    training must not read them, and the cold-start split is no stream).
    """
    lo, hi = 1.0, 5.0
    if objective == "rating":
        vals = log_.values[np.isfinite(log_.values)]
        lo, hi = (float(vals.min()), float(vals.max())) if len(vals) and vals.min() < vals.max() else (lo, hi)
    return ModelConfig(
        n_items=log_.n_items,
        n_item_features=0 if log_.item_features is None else log_.item_features.shape[1],
        n_user_features=0 if log_.user_features is None else log_.user_features.shape[1],
        n_context=(N_RATING_CONTEXT if objective == "rating" else N_CONTEXT) if context else 0,
        # with context, ids matter less than what the stream says: most items train features-only, and a
        # short history moves the head less (both measured on ML-100K's warm-up, bench/results/stream-*)
        id_dropout=0.95 if context and objective == "implicit" else ModelConfig.id_dropout,
        support_prior=16.0 if context and objective == "implicit" else ModelConfig.support_prior,
        # adapt_taste stays True here: on planted tastes it is what adaptation is for; the stream evaluation
        # chooses it on the warm-up (models.eval.metarec_methods.choose_taste)
        objective=objective,
        # MAE is what rating predictions are judged by: train the query for the median. A rating model with
        # context overfits its item tower to the training ratings unless it is decayed. Stream MAE of the
        # rating model on ML-100K, replayed alone: MSE without context 0.799, L1 0.802; item-mean context
        # 0.776 (MSE), 0.774 (L1); with the user's residuals 0.762; then weight decay 1e-2 0.735 (3e-2 and 0.1
        # the same; no gain from id_dropout 0.5, cold_share 0.1, 10 inner steps or twice the outer steps)
        rating_loss="l1" if objective == "rating" else ModelConfig.rating_loss,
        weight_decay=1e-2 if context and objective == "rating" else ModelConfig.weight_decay,
        rating_min=lo,
        rating_max=hi,
        seed=seed,
    )


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


def outer_loss(
    model: MetaRec, tasks: TaskBatch, gen: torch.Generator, user_features: Tensor | None = None
) -> Tensor:
    """Query loss after adapting on the support: full-catalogue cross-entropy (implicit) or ``rating_error``.

    A model with context features scores with ``tasks.context`` (zeros when the batch has none); a batch with
    ``candidates`` scores only them (``models.training.implicit_loss``)."""
    if tasks.candidates is not None:
        feats = None if user_features is None else user_features[tasks.users]
        return sampled_outer_loss(model, tasks, gen, feats)
    cfg = model.cfg
    batch = tasks.sup_items.shape[0]
    drop = torch.rand(cfg.n_items, generator=gen) < cfg.id_dropout  # (N,)
    vecs, bias = model.item_vectors(drop)  # (N, H), (N,)
    neg = torch.randint(cfg.n_items, (batch, cfg.n_negatives), generator=gen)  # (B, K)
    feats = None if user_features is None else user_features[tasks.users]  # (B, G)
    ctx = None
    if cfg.n_context:
        ctx = tasks.context.float() if tasks.context is not None else vecs.new_zeros(batch, cfg.n_items,
                                                                                      cfg.n_context)
    rows = torch.arange(batch)[:, None]
    user_bias = bias.expand(batch, -1)  # (B, N) the head-independent offsets, per user with context
    if ctx is not None:
        user_bias = user_bias + model.context_offset(ctx)
    out = adapt(
        model.head_init(batch, feats), model.step_sizes(),
        with_context(vecs[tasks.sup_items], None if ctx is None else ctx[rows, tasks.sup_items]),
        user_bias.gather(1, tasks.sup_items), tasks.sup_targets, tasks.sup_mask,
        with_context(vecs[neg], None if ctx is None else ctx[rows, neg]), user_bias.gather(1, neg),
        steps=cfg.inner_steps, objective=cfg.objective, first_order=cfg.first_order, prior=cfg.support_prior,
    )
    qmask = tasks.qry_mask.float()  # (B, Q)
    if cfg.objective == "rating":
        qvecs = with_context(vecs[tasks.qry_items], None if ctx is None else ctx[rows, tasks.qry_items])
        pred = torch.einsum("bh,bqh->bq", out.heads["w"], qvecs)  # (B, Q)
        pred = pred + out.heads["b"][:, None] + user_bias.gather(1, tasks.qry_items)
        err = rating_error(pred, tasks.qry_targets, cfg.rating_loss)  # (B, Q)
        return (err * qmask).sum() / qmask.sum().clamp(min=1.0)
    logits = score_in_context(out.heads, vecs, bias, ctx)  # (B, N)
    if ctx is not None:
        logits = logits + user_bias - bias
    logits = logits.index_put((tasks.seen[0], tasks.seen[1]), torch.tensor(float("-inf")))
    nll = -F.log_softmax(logits, dim=1).gather(1, tasks.qry_items)  # (B, Q)
    nll = torch.where(tasks.qry_mask, nll, 0.0)  # padding may point at a seen (-inf) item: inf * 0 is NaN
    return nll.sum() / qmask.sum().clamp(min=1.0)


def rating_error(pred: Tensor, target: Tensor, loss: str) -> Tensor:
    """Elementwise query loss of the rating objective (``ModelConfig.rating_loss``): (B, Q) -> (B, Q)."""
    if loss == "l1":
        return (pred - target).abs()
    if loss == "huber":
        return F.huber_loss(pred, target, reduction="none", delta=HUBER_DELTA)
    return (pred - target) ** 2


def meta_train(
    log_: EventLog,
    cfg: ModelConfig | None = None,
    *,
    steps: int,
    batch_users: int = 64,
    seed: int = 0,
    time_budget_s: float | None = None,
    progress: bool = False,
    init: Recommender | None = None,
    threads: int | None = 1,
) -> Recommender:
    """Meta-train on ``log_`` for ``steps`` outer steps (or until ``time_budget_s``) and return a Recommender.

    ``init`` continues from an existing model (its config wins; new items of ``log_`` are added to its
    catalogue). ``threads`` sets torch's intra-op threads while training (None: leave them): the tensors are
    small, and on a shared CPU two threads that spin-wait for each other made a step ten to twenty times
    slower than one thread, so one is the default. The previous setting is restored afterwards. The time budget
    counts from this call, set-up included.
    """
    started = time.monotonic()
    model, item_map, item_ids, feature_names = _start_model(log_, cfg, seed, init)
    log_ = log_.sorted_by_time()  # a copy, in time order: task cuts are log positions
    log_.items = item_map[log_.items]
    tracks = user_tracks(log_, model.cfg.objective)
    if not tracks:
        raise ValueError(f"{log_.name}: no user has an event usable as a {model.cfg.objective} target")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        deadline = None if time_budget_s is None else started + time_budget_s
        bank, stats = None, None
        if model.cfg.n_context:
            rng = np.random.default_rng([seed, 1])
            n = bank_batches(context_width(model.cfg), batch_users, steps)
            drawn = [sample_tasks(tracks, batch_users, model.cfg, rng) for _ in range(n)]
            drawn = add_candidates(drawn, model.cfg, seed)  # a large catalogue: score a sample of it
            attach = attach_rating_context if model.cfg.objective == "rating" else attach_context
            bank, stats = attach(log_, drawn, model.cfg.n_items)
            log.info("context for %d task batches in %.1fs", n, time.monotonic() - started)
        _run(model, tracks, _user_features(log_, model.cfg), steps=steps, batch_users=batch_users, seed=seed,
             deadline=deadline, progress=progress, bank=bank)
    finally:
        torch.set_num_threads(previous)
    return Recommender(model.eval(), item_ids, item_feature_names=feature_names, stats=stats)


def _run(
    model: MetaRec, tracks: list[Track], user_feats: Tensor | None, *, steps: int, batch_users: int, seed: int,
    deadline: float | None, progress: bool, bank: list[TaskBatch] | None = None,
) -> None:
    """The outer loop: sample tasks (or take them from ``bank``, in a shuffled cycle), adapt, score the query,
    step Adam; stops at ``steps`` or the budget."""
    cfg = model.cfg
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    opt = _optimizer(model)
    started, done, recent = time.monotonic(), 0, []
    with _progress(progress, steps) as bar:
        for done in range(1, steps + 1):
            if bank:
                if (done - 1) % len(bank) == 0:
                    order = rng.permutation(len(bank))
                tasks = bank[order[(done - 1) % len(bank)]]
            else:
                tasks = sample_tasks(tracks, batch_users, cfg, rng)
            loss = outer_loss(model, tasks, gen, user_feats)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            recent.append(loss.item())
            if bar is not None:
                bar.update(done, loss=float(np.mean(recent[-20:])))
            if deadline is not None and time.monotonic() > deadline:
                break
    with torch.no_grad():
        lrs = model.step_sizes()
    log.info("meta-trained %d steps in %.1fs: loss %.4f, step sizes w~%.3f b=%.3f", done,
             time.monotonic() - started, float(np.mean(recent[-20:])), float(lrs["w"].mean()),
             float(lrs["b"]))


def _start_model(
    log_: EventLog, cfg: ModelConfig | None, seed: int, init: Recommender | None
) -> tuple[MetaRec, np.ndarray, list[str], list[str]]:
    """A trainable model for ``log_``, the map from log item index to model item index, item ids, feature
    names.

    From ``init``: a copy (the served model is not touched), grown by the log's items it does not know yet.
    """
    if init is not None:
        return _continue_from(log_, cfg, init)
    cfg = cfg or default_config(log_, seed)
    if cfg.n_items != log_.n_items:
        raise ValueError(f"cfg.n_items={cfg.n_items} but the log has {log_.n_items} items")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MetaRec(cfg)
    feats = _features_for(log_, cfg.n_item_features)
    if feats is not None:
        model.item_features.copy_(torch.as_tensor(feats))
    if cfg.objective == "rating":
        vals = log_.values[(log_.types == EVENT_TYPES.index("rating")) & np.isfinite(log_.values)]
        model.mu.data.fill_(float(vals.mean()) if len(vals) else 0.5 * (cfg.rating_min + cfg.rating_max))
    item_map = np.arange(log_.n_items, dtype=np.int64)
    return model.train(), item_map, list(log_.item_ids), list(log_.item_feature_names)


def _continue_from(
    log_: EventLog, cfg: ModelConfig | None, init: Recommender
) -> tuple[MetaRec, np.ndarray, list[str], list[str]]:
    if cfg is not None and cfg != init.config:
        raise ValueError("give either cfg or init, not a different cfg for an existing model")
    known = {item: n for n, item in enumerate(init.item_ids)}
    new = [n for n, item in enumerate(log_.item_ids) if item not in known]
    model = MetaRec(init.config).to("cpu")
    model.load_state_dict({k: v.cpu() for k, v in init.model.state_dict().items()})
    if new:
        feats = _features_for(log_, init.config.n_item_features)
        rows = torch.zeros(len(new), 0) if feats is None else torch.as_tensor(feats[new])
        model = model.with_items(rows)
    item_ids = init.item_ids + [log_.item_ids[n] for n in new]
    index = {item: n for n, item in enumerate(item_ids)}
    item_map = np.array([index[i] for i in log_.item_ids], np.int64)
    return model.requires_grad_(True).train(), item_map, item_ids, init.item_feature_names


def _features_for(log_: EventLog, n_features: int) -> np.ndarray | None:
    if not n_features:
        return None
    if log_.item_features is None or log_.item_features.shape != (log_.n_items, n_features):
        raise ValueError(
            f"the model needs ({log_.n_items}, {n_features}) item features; the log has none that fit")
    return np.asarray(log_.item_features, np.float32)


def _user_features(log_: EventLog, cfg: ModelConfig) -> Tensor | None:
    if not cfg.n_user_features or log_.user_features is None:
        return None
    return torch.as_tensor(np.asarray(log_.user_features, np.float32))  # (U, G)


def _optimizer(model: MetaRec) -> torch.optim.Optimizer:
    """Adam; weight decay only on the item tower, and faster moves for the (log) step sizes."""
    cfg = model.cfg
    decayed = [model.item_emb, model.feat_proj, *model.tower.parameters()]
    step_sizes = [model.log_lr_w, model.log_lr_b]
    ids = {id(p) for p in decayed + step_sizes + model.frozen()}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.Adam([
        {"params": decayed, "weight_decay": cfg.weight_decay},
        {"params": rest},
        {"params": step_sizes, "lr": cfg.outer_lr * 3},
    ], lr=cfg.outer_lr)


def _progress(enabled: bool, steps: int):
    """A rich progress bar (only when asked for) whose ``update(step, loss=...)`` is all the loop needs."""
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    class _Bar:
        def __init__(self) -> None:
            self.progress = Progress(
                TextColumn("meta-training"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
            )
            self.task = self.progress.add_task("train", total=steps, loss=float("nan"))

        def __enter__(self) -> "_Bar":
            self.progress.start()
            return self

        def __exit__(self, *exc: object) -> None:
            self.progress.stop()

        def update(self, step: int, loss: float) -> None:
            self.progress.update(self.task, completed=step, loss=loss)

    return _Bar()
