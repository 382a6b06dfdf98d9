"""The cold-start evaluation on the MeLU protocol: split, fit every method on the warm tasks, score four
scenarios.

Every method is fitted on one log holding only the training tasks' events (existing users x existing items)
and then predicts each test task's query ratings from its support. The split is in ``coldstart_split``, the
metrics in ``coldstart_metrics``, the files in ``coldstart_report``.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from models.data.events import EventLog
from models.eval.coldstart.methods import (ColdStartMethod, GlobalMean, ItemBiasUserOffset, TaskData, UserMedian,
                                           task_data)
from models.eval.coldstart.metrics import scenario_metrics
from models.eval.coldstart.report import write_results
from models.eval.coldstart.split import SCENARIOS, ColdStartSplit, SplitConfig, coldstart_split
from models.eval.metrics import rating_scale

logger = logging.getLogger(__name__)


def _melu(seed: int, progress: bool) -> ColdStartMethod:
    from models.eval.coldstart.melu import MeLU, MeLUConfig

    return MeLU(MeLUConfig(seed=seed, **TUNED_MELU), name="melu")


def _melu_paper(seed: int, progress: bool) -> ColdStartMethod:
    from models.eval.coldstart.melu import MeLU, MeLUConfig

    return MeLU(MeLUConfig(seed=seed), name="melu_paper_lr")


def _metarec(seed: int, progress: bool) -> ColdStartMethod:
    from models.eval.coldstart.metarec import MetarecColdStart

    return MetarecColdStart(seed=seed, progress=progress)


TUNED_MELU: dict[str, float] = {"local_lr": 1e-3, "global_lr": 1e-3}
"""MeLU's learning rates for the ``melu`` row (the paper's 5e-6 / 5e-5 are the ``melu_paper_lr`` row).

Chosen on a 20% validation split of the ML-100K training tasks (validation MAE: paper lrs 1.090 -- 30 epochs
at 5e-5 leave the output far from the rating scale; 5e-3/1e-3 0.856; 1e-3/1e-3 0.837; 5e-4/5e-4 0.854).
"""

METHODS: dict[str, Callable[[int, bool], ColdStartMethod]] = {
    "global_mean": lambda seed, progress: GlobalMean(),
    "user_median": lambda seed, progress: UserMedian(),
    "item_bias_user_offset": lambda seed, progress: ItemBiasUserOffset(),
    "melu_paper_lr": _melu_paper,
    "melu": _melu,
    "metarec": _metarec,
}
DEFAULT_METHODS: tuple[str, ...] = ("global_mean", "user_median", "item_bias_user_offset", "melu_paper_lr", "melu",
                                     "metarec")


def training_inputs(log_: EventLog, split: ColdStartSplit) -> tuple[EventLog, list[TaskData]]:
    """The one log and task list every method is fitted on: the training tasks' events and nothing else."""
    return log_.take(split.train_events()), [task_data(log_, t, with_labels=True) for t in split.train_tasks]


def evaluate_method(
    method: ColdStartMethod, log_: EventLog, split: ColdStartSplit, clip: tuple[float, float],
    scale: tuple[float, ...] | None = None,
) -> dict[str, dict[str, float]]:
    """Fit ``method`` on the training tasks, then score its query predictions in every scenario (on the
    rating ``scale`` too, when given: the levels of the training ratings)."""
    train_log, train_tasks = training_inputs(log_, split)
    method.fit(train_log, train_tasks)
    scores = {}
    for name in SCENARIOS:
        tasks = split.test_tasks[name]
        preds = method.predict([task_data(log_, t, with_labels=False) for t in tasks]) if tasks else []
        preds = [np.clip(np.asarray(p, np.float64), *clip) for p in preds]
        scores[name] = scenario_metrics(preds, [log_.values[t.query] for t in tasks], scale=scale)
    return scores


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run the methods on one intra-op thread, then restore the setting.

    Their matmuls are tiny (batches of 32 tasks, 64-wide layers): on a shared two-core machine a second thread
    only adds synchronisation, measured 2-5x slower for MeLU's training.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("cold-start {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )


def _machine() -> str:
    return f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs (shared)"


def run_coldstart(
    log: EventLog,
    out_dir: Path,
    dataset_name: str,
    seed: int = 0,
    methods: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the MeLU-protocol cold-start evaluation on an explicit ``log``; write and return the result.

    Writes ``coldstart-<dataset_name>.{json,md,png}`` under ``out_dir``.
    """
    names = list(methods or DEFAULT_METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown cold-start methods {unknown}; known: {sorted(METHODS)}")
    if not log.explicit:
        raise ValueError(f"{dataset_name}: the cold-start protocol needs explicit ratings")
    started = time.monotonic()
    split = coldstart_split(log, SplitConfig(seed=seed))
    train_vals = log.values[split.train_events()]
    clip = (float(np.nanmin(train_vals)), float(np.nanmax(train_vals)))
    scale = rating_scale(train_vals)
    result: dict[str, Any] = {"dataset": dataset_name, "methods": {}, "seed": seed, "counts": split.counts()}
    details: dict[str, Any] = {}
    with _progress(progress) as bar, _one_torch_thread():
        job = bar.add_task("methods", total=len(names)) if bar is not None else None
        for name in names:
            if bar is not None:
                bar.update(job, description=name)
            method_started = time.monotonic()
            method = METHODS[name](seed, progress)
            result["methods"][name] = evaluate_method(method, log, split, clip, scale)
            describe = getattr(method, "describe", None)
            details[name] = {
                "seconds": round(time.monotonic() - method_started, 1),
                **(describe() if callable(describe) else {}),
            }
            logger.info("cold-start %s: %s", name, result["methods"][name])
            if bar is not None:
                bar.advance(job)
    result.update(
        details=details,
        machine=_machine(),
        command=" ".join(sys.argv),
        seconds=round(time.monotonic() - started, 1),
    )
    write_results(result, Path(out_dir))
    return result
