"""Does adaptation earn its place? metarec adapted vs its own meta-init, paired per event, on validation data.

Only the stream's warm-up (its first 20%) is read, never the scored 80%. A *window* trains metarec on a prefix of
the warm-up and replays the next stretch test-then-train, exactly as the stream protocol does (chunks, support
sets, statistics fed as events are learned):

- ``w2``: train on the warm-up's first 75%, replay its last quarter (the stream's validation part);
- ``w1``: train on its first half, replay the third quarter (other users' first events: on ML-100K a window
  holds only 46-65 users in their first 10 events, so one window says little about them).

Every scored event is ranked twice by the same model, adapted (the model's inner steps) and at the meta-init
(``steps=0``), so the two hit rates are paired per event; intervals are a bootstrap over users (95%). A
variant (ModelConfig or Schedule overrides, as JSON) is compared with the first variant on the same events the
same way. With ``--probe`` the first variant's models are also probed (``bench.adaptation_probe``): the
inner-loop gradient's structure and what an oracle could gain by personalising the adapted parameters.

    OMP_NUM_THREADS=1 python -m bench.adaptation_gain --dataset ../shared/data/ml-100k --seeds 0 1 \\
        --variant base='{}' --variant prior4='{"config": {"support_prior": 4}}' --probe

Writes ``bench/results/adaptation-gain-<dataset>.json`` (``--out``; ``--tag`` adds a suffix).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.data.registry import dataset_name, load_dataset
from models.eval.metarec_methods import MetarecMethod, Schedule, TrainingCache, one_thread
from models.eval.methods import Pending, Query
from models.eval.metrics import BUCKETS, history_bucket
from models.eval.report import machine
from models.eval.stream_protocol import StreamPlan, plan_stream
from models.features.context import CONTEXT_NAMES

log = logging.getLogger("bench.adaptation_gain")

WARMUP_FRACTION = 0.2  # the stream protocol's warm-up: nothing after it is read
WINDOWS: dict[str, tuple[float, float]] = {"w1": (0.5, 0.75), "w2": (0.75, 1.0)}  # (train until, replay until)
FINE_BUCKETS: tuple[tuple[str, int, int], ...] = (("0", 0, 0), ("1-2", 1, 2), ("3-5", 3, 5), ("6-9", 6, 9),
                                                   ("10+", 10, 1 << 40))  # events before the scored one
FIELDS = ("user", "n_before", "hit", "hit_init", "loss_before", "loss_after", "move", "support")


@dataclass
class Records:
    """One variant's scored events over every (window, seed), in replay order: a row per event (``FIELDS``)."""

    rows: list[tuple] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)  # per (window, seed): step sizes, init

    def array(self) -> np.ndarray:
        return np.asarray(self.rows, np.float64).reshape(-1, len(FIELDS))


def window_plan(events, window: str) -> StreamPlan:
    """The window's plan: its training prefix is ``plan.prefix``, its replayed stretch is scored."""
    warm = events.take(np.arange(int(len(events) * WARMUP_FRACTION)))
    upto, end = WINDOWS[window]
    sub = warm.take(np.arange(int(len(warm) * end)))
    return plan_stream(sub, int(len(warm) * upto) / len(sub))


def schedule_for(spec: dict[str, Any]) -> Schedule:
    """A variant's Schedule: its ``schedule`` fields, its ``config`` as ModelConfig overrides; no rating model
    (ranking only) and ``adapt_taste`` off unless given (what the warm-up chose on both data sets)."""
    fields = {"adapt_taste": False, "choose_taste": False, "rating_model": False, **spec.get("schedule", {})}
    return Schedule(overrides=tuple(sorted(spec.get("config", {}).items())), **fields)


def paired_replay(method: MetarecMethod, plan: StreamPlan, serve_steps: int | None = None,
                  probe: Any = None) -> list[tuple]:
    """Replay ``plan`` test-then-train as ``models.eval.stream_protocol`` does, ranking each scored event
    adapted and at the init with the same model: one ``FIELDS`` row per scored event."""
    method.fit_prefix(plan.prefix)
    ev, rows = plan.log, []
    seen: dict[int, set[int]] = {}
    for u, i in zip(ev.users[: plan.start].tolist(), ev.items[: plan.start].tolist()):
        seen.setdefault(u, set()).add(i)
    n = plan.start
    while n < len(ev):
        end = min(len(ev), n + max(1, min(512, method.events_until_refresh() or 512)))
        points, queries = _chunk(plan, n, end, seen)
        if points:
            method._chunk = None
            requests = method._requests(queries)
            with one_thread():
                adapted = method.model.recommend(requests, 10, steps=serve_steps)
                init = method.model.recommend(requests, 10, steps=0)
            if probe is not None:
                probe.observe(method, requests, [plan.n_before[p] for p in points],
                              [method.template.item_ids[int(ev.items[p])] for p in points])
            for p, req, a, z in zip(points, requests, adapted, init):
                item = method.template.item_ids[int(ev.items[p])]
                rows.append((int(ev.users[p]), int(plan.n_before[p]), float(item in a.items),
                             float(item in z.items), a.loss_before, a.loss_after,
                             float(np.linalg.norm(a.head - z.head)), len(req.support)))
        for m in range(n, end):
            user, item = int(ev.users[m]), int(ev.items[m])
            method.learn(user, item, float(ev.values[m]), int(ev.types[m]), float(ev.ts[m]))
            seen.setdefault(user, set()).add(item)
        n = end
    return rows


def _chunk(plan: StreamPlan, begin: int, end: int, seen: dict[int, set[int]]) -> tuple[list[int], list[Query]]:
    """The chunk's scored events and their queries, each with the user's earlier events of the chunk."""
    ev, pending = plan.log, {}
    points, queries = [], []
    for m in range(begin, end):
        user, item = int(ev.users[m]), int(ev.items[m])
        earlier = pending.setdefault(user, [])
        if plan.scored[m]:
            points.append(m)
            queries.append(Query(user, seen.get(user, set()) | {p.item for p in earlier}, tuple(earlier)))
        earlier.append(Pending(item, float(ev.values[m]), int(ev.types[m]), float(ev.ts[m])))
    return points, queries


def model_facts(method: MetarecMethod) -> dict[str, Any]:
    """The learned step sizes by parameter group and the init of the context weights."""
    model = method.model.model
    with torch.no_grad():
        facts: dict[str, Any] = {"lr_w_mean": float(model.log_lr_w.exp().mean()),
                                 "lr_b": float(model.log_lr_b.exp())}
        if model.cfg.n_context:
            facts["lr_a"] = dict(zip(CONTEXT_NAMES, np.round(model.log_lr_a.exp().numpy(), 4).tolist()))
            facts["head_a"] = dict(zip(CONTEXT_NAMES, np.round(model.head_a.numpy(), 4).tolist()))
        facts["support_prior"] = model.cfg.support_prior
        facts["inner_steps"] = model.cfg.inner_steps
    return facts


def paired_interval(users: np.ndarray, diff: np.ndarray, reps: int = 2000, seed: int = 0) -> list[float]:
    """[low, mean, high]: the mean of ``diff`` over events and its 95% bootstrap interval over users."""
    if not len(diff):
        return [float("nan")] * 3
    _, inverse = np.unique(users, return_inverse=True)
    sums, counts = np.bincount(inverse, diff), np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), (reps, len(sums)))  # (R, U) users drawn with replacement
    means = sums[picks].sum(1) / counts[picks].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [round(float(lo), 5), round(float(diff.mean()), 5), round(float(hi), 5)]


def summarise(r: np.ndarray, base: np.ndarray | None = None) -> dict[str, Any]:
    """HR adapted and at the init by bucket, adapted minus init (and minus the base variant, when given)."""
    buckets = np.array([history_bucket(int(n)) for n in r[:, 1]])
    first10 = r[:, 1] <= 9
    out: dict[str, Any] = {"events": len(r), "first10_events": int(first10.sum()),
                           "first10_users": len(np.unique(r[first10, 0]))}
    out["hr_adapted_init"] = {b: [round(float(r[buckets == b, 2].mean()), 4), round(float(r[buckets == b, 3].mean()), 4)]
                              for b in BUCKETS if (buckets == b).any()}
    for name, sel in (("all", np.ones(len(r), bool)), ("first10", first10)):
        out["hr_adapted_init"][name] = [round(float(r[sel, 2].mean()), 4), round(float(r[sel, 3].mean()), 4)]
    out["adapted_minus_init"] = {name: paired_interval(r[sel, 0], r[sel, 2] - r[sel, 3])
                                 for name, sel in (("all", np.ones(len(r), bool)), ("first10", first10))}
    out["adapted_minus_init_by_history"] = {
        name: paired_interval(r[sel, 0], r[sel, 2] - r[sel, 3])
        for name, sel in ((n, (r[:, 1] >= lo) & (r[:, 1] <= hi)) for n, lo, hi in FINE_BUCKETS) if sel.any()}
    out["changed_hits_first10"] = {"gained": int(((r[:, 2] > r[:, 3]) & first10).sum()),
                                   "lost": int(((r[:, 2] < r[:, 3]) & first10).sum())}
    adapted = np.isfinite(r[:, 4])
    out["support_loss_before_after"] = {b: [round(float(np.mean(r[(buckets == b) & adapted, 4])), 4),
                                            round(float(np.mean(r[(buckets == b) & adapted, 5])), 4)]
                                        for b in BUCKETS if ((buckets == b) & adapted).any()}
    out["head_move"] = {b: round(float(r[buckets == b, 6].mean()), 4) for b in BUCKETS if (buckets == b).any()}
    if base is not None:
        if not (np.array_equal(base[:, :2], r[:, :2])):
            raise ValueError("variants were replayed over different events")
        out["minus_base"] = {name: paired_interval(r[sel, 0], r[sel, 2] - base[sel, 2])
                             for name, sel in (("all", np.ones(len(r), bool)), ("first10", first10))}
        out["minus_base_by_history"] = {
            name: paired_interval(r[sel, 0], r[sel, 2] - base[sel, 2])
            for name, sel in ((n, (r[:, 1] >= lo) & (r[:, 1] <= hi)) for n, lo, hi in FINE_BUCKETS) if sel.any()}
    return out


def run_variant(events, spec: dict[str, Any], seeds: list[int], windows: list[str],
                probe: bool = False) -> tuple[Records, dict[str, Any] | None]:
    """Every (window, seed) replay of one variant, and the probes' figures (``--probe``) or None."""
    rec, probes = Records(), []
    for window in windows:
        plan = window_plan(events, window)
        for seed in seeds:
            method = MetarecMethod("metarec", seed, schedule_for(spec), TrainingCache())
            began = time.monotonic()
            prober = None
            if probe:
                from bench.adaptation_probe import Probe

                prober = Probe()
            rec.rows += paired_replay(method, plan, spec.get("serve_steps"), prober)
            rec.models.append({"window": window, "seed": seed, **model_facts(method)})
            if prober is not None:
                probes.append({"window": window, "seed": seed, **prober.summary()})
            log.info("%s seed %d: %.0fs", window, seed, time.monotonic() - began)
    if not probe:
        return rec, None
    from bench.adaptation_probe import combine

    return rec, combine(probes)


def run_parts(events, variants: list[tuple[str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """Every variant's raw rows and model facts (a *part*: ``--merge`` pools parts run in other processes)."""
    parts: dict[str, Any] = {}
    for n, (name, text) in enumerate(variants):
        spec = json.loads(text)
        rec, probed = run_variant(events, spec, args.seeds, args.windows, args.probe and n == 0)
        parts[name] = {"spec": spec, "models": rec.models, "rows": rec.rows, "seeds": args.seeds,
                       "windows": args.windows, **({"probe": probed} if probed is not None else {})}
    return parts


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary per variant over the parts, in order; every variant is compared with the first one on the
    same events, so each part must hold every variant (or parts pair up by their (window, seed) lists)."""
    pooled: dict[str, dict[str, Any]] = {}
    for part in parts:
        for name, v in part.items():
            into = pooled.setdefault(name, {"spec": v["spec"], "models": [], "rows": [], "probe": []})
            into["models"] += v["models"]
            into["rows"] += [tuple(r) for r in v["rows"]]
            into["probe"] += [v["probe"]] if "probe" in v else []
    out, base = {}, None
    for name, v in pooled.items():
        r = np.asarray(v["rows"], np.float64).reshape(-1, len(FIELDS))
        out[name] = {"spec": v["spec"], "models": v["models"], **summarise(r, base)}
        if v["probe"]:
            out[name]["probe"] = v["probe"]
        base = r if base is None else base
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--windows", nargs="+", default=["w1", "w2"], choices=sorted(WINDOWS))
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON; the first is the base")
    p.add_argument("--probe", action="store_true", help="probe the base variant (bench.adaptation_probe)")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--tag", default="")
    p.add_argument("--part", help="write this run's raw rows to PART (JSON) instead of a summary")
    p.add_argument("--merge", nargs="+", default=[], help="summarise these parts (no run); the first variant "
                   "seen is the base")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m bench.adaptation_gain " + " ".join(sys.argv[1:] if argv is None else argv)
    began = time.monotonic()
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        commands = [part.pop("_command") for part in parts]
        machines = [part.pop("_machine") for part in parts]
        variants = merge(parts)
        some = next(iter(variants.values()))
        seeds = sorted({m["seed"] for m in some["models"]})
        windows = sorted({m["window"] for m in some["models"]})
    else:
        variants_in = [v.split("=", 1) for v in args.variant or ["base={}"]]
        events = load_dataset(args.dataset, seed=0).sorted_by_time()
        parts = run_parts(events, variants_in, args)
        if args.part:
            Path(args.part).write_text(json.dumps({**parts, "_command": command, "_machine": machine()}))
            log.info("wrote %s", args.part)
            return
        commands, machines, variants = [command], [machine()], merge([parts])
        seeds, windows = args.seeds, args.windows
    result: dict[str, Any] = {
        "dataset": dataset_name(args.dataset), "seeds": seeds, "windows": windows,
        "window_fractions": {w: WINDOWS[w] for w in windows}, "warmup_fraction": WARMUP_FRACTION,
        "machine": machines[0], "command": command, "part_commands": commands, "variants": variants,
    }
    for name, v in variants.items():
        print(name, json.dumps({k: v[k] for k in ("hr_adapted_init", "adapted_minus_init", "minus_base")
                                if k in v}), flush=True)
    result["seconds"] = round(time.monotonic() - began)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"adaptation-gain-{result['dataset']}{args.tag}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
