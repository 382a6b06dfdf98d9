"""The serving inner loop (gradients written out) gives what ``models.core.adapt.adapt`` (autograd) gives."""

from __future__ import annotations

import pytest
import torch

from models.core.adapt import adapt
from models.serving.kernel import adapt_forward

B, S, H, K = 24, 9, 8, 6


def world(seed: int):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(0, S + 1, (B,), generator=g)
    sizes[0] = 0  # an empty support set must leave the init untouched
    return {
        "head0": {"w": torch.randn(B, H, generator=g) * 0.3, "b": torch.randn(B, generator=g)},
        "lrs": {"w": torch.rand(H, generator=g) * 0.5, "b": torch.tensor(0.2)},
        "vecs": torch.randn(B, S, H, generator=g),
        "bias": torch.randn(B, S, generator=g),
        "targets": torch.rand(B, S, generator=g) * 4 + 0.5,
        "mask": torch.arange(S)[None, :] < sizes[:, None],
        "neg_vecs": torch.randn(B, K, H, generator=g),
        "neg_bias": torch.randn(B, K, generator=g),
    }


@pytest.mark.parametrize("objective", ["implicit", "rating"])
@pytest.mark.parametrize("prior", [0.0, 2.5])
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_forward_kernel_matches_autograd_adaptation(objective, prior, steps):
    w = world(seed=steps)
    with torch.no_grad():
        want = adapt(
            w["head0"],
            w["lrs"],
            w["vecs"],
            w["bias"],
            w["targets"],
            w["mask"],
            w["neg_vecs"],
            w["neg_bias"],
            steps=steps,
            objective=objective,
            prior=prior,
        )
    vecs, bias = w["vecs"], w["bias"]
    if objective == "implicit":
        vecs, bias = torch.cat([vecs, w["neg_vecs"]], dim=1), torch.cat([bias, w["neg_bias"]], dim=1)
    got = adapt_forward(
        w["head0"],
        w["lrs"],
        vecs,
        bias,
        w["targets"],
        w["mask"],
        steps=steps,
        objective=objective,
        prior=prior,
    )
    for name in ("w", "b"):
        torch.testing.assert_close(got.heads[name], want.heads[name], rtol=1e-4, atol=1e-5)
    real = w["mask"].any(1)  # losses of empty support sets are not defined (the caller reports NaN)
    torch.testing.assert_close(got.loss_before[real], want.loss_before[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.loss_after[real], want.loss_after[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.heads["w"][0], w["head0"]["w"][0], rtol=0, atol=0)
