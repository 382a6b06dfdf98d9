"""What user-level differential privacy costs: stream-order quality at epsilon 1, 4 and 8 against no privacy.

``metarec evaluate --privacy`` calls :func:`run_privacy`. Every method is trained on the stream's warm-up
prefix
and then replayed test-then-train with frozen meta-parameters
(:class:`models.eval.trained_methods.PrefixTrained`),
so the only difference between rows is how the meta-parameters were learned:

* ``non-private``: :func:`models.training.train.meta_train` with the same steps and users per step;
* ``dp-eps<E>``: :func:`models.training.dp_train.dp_meta_train`, the noise calibrated so that the whole run spends at
most
  epsilon E for delta (default ``1 / n_users^1.1``), with respect to the users of the prefix.

Privacy covers meta-training. Serving adapts a user's head on that user's own events only, which reveals
nothing
about other users beyond what the (private) meta-parameters do. DP needs many users: the warm-up share is
larger
than the stream protocol's default so more users are trained on (``warmup_fraction``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.data.events import EventLog
from models.eval.metrics import FIRST_TEN
from models.eval.report import machine
from models.eval.stream_protocol import plan_stream, timed_replay
from models.eval.stream_runner import first_events
from models.eval.trained_methods import PrefixTrained
from models.serving.recommender import Recommender
from models.training.dp_train import DPConfig, DPReport, dp_meta_train
from models.training.train import default_config, meta_train

log = logging.getLogger(__name__)

EPSILONS: tuple[float, ...] = (1.0, 4.0, 8.0)


@dataclass(frozen=True)
class PrivacySetup:
    steps: int = 300
    expected_batch: int = 64  # users per step (expected, under Poisson sampling)
    clip: float = 1.0
    delta: float | None = None
    seed: int = 0
    max_events: int | None = None
    warmup_fraction: float = 0.5


def _dp_recipe(epsilon: float, setup: PrivacySetup, reports: dict[str, DPReport], name: str) -> Callable:
    def train(prefix: EventLog) -> Recommender:
        cfg = default_config(prefix, setup.seed, "rating" if prefix.explicit else "implicit", context=False)
        dp = DPConfig(
            clip=setup.clip, expected_batch=setup.expected_batch, delta=setup.delta, target_epsilon=epsilon
        )
        model, reports[name] = dp_meta_train(prefix, cfg, steps=setup.steps, dp=dp, seed=setup.seed)
        return model

    return train


def _plain_recipe(setup: PrivacySetup) -> Callable:
    def train(prefix: EventLog) -> Recommender:
        return meta_train(
            prefix,
            default_config(prefix, setup.seed, "rating" if prefix.explicit else "implicit", context=False),
            steps=setup.steps,
            batch_users=setup.expected_batch,
            seed=setup.seed,
        )

    return train


def run_privacy(
    log_: EventLog,
    out_dir: str | Path | None = Path("bench/results"),
    *,
    epsilons: tuple[float, ...] = EPSILONS,
    setup: PrivacySetup | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Replay the non-private and the DP models on ``log_``; write ``privacy-<dataset>.json`` and ``.md``."""
    setup = setup or PrivacySetup()
    began = time.perf_counter()
    plan = plan_stream(first_events(log_, setup.max_events), setup.warmup_fraction)
    reports: dict[str, DPReport] = {}
    recipes = {"non-private": _plain_recipe(setup)}
    for eps in epsilons:
        name = f"dp-eps{eps:g}"
        recipes[name] = _dp_recipe(eps, setup, reports, name)
    methods: dict[str, Any] = {}
    for name, recipe in recipes.items():
        acc, seconds = timed_replay(PrefixTrained(name, recipe), plan)
        methods[name] = {
            **acc.summary(),
            "hr@10_first10": acc.pooled_hr(FIRST_TEN),
            "seconds": round(seconds, 1),
        }
        if name in reports:
            methods[name]["privacy"] = asdict(reports[name])
    result = {
        "dataset": log_.name,
        "events": len(plan.log),
        "warmup_events": plan.start,
        "training_users": int(len(np.unique(plan.prefix.users))),
        "evaluation_points": int(plan.scored.sum()),
        "bucket_events": plan.bucket_events(),
        "setup": asdict(setup),
        "methods": methods,
        "cost": quality_cost(methods),
        "seconds": round(time.perf_counter() - began, 1),
        "machine": machine(),
        "command": command,
    }
    if out_dir is not None:
        write_privacy(result, Path(out_dir))
    return result


def quality_cost(methods: dict[str, Any]) -> dict[str, Any]:
    """Per DP method: HR@10 as a share of the non-private one (all, first ten events), MAE added."""
    base = methods["non-private"]
    out = {}
    for name, m in methods.items():
        if name == "non-private":
            continue
        out[name] = {
            "epsilon": m["privacy"]["epsilon"],
            "hr@10_ratio": _ratio(m["hr@10"]["all"], base["hr@10"]["all"]),
            "hr@10_first10_ratio": _ratio(m["hr@10_first10"], base["hr@10_first10"]),
            "mae_delta": None
            if m["mae"] is None or base["mae"] is None
            else round(m["mae"] - base["mae"], 4),
        }
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def write_privacy(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"privacy-{result['dataset']}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    log.info("wrote %s", path)
    return path


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# User-level DP on {result['dataset']} ({result['training_users']} training users)",
        "",
        "| method | epsilon | sigma | HR@10 all | first 10 | MAE |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in result["methods"].items():
        p = m.get("privacy")
        eps = "∞" if p is None else f"{p['epsilon']:.2f}"
        sigma = "0" if p is None else f"{p['noise_multiplier']:.2f}"
        cells = [_fmt(m["hr@10"]["all"]), _fmt(m["hr@10_first10"]), _fmt(m["mae"])]
        lines.append(f"| {name} | {eps} | {sigma} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
