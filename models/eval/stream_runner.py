"""Run the stream protocol end to end: load a dataset, per seed choose settings and replay, write the results.

This is what ``metarec evaluate --protocol stream`` calls; the CLI only parses arguments. Per seed: the events
are put in time order with that seed's order of same-second ties (and, on Last.fm, the loader's seeded dates),
every method's settings are chosen on the warm-up alone (``models.eval.tuning``), and then the scored part is
replayed once with those settings. ``models.eval.stream_summary`` pools the seeds and adds the intervals.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from models.data.events import EventLog
from models.data.registry import dataset_name, load_dataset
from models.eval import registry
from models.eval.metrics import Accumulator
from models.eval.report import write_results
from models.eval.stream_protocol import StreamPlan, plan_stream, shuffle_ties, timed_replay
from models.eval.stream_summary import summarise
from models.eval.tuning import chosen_setting, tune
from models.eval.uncertainty import UserSums, user_sums

log = logging.getLogger(__name__)


def first_events(log_: EventLog, max_events: int | None) -> EventLog:
    """The earliest ``max_events`` events (all if None), in time order (ties keep their order)."""
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

    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bars:
        yield bars


def evaluate_methods(plan: StreamPlan, names: Sequence[str], seed: int,
                     settings: dict[str, dict[str, Any]] | None = None, k: int = 10, progress: bool = False,
                     label: str = "") -> tuple[dict[str, Accumulator], dict[str, float], dict[str, Any]]:
    """Replay each named method over ``plan`` (a fresh instance each, with its setting); metric sums,
    seconds, and what methods report of their own training (``notes``: fits, epochs, fit times)."""
    results: dict[str, Accumulator] = {}
    seconds: dict[str, float] = {}
    notes: dict[str, Any] = {}
    settings = settings or {}
    with _bars(progress) as bars:
        for name in names:
            method = registry.build(name, seed, settings.get(name))
            advance = None
            if bars is not None:
                task = bars.add_task(f"{label}{name}", total=len(plan.log) - plan.start)

                def advance(n: int, task: Any = task) -> None:
                    bars.advance(task, n)

            results[name], seconds[name] = timed_replay(method, plan, k, advance)
            if getattr(method, "notes", None):
                notes[name] = method.notes  # type: ignore[attr-defined]
    return results, seconds, notes


@dataclass
class SeedRun:
    """What one seed leaves for the summary: per-method summaries and per-user sums, not the raw points."""

    seed: int
    events: int
    plan: dict[str, Any]
    summaries: dict[str, dict[str, Any]]
    sums: dict[str, UserSums]
    choices: dict[str, dict[str, Any]]
    settings: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    tuning_seconds: float
    notes: dict[str, Any] = field(default_factory=dict)


class UserIndex:
    """User id strings -> one index shared by every seed (a loader may number users differently)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def of(self, user_ids: Sequence[str]) -> np.ndarray:
        return np.array([self.ids.setdefault(u, len(self.ids)) for u in user_ids], np.int64)


def run_seed(dataset: str | Path, seed: int, names: Sequence[str], users: UserIndex, *, max_events: int | None,
             warmup_fraction: float, k: int, tuned: bool, progress: bool) -> SeedRun:
    """One seed: its event order, its choices on the warm-up, then one replay of the scored part."""
    events = first_events(shuffle_ties(load_dataset(dataset, seed=seed), seed), max_events)
    plan = plan_stream(events, warmup_fraction)
    runnable = [n for n in names if events.explicit or not registry.METHODS[n].explicit_only]
    log.info("seed %d: %d events, %d warm-up, %d evaluation points", seed, len(events), plan.start,
             int(plan.scored.sum()))
    began = time.monotonic()
    choices = tune(plan.prefix, runnable, seed, k) if tuned else {}
    tuning_seconds = time.monotonic() - began
    _forget_trained_models(runnable)  # the trial models are not reused: free them
    settings = {n: chosen_setting(n, choices) for n in runnable}
    accs, seconds, notes = evaluate_methods(plan, runnable, seed, settings, k, progress, f"seed {seed} ")
    _forget_trained_models(runnable)
    index = users.of(events.user_ids)
    n_users = len(users.ids)
    facts = {"warmup_events": plan.start, "evaluation_points": int(plan.scored.sum()),
             "repeats_skipped": int(plan.repeat[plan.start:].sum()), "bucket_events": plan.bucket_events(),
             "explicit": bool(events.explicit)}
    return SeedRun(seed, len(events), facts, {n: a.summary() for n, a in accs.items()},
                   {n: user_sums(a, index, n_users) for n, a in accs.items()}, choices, settings, seconds,
                   tuning_seconds, notes)


def _forget_trained_models(names: Sequence[str]) -> None:
    if any(n.startswith("metarec") for n in names):
        from models.eval.metarec_methods import CACHE

        CACHE.clear()


def run_stream(
    dataset: str | Path,
    *,
    out: Path | None = Path("bench/results"),
    seed: int = 0,
    seeds: int = 1,
    methods: Sequence[str] | None = None,
    max_events: int | None = None,
    warmup_fraction: float = 0.2,
    k: int = 10,
    tuned: bool = True,
    progress: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``methods`` (default: all) on ``dataset`` with seeds ``seed .. seed + seeds - 1``; write
    stream-<dataset>.{json,md,png} to ``out``. ``tuned=False`` serves every method's defaults (quick runs)."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    began = time.monotonic()
    names = list(methods) if methods else list(registry.METHODS)
    users = UserIndex()
    runs = [run_seed(dataset, s, names, users, max_events=max_events, warmup_fraction=warmup_fraction, k=k,
                     tuned=tuned, progress=progress) for s in range(seed, seed + seeds)]
    result = summarise(runs, len(users.ids), k)
    result = {"dataset": dataset_name(dataset), **result, "warmup_fraction": warmup_fraction,
              "max_events": max_events, "tuned": tuned,
              "wall_seconds": round(time.monotonic() - began, 1), "command": command}
    if out is not None:
        write_results(result, out)
    return result
