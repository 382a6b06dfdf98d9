"""A forward-only Meta-SGD inner loop with the gradients written out: the candidate serving kernel.

Same heads and losses as ``models.adapt.adapt`` (checked by :func:`max_rel_error` in every adaptation bench run),
but without ``vmap``/``grad`` transforms: per step one batched product forward and one backward over each user's
support items and negatives stacked into one (B, S + K, H) tensor, and the implicit loss in O(S + K) per user via

    -log softmax(pos_s among [pos_s, neg_1..K]) = softplus(logsumexp(neg) - pos_s)

whose exact gradient is d/dpos_s = -c_s sigmoid(lse_neg - pos_s) and d/dneg_k = softmax(neg)_k sum_s c_s
sigmoid(lse_neg - pos_s), with c_s = target_s mask_s / (count + prior). Serving and evaluation need no gradient
with respect to the meta-parameters, so this is all they need; training keeps ``adapt`` and autograd. Lives here
until it moves next to the Recommender (models/serving.py), which its owner is still changing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.adapt import Adapted, Head


def inner_loop(
    head0: Head,
    lrs: Head,
    vecs: Tensor,  # (B, S + K, H): support items, then negatives (K = 0 for the rating objective)
    bias: Tensor,  # (B, S + K)
    targets: Tensor,  # (B, S)
    mask: Tensor,  # (B, S)
    *,
    steps: int,
    objective: str,
    prior: float = 0.0,
) -> Adapted:
    support = targets.shape[1]
    mask = mask.to(vecs.dtype)
    count = (mask.sum(1) + prior).clamp(min=1e-6)  # (B,)
    weight = (targets if objective != "rating" else 2.0 * torch.ones_like(targets)) * mask / count[:, None]
    w, b = head0["w"], head0["b"]  # (B, H), (B,)
    before = loss = torch.zeros_like(b)
    for step in range(steps + 1):
        scores = torch.bmm(w[:, None, :], vecs.mT).squeeze(1) + b[:, None] + bias  # (B, S + K)
        loss, grad = _loss_and_grad(scores[:, :support], scores[:, support:], targets, mask, count, weight,
                                    objective)
        if step == 0:
            before = loss
        if step == steps:
            break
        w = w - lrs["w"] * torch.bmm(grad[:, None, :], vecs).squeeze(1)  # (B, H)
        b = b - lrs["b"] * grad.sum(1)  # (B,)
    return Adapted(heads={"w": w, "b": b}, loss_before=before, loss_after=loss)


def _loss_and_grad(pos: Tensor, neg: Tensor, targets: Tensor, mask: Tensor, count: Tensor, weight: Tensor,
                   objective: str) -> tuple[Tensor, Tensor]:
    """Each user's support loss (B,) and its gradient with respect to every score (B, S + K)."""
    if objective == "rating":
        err = pos - targets  # (B, S)
        return (err * err * mask).sum(1) / count, torch.cat([weight * err, neg], dim=1)  # neg: (B, 0)
    margin = torch.logsumexp(neg, dim=1, keepdim=True) - pos  # (B, S)
    loss = (weight * F.softplus(margin)).sum(1)  # (B,)
    pull = weight * torch.sigmoid(margin)  # (B, S)
    d_neg = torch.softmax(neg, dim=1) * pull.sum(1, keepdim=True)  # (B, K)
    return loss, torch.cat([-pull, d_neg], dim=1)


def max_rel_error(got: Adapted, want: Adapted) -> float:
    """The largest relative difference between two adaptations' heads and losses (floor 1e-3)."""
    pairs = [(got.heads["w"], want.heads["w"]), (got.heads["b"], want.heads["b"]),
             (got.loss_before, want.loss_before), (got.loss_after, want.loss_after)]
    return max(float(((a - b).abs() / (b.abs() + 1e-3)).max()) for a, b in pairs)
