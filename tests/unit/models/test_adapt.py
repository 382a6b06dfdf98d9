"""The inner loop: it learns a planted user, batches exactly like a per-user loop, and leaves empty users
alone."""

from __future__ import annotations

import pytest
import torch

from models.core.adapt import adapt, expand_head, flatten_heads, score, support_loss

B, S, H, K = 5, 7, 8, 6


def planted(objective: str, seed: int = 0) -> dict:
    """Users whose targets come from a hidden head: adaptation has something real to find."""
    g = torch.Generator().manual_seed(seed)
    vecs = torch.randn(B, S, H, generator=g)  # (B, S, H)
    bias = torch.randn(B, S, generator=g) * 0.1  # (B, S)
    true_w = torch.randn(B, H, generator=g)  # (B, H)
    if objective == "rating":
        targets = (vecs * true_w[:, None, :]).sum(-1) + 3.0  # (B, S)
    else:
        targets = torch.rand(B, S, generator=g) * 0.5 + 0.5  # confidence weights
    mask = torch.rand(B, S, generator=g) > 0.3
    mask[:, 0] = True  # every user has at least one event
    return {
        "head0": expand_head({"w": torch.zeros(H), "b": torch.zeros(())}, B),
        "lrs": {"w": torch.full((H,), 0.05), "b": torch.tensor(0.05)},
        "item_vecs": vecs, "item_bias": bias, "targets": targets, "mask": mask,
        "neg_vecs": torch.randn(B, K, H, generator=g), "neg_bias": torch.zeros(B, K),
    }


@pytest.mark.parametrize("objective", ["rating", "implicit"])
def test_an_adaptation_step_lowers_every_users_support_loss(objective):
    task = planted(objective)
    out = adapt(**task, steps=1, objective=objective)
    assert bool((out.loss_after < out.loss_before).all()), (out.loss_before, out.loss_after)
    more = adapt(**task, steps=5, objective=objective)
    assert bool((more.loss_after < out.loss_after).all())


@pytest.mark.parametrize("objective", ["rating", "implicit"])
@pytest.mark.parametrize("prior", [0.0, 3.0])
def test_vmapped_inner_loop_matches_a_per_user_autograd_loop(objective, prior):
    task = planted(objective, seed=1)
    task["lrs"] = {"w": torch.rand(H) * 0.1, "b": torch.tensor(0.07)}
    out = adapt(**task, steps=3, objective=objective, prior=prior)
    for u in range(B):
        w = task["head0"]["w"][u].clone().requires_grad_(True)
        b = task["head0"]["b"][u].clone().requires_grad_(True)
        for _ in range(3):
            user = [task[k][u] for k in ("item_vecs", "item_bias", "targets", "mask", "neg_vecs", "neg_bias")]
            user[3] = user[3].float()
            loss = support_loss({"w": w, "b": b}, *user, objective, prior)
            gw, gb = torch.autograd.grad(loss, (w, b))
            w = (w - task["lrs"]["w"] * gw).detach().requires_grad_(True)
            b = (b - task["lrs"]["b"] * gb).detach().requires_grad_(True)
        torch.testing.assert_close(out.heads["w"][u], w.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.heads["b"][u], b.detach(), rtol=1e-5, atol=1e-6)


def test_a_users_result_does_not_depend_on_who_shares_the_batch():
    task = planted("implicit", seed=2)
    together = adapt(**task, steps=3, objective="implicit")
    alone = adapt(**{k: ({n: t[1:2] for n, t in v.items()} if k == "head0" else v if k == "lrs" else v[1:2])
                     for k, v in task.items()}, steps=3, objective="implicit")
    torch.testing.assert_close(together.heads["w"][1:2], alone.heads["w"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", ["rating", "implicit"])
def test_an_empty_support_set_gives_back_the_init_exactly(objective):
    task = planted(objective)
    task["head0"] = expand_head({"w": torch.randn(H), "b": torch.tensor(0.3)}, B)
    task["mask"][2] = False
    out = adapt(**task, steps=5, objective=objective)
    assert torch.equal(out.heads["w"][2], task["head0"]["w"][2])
    assert torch.equal(out.heads["b"][2], task["head0"]["b"][2])
    assert float(out.loss_before[2]) == 0.0 and float(out.loss_after[2]) == 0.0
    assert not torch.equal(out.heads["w"][0], task["head0"]["w"][0])  # the others did move


def test_zero_steps_is_no_adaptation():
    task = planted("rating")
    out = adapt(**task, steps=0, objective="rating")
    assert torch.equal(out.heads["w"], task["head0"]["w"])
    torch.testing.assert_close(out.loss_after, out.loss_before)


def test_second_order_gradients_differ_from_first_order_and_both_reach_the_step_sizes():
    grads = {}
    for first_order in (False, True):
        task = planted("rating", seed=3)
        head0 = {"w": torch.zeros(H, requires_grad=True), "b": torch.zeros((), requires_grad=True)}
        lrs = {"w": torch.full((H,), 0.05, requires_grad=True), "b": torch.tensor(0.05, requires_grad=True)}
        task["head0"], task["lrs"] = expand_head(head0, B), lrs
        out = adapt(**task, steps=3, objective="rating", first_order=first_order)
        query = score(out.heads, task["item_vecs"][0], task["item_bias"][0])  # (B, S)
        ((query - 1.0) ** 2).mean().backward()
        assert lrs["w"].grad is not None and float(lrs["w"].grad.abs().sum()) > 0
        grads[first_order] = head0["w"].grad.clone()
    assert not torch.allclose(grads[False], grads[True])


def test_adaptation_runs_without_outer_autograd():
    task = planted("implicit")
    with torch.no_grad():
        out = adapt(**task, steps=2, objective="implicit")
    assert bool((out.loss_after < out.loss_before).all())


def test_score_and_flatten_shapes():
    heads = {"w": torch.randn(3, H), "b": torch.randn(3)}
    vecs, bias = torch.randn(10, H), torch.randn(10)
    scores = score(heads, vecs, bias)
    assert scores.shape == (3, 10)
    torch.testing.assert_close(scores[1, 4], vecs[4] @ heads["w"][1] + heads["b"][1] + bias[4])
    flat = flatten_heads(heads)
    assert flat.shape == (3, H + 1) and torch.equal(flat[:, -1], heads["b"])


def test_reported_losses_are_plain_means_whatever_the_prior():
    task = planted("rating", seed=4)
    out = adapt(**task, steps=2, objective="rating", prior=5.0)
    scores = (task["item_vecs"] * task["head0"]["w"][:, None, :]).sum(-1) + task["item_bias"]  # (B, S)
    mask = task["mask"].float()
    mse = (((scores - task["targets"]) ** 2) * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(out.loss_before, mse)
