"""Cross-domain transfer: does meta-knowledge from a source domain make a target domain cheaper?

``metarec evaluate --transfer SOURCE TARGET`` calls :func:`run_transfer`. On the target, in one run, three
recipes are scored with the same serving path (:mod:`models.eval.trained_methods`):

* ``target-only``: meta-training on the target alone;
* ``zero-shot``: the source model carried over (:func:`models.training.domain_transfer.transplant`) with no target training;
  brand-new users still adapt on their own events with the source's meta-learned init and step sizes;
* ``pretrain-finetune``: the carried-over model meta-fine-tuned on the target for the same number of steps.

The two domains share an item space only through text vectors (both logs keep text features alone; the id
embeddings do not transfer). The source is pre-trained with the target's objective when its data allows it
(ratings need explicit data), so the zero-shot model speaks the target's language where it can; otherwise the
zero-shot model predicts no ratings and its MAE is null.

Reported per recipe: stream-order HR@10 and NDCG@10 by history bucket (test-then-train on the target, training
on the warm-up prefix only), and on explicit targets the cold-start split's MAE/RMSE/nDCG@3 per scenario.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from models.core.config import ModelConfig
from models.data.events import EventLog
from models.eval.coldstart.methods import task_data
from models.eval.coldstart.metrics import scenario_metrics
from models.eval.coldstart.split import SplitConfig, coldstart_split
from models.eval.metrics import FIRST_TEN, rating_scale
from models.eval.report import machine
from models.eval.stream_protocol import plan_stream, timed_replay
from models.eval.stream_runner import first_events
from models.eval.trained_methods import PrefixTrained, Recipe, TaskTrained
from models.features.text import EmbeddingCache, TextEncoder, default_encoder, with_text_features
from models.serving.recommender import Recommender
from models.training.domain_transfer import transplant
from models.training.train import default_config, meta_train

log = logging.getLogger(__name__)

RECIPES: tuple[str, ...] = ("target-only", "zero-shot", "pretrain-finetune")


@dataclass(frozen=True)
class TransferSetup:
    """How much training each recipe gets; the same architecture for source and target."""

    steps: int = 600  # outer steps of target-only and of fine-tuning (equal budgets)
    source_steps: int = 600
    batch_users: int = 64
    dim: int | None = None  # None: the trainer's default width
    seed: int = 0
    max_events: int | None = None  # first events of the target, for quick runs
    source_max_events: int | None = None
    warmup_fraction: float = 0.2
    coldstart: bool = True


def objective_for(log_: EventLog) -> str:
    return "rating" if log_.explicit else "implicit"


def _config(log_: EventLog, objective: str, setup: TransferSetup) -> ModelConfig:
    """The trainer's default config for ``log_``, without user features, in ``objective``."""
    base = default_config(log_, setup.seed, objective, context=False)  # item statistics do not transfer
    lo, hi = base.rating_min, base.rating_max
    if objective == "rating" and not log_.explicit:
        raise ValueError(f"{log_.name} has no ratings to train the rating objective on")
    return replace(
        base,
        n_user_features=0,
        objective=objective,
        rating_min=lo,
        rating_max=hi,
        dim=setup.dim or base.dim,
        head_dim=setup.dim or base.head_dim,
    )


def text_only(log_: EventLog, encoder: TextEncoder, cache: EmbeddingCache | None) -> EventLog:
    """The log with text vectors as its only item features and no user features (neither transfers)."""
    out = with_text_features(log_, encoder, cache, replace_features=True)
    return replace(out, user_features=None, user_feature_names=[])


def recipes(source_model: Recommender, objective: str, setup: TransferSetup) -> dict[str, Recipe]:
    """The three recipes, each a function from a target training log to a model for its catalogue."""

    def target_only(train: EventLog) -> Recommender:
        return meta_train(
            train,
            _config(train, objective, setup),
            steps=setup.steps,
            batch_users=setup.batch_users,
            seed=setup.seed,
        )

    def zero_shot(train: EventLog) -> Recommender:
        return transplant(source_model, train)

    def finetune(train: EventLog) -> Recommender:
        start = transplant(source_model, train, objective=objective)
        return meta_train(
            train, steps=setup.steps, batch_users=setup.batch_users, seed=setup.seed, init=start
        )

    return {"target-only": target_only, "zero-shot": zero_shot, "pretrain-finetune": finetune}


def pretrain_source(source: EventLog, target_objective: str, setup: TransferSetup) -> Recommender:
    """Meta-train on the source, in the target's objective when the source has the data for it."""
    objective = target_objective if (source.explicit or target_objective == "implicit") else "implicit"
    src = first_events(source, setup.source_max_events)
    return meta_train(
        src,
        _config(src, objective, setup),
        steps=setup.source_steps,
        batch_users=setup.batch_users,
        seed=setup.seed,
    )


def stream_scores(target: EventLog, methods: dict[str, Recipe], setup: TransferSetup) -> dict[str, Any]:
    """Stream-order (test-then-train) summaries per recipe, trained on the warm-up prefix only."""
    plan = plan_stream(first_events(target, setup.max_events), setup.warmup_fraction)
    out: dict[str, Any] = {
        "events": len(plan.log),
        "warmup_events": plan.start,
        "evaluation_points": int(plan.scored.sum()),
        "bucket_events": plan.bucket_events(),
        "methods": {},
        "seconds": {},
    }
    for name, recipe in methods.items():
        acc, seconds = timed_replay(PrefixTrained(name, recipe), plan)
        out["methods"][name] = {**acc.summary(), "hr@10_first10": acc.pooled_hr(FIRST_TEN)}
        out["seconds"][name] = round(seconds, 1)
        log.info(
            "%s stream HR@10 %.4f (first ten %.4f)",
            name,
            acc.summary()["hr@10"]["all"] or 0.0,
            acc.pooled_hr(FIRST_TEN) or 0.0,
        )
    return out


def coldstart_scores(target: EventLog, methods: dict[str, Recipe], seed: int) -> dict[str, Any]:
    """The MeLU cold-start split on an explicit target: MAE/RMSE/nDCG@3 per scenario and recipe."""
    split = coldstart_split(target, SplitConfig(seed=seed))
    train_log = target.take(split.train_events())
    train_tasks = [task_data(target, t, with_labels=True) for t in split.train_tasks]
    scale = rating_scale(train_log.values)  # errors on the rating scale too, as ``metarec evaluate`` reports
    out: dict[str, Any] = {"counts": split.counts(), "methods": {}}
    for name, recipe in methods.items():
        method = TaskTrained(name, recipe, target.item_ids)
        method.fit(train_log, train_tasks)
        scores: dict[str, Any] = {}
        for scenario, tasks in split.test_tasks.items():
            data = [task_data(target, t, with_labels=False) for t in tasks]
            predicted = method.predict(data)
            if predicted is None:
                scores[scenario] = {"mae": None, "rmse": None, "ndcg@3": None}
                continue
            scores[scenario] = scenario_metrics(predicted, [target.values[t.query] for t in tasks], scale=scale)
        out["methods"][name] = scores
    return out


def gains(stream: dict[str, Any]) -> dict[str, Any]:
    """HR@10 of the transfer recipes over target-only's, overall and on users' first ten events."""
    base = stream["methods"]["target-only"]
    out: dict[str, Any] = {}
    for name in ("zero-shot", "pretrain-finetune"):
        m = stream["methods"][name]
        out[name] = {
            "hr@10_all_ratio": _ratio(m["hr@10"]["all"], base["hr@10"]["all"]),
            "hr@10_first10_ratio": _ratio(m["hr@10_first10"], base["hr@10_first10"]),
        }
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)


def run_transfer(
    source_log: EventLog,
    target_log: EventLog,
    out_dir: str | Path | None = Path("bench/results"),
    *,
    setup: TransferSetup | None = None,
    encoder: TextEncoder | None = None,
    cache_dir: str | Path | None = Path.home() / ".cache" / "metarec" / "text",
    command: str | None = None,
) -> dict[str, Any]:
    """Run the three recipes on ``target_log`` and write ``transfer-<source>-<target>.json`` (and ``.md``)."""
    setup = setup or TransferSetup()
    encoder = encoder or default_encoder()
    cache = EmbeddingCache(cache_dir, encoder.name) if cache_dir is not None else None
    began = time.perf_counter()
    source, target = text_only(source_log, encoder, cache), text_only(target_log, encoder, cache)
    objective = objective_for(target)
    source_model = pretrain_source(source, objective, setup)
    methods = recipes(source_model, objective, setup)
    result: dict[str, Any] = {
        "source": source_log.name,
        "target": target_log.name,
        "encoder": encoder.name,
        "objective": objective,
        "source_objective": source_model.config.objective,
        "setup": asdict(setup),
        "stream": stream_scores(target, methods, setup),
    }
    result["gain"] = gains(result["stream"])
    if setup.coldstart and target.explicit:
        result["coldstart"] = coldstart_scores(target, methods, setup.seed)
    result.update(seconds=round(time.perf_counter() - began, 1), machine=machine(), command=command)
    if out_dir is not None:
        write_transfer(result, Path(out_dir))
    return result


def write_transfer(result: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"transfer-{result['source']}-{result['target']}.json"
    path.write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    log.info("wrote %s", path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def markdown(result: dict[str, Any]) -> str:
    """A table per protocol: HR@10 by bucket, and cold-start MAE by scenario where there is one."""
    stream = result["stream"]
    buckets = list(stream["bucket_events"])
    lines = [
        f"# Transfer {result['source']} -> {result['target']} ({result['encoder']})",
        "",
        "| recipe | HR@10 all | first 10 | " + " | ".join(buckets) + " |",
        "|---" * (3 + len(buckets)) + "|",
    ]
    for name, m in stream["methods"].items():
        cells = [_fmt(m["hr@10"]["all"]), _fmt(m["hr@10_first10"])] + [_fmt(m["hr@10"][b]) for b in buckets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "coldstart" in result:
        scen = list(next(iter(result["coldstart"]["methods"].values())))
        lines += [
            "",
            "| recipe (cold-start MAE) | " + " | ".join(scen) + " |",
            "|---" * (1 + len(scen)) + "|",
        ]
        for name, scores in result["coldstart"]["methods"].items():
            lines.append(f"| {name} | " + " | ".join(_fmt(scores[s]["mae"]) for s in scen) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"
