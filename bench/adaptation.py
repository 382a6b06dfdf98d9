"""Users adapted per second: batched paths against a per-user Python loop, beside the hardware limit.

All paths run the same model and the same work per user: ``inner_steps`` Meta-SGD steps of the implicit
objective (support set of up to ``--support`` events against ``--negatives`` sampled negatives, head of width
``--head-dim``), then scoring the whole catalogue and taking the top 10. The batched path is
``models.core.adapt.adapt`` + ``models.core.adapt.score`` over padded support sets (``torch.func`` vmap + grad: what
training differentiates through); the closed form is ``models.serving.kernel.adapt_forward`` (what serves: the same
heads, gradients written out, checked against ``adapt`` in every row); the loop is the learn2learn way: per
user, clone the head, take each step with ``torch.autograd.grad``, score.

The limit beside each figure is FLOPs per adaptation (counted analytically, cross-checked against
``torch.utils.flop_counter`` for the matrix products) over the device's peak (see :mod:`bench.hardware`).

    .venv/bin/python -m bench.adaptation                 # CPU -> bench/results/adaptation-cpu.json
    .venv/bin/python -m bench.adaptation --device cuda   # -> bench/results/adaptation-cuda.json
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from bench.common import RESULTS, machine_info, write_results
from bench.hardware import cpu_peak, device_peak
from models.core.adapt import Adapted, adapt, expand_head, score, support_loss
from models.serving.kernel import adapt_forward

log = logging.getLogger("bench.adaptation")
TOP_K = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", default="1,4,16,64,256,1024,4096")
    p.add_argument(
        "--support", type=int, default=50, help="largest support set; sizes are drawn in [5, this]"
    )
    p.add_argument("--negatives", type=int, default=64)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--items", type=int, default=1000, help="catalogue scored after adaptation")
    p.add_argument(
        "--loop-max-users", type=int, default=256, help="users timed per loop figure (rate is per user)"
    )
    p.add_argument("--min-time-s", type=float, default=0.5, help="time each figure at least this long")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0 = torch's default); with 1, figures are per CPU-second of one core",
    )
    p.add_argument("--out", default="")
    return p.parse_args(argv)


class World:
    """A random catalogue and, per user, a support set with padding, negatives, head init and step sizes."""

    def __init__(self, args: argparse.Namespace, batch: int, device: torch.device, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        h, s, k, n = args.head_dim, args.support, args.negatives, args.items
        self.cat_vecs = torch.randn(n, h, generator=g).to(device)  # (N, H)
        self.cat_bias = torch.randn(n, generator=g).to(device)  # (N,)
        items = torch.randint(0, n, (batch, s), generator=g)  # (B, S)
        self.sizes = torch.randint(5, s + 1, (batch,), generator=g)  # (B,)
        self.mask = (torch.arange(s)[None, :] < self.sizes[:, None]).float().to(device)  # (B, S)
        self.items = items.to(device)
        self.targets = (torch.rand(batch, s, generator=g) + 0.5).to(device)  # (B, S) confidence weights
        self.negs = torch.randint(0, n, (batch, k), generator=g).to(device)  # (B, K)
        self.head0 = {
            "w": (torch.randn(h, generator=g) * 0.01).to(device),
            "b": torch.zeros((), device=device),
        }
        self.lrs = {"w": torch.full((h,), 0.1, device=device), "b": torch.tensor(0.1, device=device)}


def batched(world: World, steps: int) -> Tensor:
    """One call for all users: vmapped adaptation, catalogue scores, top-k. Returns (B, k) indices."""
    batch = world.items.shape[0]
    with torch.no_grad():
        out = adapt(
            expand_head(world.head0, batch),
            world.lrs,
            world.cat_vecs[world.items],
            world.cat_bias[world.items],
            world.targets,
            world.mask,
            world.cat_vecs[world.negs],
            world.cat_bias[world.negs],
            steps=steps,
            objective="implicit",
        )
        return score(out.heads, world.cat_vecs, world.cat_bias).topk(TOP_K, dim=1).indices  # (B, k)


def closed_form(world: World, steps: int, check: bool = False) -> Tensor | float:
    """The same work with the serving kernel (``models.serving.kernel.adapt_forward``: gradients written out, forward
    only); with ``check``, its largest relative error against ``adapt`` instead."""
    batch = world.items.shape[0]
    with torch.inference_mode():
        both = torch.cat([world.items, world.negs], dim=1)  # (B, S + K)
        out = adapt_forward(
            expand_head(world.head0, batch),
            world.lrs,
            world.cat_vecs[both],
            world.cat_bias[both],
            world.targets,
            world.mask,
            steps=steps,
            objective="implicit",
        )
        if check:
            want = adapt(
                expand_head(world.head0, batch),
                world.lrs,
                world.cat_vecs[world.items],
                world.cat_bias[world.items],
                world.targets,
                world.mask,
                world.cat_vecs[world.negs],
                world.cat_bias[world.negs],
                steps=steps,
                objective="implicit",
            )
            return max_rel_error(out, want)
        return score(out.heads, world.cat_vecs, world.cat_bias).topk(TOP_K, dim=1).indices  # (B, k)


def max_rel_error(got: Adapted, want: Adapted) -> float:
    """The largest relative difference between two adaptations' heads and losses (floor 1e-3)."""
    pairs = [
        (got.heads["w"], want.heads["w"]),
        (got.heads["b"], want.heads["b"]),
        (got.loss_before, want.loss_before),
        (got.loss_after, want.loss_after),
    ]
    return max(float(((a - b).abs() / (b.abs() + 1e-3)).max()) for a, b in pairs)


def loop(world: World, steps: int, users: int) -> list[Tensor]:
    """The learn2learn way: per user, clone the init and step with ``torch.autograd.grad``; then score."""
    out = []
    for u in range(users):
        size = int(world.sizes[u])
        items, negs = world.items[u, :size], world.negs[u]
        vecs, bias, targets = (
            world.cat_vecs[items],
            world.cat_bias[items],
            world.targets[u, :size],
        )  # (S_u, H) ..
        mask = torch.ones(size, device=vecs.device)
        w = world.head0["w"].clone().requires_grad_(True)
        b = world.head0["b"].clone().requires_grad_(True)
        with torch.enable_grad():
            for _ in range(steps):
                loss = support_loss(
                    {"w": w, "b": b},
                    vecs,
                    bias,
                    targets,
                    mask,
                    world.cat_vecs[negs],
                    world.cat_bias[negs],
                    "implicit",
                )
                gw, gb = torch.autograd.grad(loss, (w, b))
                w, b = w - world.lrs["w"] * gw, b - world.lrs["b"] * gb
        with torch.no_grad():
            out.append((world.cat_vecs @ w + b + world.cat_bias).topk(TOP_K).indices)  # (k,)
    return out


def clock(device: torch.device, threads: int) -> Callable[[], float]:
    """CPU time of this process when one thread computes (a busy shared machine then steals nothing from the
    figure: it is what a dedicated core would do); wall time otherwise, synchronised on CUDA."""
    if device.type == "cpu" and threads == 1:
        return time.process_time
    if device.type == "cuda":

        def synced() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()

        return synced
    return time.perf_counter


def interleaved(
    paths: dict[str, Callable[[], Any]], now: Callable[[], float], min_time_s: float, min_rounds: int = 3
) -> dict[str, float]:
    """Median seconds per call of each path, timed in alternating rounds so drifting load hits all alike."""
    for fn in paths.values():
        fn()  # warm-up: allocations, first-call dispatch
    times: dict[str, list[float]] = {name: [] for name in paths}
    spent, rounds = 0.0, 0
    while spent < min_time_s or rounds < min_rounds:
        for name, fn in paths.items():
            started = now()
            fn()
            times[name].append(now() - started)
            spent += times[name][-1]
        rounds += 1
    return {name: statistics.median(ts) for name, ts in times.items()}


def flops_per_user(s: int, k: int, h: int, steps: int, n: int) -> dict[str, float]:
    """Analytical FLOPs of one user's adaptation + scoring (padding included: the batched path pays for it).

    Forward of the loss: pos and neg scores (2(S+K)H), logsumexp over S x (1+K) logits (~4 per element), the
    weighted sum (~3S). Backward: the two transposed products (2(S+K)H), the softmax gradient (~4 per logit).
    ``steps`` forward+backward passes, two extra forwards (loss before and after), then 2NH to score N items.
    """
    fwd = 2 * (s + k) * h + 4 * s * (1 + k) + 3 * s
    bwd = 2 * (s + k) * h + 4 * s * (1 + k) + 2 * s
    adapt_f = steps * (fwd + bwd) + 2 * fwd + steps * 3 * (h + 1)  # + the elementwise updates
    scoring = 2 * n * h + n  # scores, + the bias
    return {"adapt": float(adapt_f), "score": float(scoring), "total": float(adapt_f + scoring)}


def bytes_per_user(s: int, k: int, h: int, n: int) -> float:
    """Bytes crossing memory once per user in the batched path: gathered vectors in, scores out (fp32)."""
    return 4.0 * ((s + k) * (h + 1) + 3 * s + n + (h + 1))


def measure_flops(args: argparse.Namespace, device: torch.device) -> float:
    """Matrix-product FLOPs per user of the batched path, as torch's flop counter sees them."""
    from torch.utils.flop_counter import FlopCounterMode

    world = World(args, 16, device)
    counter = FlopCounterMode(display=False)
    with counter:
        batched(world, args.steps)
    return counter.get_total_flops() / 16


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    now = clock(device, torch.get_num_threads())
    peak = device_peak(device)
    if device.type == "cpu" and torch.get_num_threads() == 1:
        peak = cpu_peak(cores=1)  # CPU time of one thread: the limit is one core's
    flops = flops_per_user(args.support, args.negatives, args.head_dim, args.steps, args.items)
    nbytes = bytes_per_user(args.support, args.negatives, args.head_dim, args.items)
    limit = min(peak["flops"] / flops["total"], peak["bytes_per_s"] / nbytes) if peak["flops"] else None
    rows = []
    for batch in (int(b) for b in args.batches.split(",") if b):
        world = World(args, batch, device)
        loop_users = min(batch, args.loop_max_users)
        t = interleaved(
            {
                "batched": lambda: batched(world, args.steps),
                "closed": lambda: closed_form(world, args.steps),
                "loop": lambda: loop(world, args.steps, loop_users),
            },
            now,
            args.min_time_s,
        )
        t_batched, t_closed, t_loop = t["batched"], t["closed"], t["loop"]
        row = {
            "batch": batch,
            "batched_users_per_s": round(batch / t_batched, 1),
            "loop_users_per_s": round(loop_users / t_loop, 1),
            "speedup": round((batch / t_batched) / (loop_users / t_loop), 2),
            "closed_form_users_per_s": round(batch / t_closed, 1),
            "closed_form_speedup_vs_loop": round((batch / t_closed) / (loop_users / t_loop), 2),
            "closed_form_max_rel_error": closed_form(world, args.steps, check=True),
            "batched_ms_per_batch": round(t_batched * 1e3, 3),
            "batched_gflops_per_s": round(batch * flops["total"] / t_batched / 1e9, 2),
            "hardware_limit_users_per_s": round(limit, 1) if limit else None,
            "share_of_limit": round(batch / t_batched / limit, 4) if limit else None,
            "closed_form_share_of_limit": round(batch / t_closed / limit, 4) if limit else None,
        }
        log.info("%s", row)
        rows.append(row)
    timing = (
        "CPU seconds of the one computing thread (time.process_time)"
        if now is time.process_time
        else "wall seconds" + (", CUDA-synchronised" if device.type == "cuda" else "")
    )
    return {
        "device": str(device),
        "timing": timing,
        "torch_threads": torch.get_num_threads(),
        "peak": peak,
        "flops_per_user": flops,
        "flop_counter_matmul_flops_per_user": measure_flops(args, device),
        "flop_counter_note": "torch's counter sees matrix products only (adapt scores by multiply-and-sum, "
        "which it does not count): a lower bound on the analytical figure",
        "bytes_per_user": nbytes,
        "hardware_limit_users_per_s": round(limit, 1) if limit else None,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here")
    result = {
        "machine": machine_info(),
        "args": vars(args),
        "setup": f"implicit objective, {args.steps} inner steps, head {args.head_dim}, "
        f"support 5..{args.support}"
        f" (padded to {args.support} in the batched path), {args.negatives} negatives, "
        f"{args.items} items scored + top-{TOP_K}; loop = per-user clone + torch.autograd.grad; "
        "closed_form = models.serving.kernel.adapt_forward (what serves)",
        **run(args),
    }
    kind = "cuda" if args.device.startswith("cuda") else args.device
    if kind == "cpu":
        result["cuda"] = (
            "not measured: no GPU in this task (the device tool lent none); run with --device cuda"
        )
    write_results(Path(args.out) if args.out else RESULTS / f"adaptation-{kind}.json", result)
    return result


if __name__ == "__main__":
    main()
