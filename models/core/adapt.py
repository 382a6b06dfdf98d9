"""Per-user adaptation (the Meta-SGD inner loop) and scoring, as pure functions of tensors.

Nothing here holds state: the meta-learned init and step sizes come in, adapted heads go out. Training,
offline evaluation and the stream worker all call these same functions, so what is measured is what is served.
Users are batched with ``torch.func.vmap`` over padded support sets; padding is masked out of every loss, so a
user's result does not depend on who shares the batch, and an empty support set leaves the init untouched (its
gradient is an exact zero).

A head is ``{"w": (H,), "b": ()}``; batched heads carry a leading user dimension. ``item_bias`` means
everything in a score that does not depend on the head (global mean plus item bias), so ``s = z . w + b +
item_bias``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad_and_value, vmap

Head = dict[str, Tensor]

NEGATIVE_FLOOR = 1e-3  # every item can be drawn as an inner-loop negative, however rarely it was taken


@dataclass(frozen=True)
class Adapted:
    """Adapted heads and each user's mean support loss per event, at the init and after adaptation.

    The reported losses ignore ``prior`` (it only shapes the steps), so they are comparable across users: the
    mean squared error of the support ratings, or the mean weighted ranking loss.
    """

    heads: Head  # {"w": (B, H), "b": (B,)}
    loss_before: Tensor  # (B,)
    loss_after: Tensor  # (B,)


def negative_weights(scaled_counts: Tensor, power: float) -> Tensor:
    """Draw weights of the inner loop's negatives, popularity ** ``power``, from items' counts scaled by
    N / total (the ``log_share_count`` context feature before its log), any shape.

    Why: with uniform negatives the support loss mostly tells a user's items from obscure ones, which every
    user's items are alike; the inner gradient then points the same way for everyone (``bench.adaptation_probe``:
    its common share) and a few steps re-learn the population the init already knows. Negatives drawn like the
    items people take make the support loss contrast the user with the population: what is personal.
    """
    return (scaled_counts.clamp(min=0) + NEGATIVE_FLOOR) ** power


def head_scores(head: Head, item_vecs: Tensor, item_bias: Tensor) -> Tensor:
    """Scores of one user's head on some items: (..., H), (...) -> (...).

    A multiply-and-sum rather than ``@``: under vmap a matrix-vector product becomes a batched matmul with one
    column, which is several times slower on CPU (and so is its double backward).
    """
    return (item_vecs * head["w"]).sum(-1) + head["b"] + item_bias


def support_loss(
    head: Head,
    item_vecs: Tensor,  # (S, H)
    item_bias: Tensor,  # (S,)
    targets: Tensor,  # (S,)
    mask: Tensor,  # (S,) float, 1 = real event, 0 = padding
    neg_vecs: Tensor,  # (K, H)
    neg_bias: Tensor,  # (K,)
    objective: str,
    prior: float = 0.0,
) -> Tensor:
    """One user's support loss: masked MSE (rating) or weighted sampled-softmax ranking loss (implicit).

    For ``implicit`` the targets are confidence weights: each support item should outrank the K negatives.
    Normalised by ``count + prior``: with ``prior`` = 0 a step moves the head as far for one event as for
    fifty; with ``prior`` > 0 the move grows like ``count / (count + prior)``, the shrinkage a Gaussian prior
    around the init would give, so a single event is trusted less than a long history.
    """
    pos = head_scores(head, item_vecs, item_bias)  # (S,)
    count = (mask.sum() + prior).clamp(min=1e-6)
    if objective == "rating":
        return ((pos - targets) ** 2 * mask).sum() / count
    neg = head_scores(head, neg_vecs, neg_bias)  # (K,)
    # -log softmax of pos among [pos, negatives] = log(exp(pos) + sum exp(neg)) - pos
    #                                            = softplus(logsumexp(neg) - pos)
    nll = F.softplus(torch.logsumexp(neg, dim=0) - pos)  # (S,)
    return (nll * targets * mask).sum() / count


def _adapt_one(
    head0: Head,
    lrs: Head,
    item_vecs: Tensor,
    item_bias: Tensor,
    targets: Tensor,
    mask: Tensor,
    neg_vecs: Tensor,
    neg_bias: Tensor,
    steps: int,
    objective: str,
    first_order: bool,
    prior: float,
) -> tuple[Head, Tensor, Tensor]:
    """``steps`` Meta-SGD steps for one user: theta <- theta - lr (elementwise) * grad."""
    data = (item_vecs, item_bias, targets, mask, neg_vecs, neg_bias, objective, prior)
    grad_fn: Callable[..., tuple[Head, Tensor]] = grad_and_value(support_loss)
    head = head0
    report = data[:-1] + (0.0,)  # the same loss without the prior: a plain mean per event
    before = support_loss(head0, *report)
    for _ in range(steps):
        grads, _loss = grad_fn(head, *data)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        head = {k: head[k] - lrs[k] * grads[k] for k in head}
    after = support_loss(head, *report) if steps else before
    return head, before, after


def adapt(
    head0: Head,
    lrs: Head,
    item_vecs: Tensor,
    item_bias: Tensor,
    targets: Tensor,
    mask: Tensor,
    neg_vecs: Tensor | None = None,
    neg_bias: Tensor | None = None,
    *,
    steps: int,
    objective: str,
    first_order: bool = False,
    prior: float = 0.0,
) -> Adapted:
    """Adapt every user's head on their padded support set, in one vmapped call.

    Shapes: ``head0`` {"w": (B, H), "b": (B,)} (the init, possibly user-specific); ``lrs`` {"w": (H,), "b":
    ()} (shared step sizes); ``item_vecs`` (B, S, H); ``item_bias``, ``targets``, ``mask`` (B, S);
    ``neg_vecs`` (B, K, H) and ``neg_bias`` (B, K), sampled by the caller so this stays deterministic (ignored
    for ``rating``).

    Differentiable with respect to every input when autograd is on: ``first_order=False`` keeps second-order
    terms for meta-training, ``first_order=True`` treats inner gradients as constants. Works under
    ``torch.no_grad()``: the inner gradients come from a function transform, not from the outer autograd.
    """
    batch, _support, dim = item_vecs.shape
    if neg_vecs is None or neg_bias is None or objective == "rating":
        neg_vecs = item_vecs.new_zeros(batch, 0, dim)
        neg_bias = item_vecs.new_zeros(batch, 0)
    mask = mask.to(item_vecs.dtype)

    def one(h0: Head, v: Tensor, ib: Tensor, t: Tensor, m: Tensor, nv: Tensor, nb: Tensor):
        return _adapt_one(h0, lrs, v, ib, t, m, nv, nb, steps, objective, first_order, prior)

    heads, before, after = vmap(one)(head0, item_vecs, item_bias, targets, mask, neg_vecs, neg_bias)
    return Adapted(heads=heads, loss_before=before, loss_after=after)


def score(heads: Head, item_vecs: Tensor, item_bias: Tensor) -> Tensor:
    """Every user's scores on a shared item set: heads {"w": (B, H), "b": (B,)}, (N, H), (N,) -> (B, N)."""
    return heads["w"] @ item_vecs.T + heads["b"][:, None] + item_bias[None, :]


def score_in_context(heads: Head, item_vecs: Tensor, item_bias: Tensor, context: Tensor | None) -> Tensor:
    """``score`` for heads whose ``w`` ends with context weights a: (B, H + C) heads, (N, H) item vectors,
    (N,) offsets and each user's context features (B, N, C) -> (B, N). ``context`` None: no context."""
    if context is None or context.shape[-1] == 0:
        return score(heads, item_vecs, item_bias)
    dim = item_vecs.shape[1]
    taste = {"w": heads["w"][:, :dim], "b": heads["b"]}
    return score(taste, item_vecs, item_bias) + torch.einsum("bnc,bc->bn", context, heads["w"][:, dim:])


def with_context(vecs: Tensor, context: Tensor | None) -> Tensor:
    """Item vectors as the inner loop sees them: [z_i, c(u, i)], (B, M, H) and (B, M, C) -> (B, M, H + C)."""
    if context is None or context.shape[-1] == 0:
        return vecs
    return torch.cat([vecs, context.to(vecs.dtype)], dim=-1)


def expand_head(head: Head, batch: int) -> Head:
    """The same head for ``batch`` users: {"w": (H,), "b": ()} -> {"w": (B, H), "b": (B,)}."""
    return {k: v.expand(batch, *v.shape) for k, v in head.items()}


def flatten_heads(heads: Head) -> Tensor:
    """Batched heads as rows ``[w, b]``: (B, H + 1), the layout stored in user state."""
    return torch.cat([heads["w"], heads["b"][:, None]], dim=1)
