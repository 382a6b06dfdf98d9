"""The inner loop as the worker serves it: ``models.core.adapt.adapt``'s result with the gradients written out.

Training differentiates through the inner loop, so it uses ``torch.func`` transforms (``models.core.adapt``).
Serving and evaluation only need the adapted heads: this closed form gives the same heads and losses (to float
rounding; tests/unit/models/test_serving_kernel.py) several times cheaper, and without the transforms' per-op
Python that holds the GIL the worker's event loop needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.core.adapt import Adapted, Head


def adapt_forward(
    head0: Head,
    lrs: Head,
    vecs: Tensor,  # (B, S + K, H): each user's support items, then their K negatives (K = 0 for rating)
    bias: Tensor,  # (B, S + K)
    targets: Tensor,  # (B, S)
    mask: Tensor,  # (B, S)
    *,
    steps: int,
    objective: str,
    prior: float = 0.0,
) -> Adapted:
    """``models.core.adapt.adapt`` without autograd, for serving and evaluation: the same heads and losses (to
    float rounding; tests/unit/models/test_serving_kernel.py), several times cheaper.

    The gradients are written out, so a step is one batched product forward and one backward over the stacked
    support items and negatives, with no ``vmap``/``grad`` transforms (whose per-op Python also holds the GIL
    the worker's event loop needs). The implicit loss is O(S + K) per user:
    -log softmax(pos_s among [pos_s, negatives]) = softplus(lse(neg) - pos_s), whose gradient is
    -c_s sigmoid(lse(neg) - pos_s) for pos_s and softmax(neg)_k sum_s c_s sigmoid(lse(neg) - pos_s) for neg_k,
    c = target x mask / (count + prior). Reported losses are per-event means, as ``adapt`` reports them.
    """
    support = targets.shape[1]
    mask = mask.to(vecs.dtype)
    events = mask.sum(1)  # (B,)
    step_scale = 1.0 / (events + prior).clamp(min=1e-6)  # (B,)
    weight = (targets if objective != "rating" else torch.ones_like(targets)) * mask  # (B, S)
    w, b = head0["w"], head0["b"]  # (B, H), (B,)
    before = total = torch.zeros_like(b)
    for step in range(steps + 1):
        scores = torch.bmm(w[:, None, :], vecs.mT).squeeze(1) + b[:, None] + bias  # (B, S + K)
        total, grad = _loss_and_grad(scores[:, :support], scores[:, support:], targets, weight, objective)
        if step == 0:
            before = total
        if step == steps:
            break
        grad = grad * step_scale[:, None]  # (B, S + K)
        w = w - lrs["w"] * torch.bmm(grad[:, None, :], vecs).squeeze(1)  # (B, H)
        b = b - lrs["b"] * grad.sum(1)  # (B,)
    per_event = 1.0 / events.clamp(min=1e-6)  # (B,)
    return Adapted(heads={"w": w, "b": b}, loss_before=before * per_event, loss_after=total * per_event)


def _loss_and_grad(pos: Tensor, neg: Tensor, targets: Tensor, weight: Tensor,
                   objective: str) -> tuple[Tensor, Tensor]:
    """Each user's unnormalised support loss (B,) and its gradient with respect to every score (B, S + K)."""
    if objective == "rating":
        err = pos - targets  # (B, S)
        return (weight * err * err).sum(1), torch.cat([2.0 * weight * err, neg], dim=1)  # neg is (B, 0)
    margin = torch.logsumexp(neg, dim=1, keepdim=True) - pos  # (B, S)
    pull = weight * torch.sigmoid(margin)  # (B, S)
    d_neg = torch.softmax(neg, dim=1) * pull.sum(1, keepdim=True)  # (B, K)
    return (weight * F.softplus(margin)).sum(1), torch.cat([-pull, d_neg], dim=1)
