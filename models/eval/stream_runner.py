"""Run the stream protocol end to end: load a dataset, replay every method, write the result files.

This is what ``metarec evaluate --protocol stream`` calls; the CLI only parses arguments.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from models.data.events import EventLog
from models.data.registry import dataset_name, load_dataset
from models.eval import registry
from models.eval.metrics import Accumulator
from models.eval.report import machine, write_results
from models.eval.stream_protocol import StreamPlan, plan_stream, timed_replay

log = logging.getLogger(__name__)


def first_events(log_: EventLog, max_events: int | None) -> EventLog:
    """The earliest ``max_events`` events (all if None), in time order."""
    ordered = log_.sorted_by_time()
    if max_events is None or max_events >= len(ordered):
        return ordered
    return ordered.take(np.arange(max_events))


@contextlib.contextmanager
def _bars(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bars:
        yield bars


def evaluate_methods(plan: StreamPlan, names: Sequence[str], seed: int, k: int = 10,
                     progress: bool = False) -> tuple[dict[str, Accumulator], dict[str, float]]:
    """Replay each named method over ``plan`` (fresh instance each, same seed); metric sums and seconds."""
    results: dict[str, Accumulator] = {}
    seconds: dict[str, float] = {}
    with _bars(progress) as bars:
        for name in names:
            method = registry.build(name, seed)
            advance = None
            if bars is not None:
                task = bars.add_task(name, total=len(plan.log) - plan.start)

                def advance(n: int, task: Any = task) -> None:
                    bars.advance(task, n)

            results[name], seconds[name] = timed_replay(method, plan, k, advance)
    return results, seconds


def run_stream(
    dataset: str | Path,
    *,
    out: Path | None = Path("bench/results"),
    seed: int = 0,
    methods: Sequence[str] | None = None,
    max_events: int | None = None,
    warmup_fraction: float = 0.2,
    k: int = 10,
    progress: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``methods`` (default: all) on ``dataset``; write stream-<dataset>.{json,md,png} to ``out``."""
    began = time.monotonic()
    names = list(methods) if methods else list(registry.DEFAULT)
    events = first_events(load_dataset(dataset, seed=seed), max_events)
    plan = plan_stream(events, warmup_fraction)
    log.info("%s: %d events, %d warm-up, %d evaluation points", dataset_name(dataset), len(events),
             plan.start, int(plan.scored.sum()))
    accs, seconds = evaluate_methods(plan, names, seed, k, progress)
    result: dict[str, Any] = {
        "dataset": dataset_name(dataset),
        "events": len(events),
        "bucket_events": plan.bucket_events(),
        "methods": {name: acc.summary() for name, acc in accs.items()},
        f"first_ten_hr@{k}": {name: acc.pooled_hr() for name, acc in accs.items()},  # buckets 0 to 5-9
        "seed": seed,
        "warmup_fraction": warmup_fraction,
        "warmup_events": plan.start,
        "evaluation_points": int(plan.scored.sum()),
        "repeats_skipped": int(plan.repeat[plan.start:].sum()),
        "explicit": bool(events.explicit),
        "max_events": max_events,
        "seconds": {name: round(s, 2) for name, s in seconds.items()},
        "wall_seconds": round(time.monotonic() - began, 1),  # the whole run: loading, planning, every method
        "machine": machine(),
        "command": command,
    }
    if out is not None:
        write_results(result, out)
    return result
