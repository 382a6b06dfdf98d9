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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from models.core.targets import EventWeights
from models.data.events import EventLog
from models.data.registry import dataset_name, load_dataset
from models.eval import registry
from models.eval.metrics import Accumulator
from models.eval.report import write_results
from models.eval.stream_parts import Parts
from models.eval.stream_protocol import StreamPlan, plan_stream, shuffle_ties, timed_replay
from models.eval.stream_summary import summarise
from models.eval.tuning import FALLBACK, chosen_setting, tune_method, tuned_names, validation_plan
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
                     label: str = "", event_weights: EventWeights | None = None,
                     ) -> tuple[dict[str, Accumulator], dict[str, float], dict[str, Any]]:
    """Replay each named method over ``plan`` (a fresh instance each, with its setting); metric sums,
    seconds, and what methods report of their own training (``notes``: fits, epochs, fit times).
    ``event_weights``: the operator's event weights, as the worker takes them (METAREC_EVENT_WEIGHTS)."""
    results: dict[str, Accumulator] = {}
    seconds: dict[str, float] = {}
    notes: dict[str, Any] = {}
    settings = settings or {}
    with _bars(progress) as bars:
        for name in names:
            method = registry.build(name, seed, settings.get(name), event_weights)
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
    tuning_seconds: dict[str, float]
    notes: dict[str, Any] = field(default_factory=dict)
    code_versions: dict[str, str | None] = field(default_factory=dict)


class UserIndex:
    """User id strings -> one index shared by every seed (a loader may number users differently)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def of(self, user_ids: Sequence[str]) -> np.ndarray:
        return np.array([self.ids.setdefault(u, len(self.ids)) for u in user_ids], np.int64)


def _order(names: Sequence[str]) -> list[str]:
    """Replay order: position popularity first (the fallbacks take its pick), an ablation right after its
    source (metarec's variants share its trained models through the cache)."""
    ranked = sorted(names, key=lambda n: (n != FALLBACK, registry.METHODS[n].settings_of is not None))
    return ranked


def run_seed(dataset: str | Path, seed: int, names: Sequence[str], users: UserIndex, *,
             max_events: int | None, warmup_fraction: float, k: int, tuned: bool, progress: bool,
             parts: Parts | None = None, code_version: str | None = None,
             event_weights: EventWeights | None = None, tune_seed: int | None = None,
             inherited: dict[str, dict[str, Any]] | None = None) -> SeedRun:
    """One seed: its event order; per method its choice on the warm-up, then one replay of the scored part.

    With ``parts``, each method's outcome is saved as it finishes and a saved one is read instead of run
    again, so a long run can resume, and methods run in separate processes combine into one file. With
    ``tune_seed``, the methods too costly to choose per seed (``Entry.tune_once``) serve the choice made on
    that seed's warm-up: from ``inherited`` (filled when this run is that seed) or from ``parts``.
    """
    events = first_events(shuffle_ties(load_dataset(dataset, seed=seed), seed), max_events)
    plan = plan_stream(events, warmup_fraction)
    runnable = [n for n in names if events.explicit or not registry.METHODS[n].explicit_only]
    log.info("seed %d: %d events, %d warm-up, %d evaluation points", seed, len(events), plan.start,
             int(plan.scored.sum()))
    val = validation_plan(plan.prefix)
    outcomes: dict[str, dict[str, Any]] = {}
    choices: dict[str, dict[str, Any]] = {}
    for name in _order(runnable):
        saved = parts.load(seed, name) if parts is not None else None
        if saved is not None:
            outcomes[name] = saved
            choices.update(saved["choices"])
            continue
        began = time.monotonic()
        missing = [s for s in tuned_names([name]) if s not in choices and
                   (events.explicit or not registry.METHODS[s].explicit_only)] if tuned else []
        for source in missing:
            fallback = choices[FALLBACK]["picked"] if FALLBACK in choices else None
            choices[source] = _choice(source, seed, val, fallback, k, event_weights, parts, tune_seed,
                                      inherited)
        if missing:
            _forget_trained_models([name])  # the trial models are not reused (an ablation's source's are)
        tuning_seconds = time.monotonic() - began
        setting = chosen_setting(name, choices)
        accs, seconds, notes = evaluate_methods(plan, [name], seed, {name: setting}, k, progress,
                                                f"seed {seed} ", event_weights)
        outcomes[name] = {"summary": accs[name].summary(), "setting": setting, "seconds": seconds[name],
                          "tuning_seconds": round(tuning_seconds, 1), "notes": notes.get(name),
                          "user_ids": list(events.user_ids), "code_version": code_version,
                          "sums": user_sums(accs[name], np.arange(events.n_users), events.n_users),
                          "choices": {s: choices[s] for s in tuned_names([name]) if s in choices}}
        if parts is not None:
            parts.save(seed, name, outcomes[name])
    _forget_trained_models(runnable)
    facts = {"warmup_events": plan.start, "evaluation_points": int(plan.scored.sum()),
             "repeats_skipped": int(plan.repeat[plan.start:].sum()), "bucket_events": plan.bucket_events(),
             "explicit": bool(events.explicit)}
    sums = {}
    for name in runnable:
        index = users.of(outcomes[name]["user_ids"])
        pooled = UserSums.zeros(len(users.ids))
        pooled.add(_reindexed(outcomes[name]["sums"], index, len(users.ids)))
        sums[name] = pooled
    return SeedRun(seed, len(events), facts, {n: outcomes[n]["summary"] for n in runnable}, sums, choices,
                   {n: outcomes[n]["setting"] for n in runnable},
                   {n: outcomes[n]["seconds"] for n in runnable},
                   {n: outcomes[n]["tuning_seconds"] for n in runnable},
                   {n: outcomes[n]["notes"] for n in runnable if outcomes[n]["notes"]},
                   {n: outcomes[n]["code_version"] for n in runnable})


def _choice(source: str, seed: int, val: StreamPlan, fallback: dict[str, Any] | None, k: int,
            event_weights: EventWeights | None, parts: Parts | None, tune_seed: int | None,
            inherited: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """``source``'s choice for ``seed``: tuned on its warm-up, or, for a tune-once method on another seed than
    ``tune_seed``, the record made on that seed's (its fallback re-fixed to this seed's pick)."""
    entry = registry.METHODS[source]
    if entry.tune_once and tune_seed is not None and seed != tune_seed:
        record = (inherited or {}).get(source) or (parts.load_choice(tune_seed, source) if parts else None)
        if record is None:
            raise RuntimeError(f"{source} is chosen on seed {tune_seed}'s warm-up: run that seed first "
                               "(with the same --parts folder)")
        record = {**record, "chosen_on_seed": tune_seed}
        if "fixed" in record and fallback is not None:
            record["fixed"] = {"fallback": dict(fallback)}
        return record
    record = tune_method(source, val, seed, fallback, k, event_weights)
    if parts is not None:
        parts.save_choice(seed, source, record)
    if entry.tune_once and seed == tune_seed and inherited is not None:
        inherited[source] = record
    return record


def _reindexed(sums: UserSums, index: np.ndarray, n_users: int) -> UserSums:
    """``sums`` over a run's users moved to the pooled index ``index`` (U_run,)."""
    out = UserSums.zeros(n_users)
    for f in fields(UserSums):
        np.add.at(getattr(out, f.name), index, getattr(sums, f.name)[: len(index)])
    return out


def _forget_trained_models(names: Sequence[str]) -> None:
    if any(n.startswith("metarec") for n in names):
        from models.eval.metarec_methods import CACHE

        CACHE.clear()


def _tuned_once(names: Sequence[str], tune_seed: int | None) -> dict[str, Any] | None:
    once = [n for n in names if registry.METHODS[registry.METHODS[n].settings_of or n].tune_once]
    if tune_seed is None or not once:
        return None
    return {"seed": tune_seed, "methods": once,
            "why": "each setting tried is a full (meta-)training: these are chosen on one seed's warm-up and "
                   "served on every seed; every other method chooses on each seed's own warm-up"}


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
    parts: Path | None = None,
    code_version: str | None = None,
    command: str | None = None,
    event_weights: EventWeights | None = None,
    tune_seed: int | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``methods`` (default: all) on ``dataset`` with seeds ``seed .. seed + seeds - 1``; write
    stream-<dataset>.{json,md,png} to ``out``. ``tuned=False`` serves every method's defaults (quick runs);
    ``parts`` keeps each (seed, method) outcome there and reuses it (``models.eval.stream_parts``);
    ``code_version`` (e.g. a git commit) is recorded with each outcome. ``tune_seed``: the seed whose
    warm-up chooses the tune-once methods' settings for every seed (None: each seed chooses its own).
    ``note``: what the run left out or cut, and why, kept in the results."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    began = time.monotonic()
    names = list(methods) if methods else registry.default_methods()
    users = UserIndex()
    weights = dict(event_weights) if event_weights is not None else None
    store = None if parts is None else Parts(parts, dataset_name(dataset), max_events, warmup_fraction, tuned,
                                             weights)
    inherited: dict[str, dict[str, Any]] = {}
    runs = [run_seed(dataset, s, names, users, max_events=max_events, warmup_fraction=warmup_fraction, k=k,
                     tuned=tuned, progress=progress, parts=store, code_version=code_version,
                     event_weights=event_weights, tune_seed=tune_seed, inherited=inherited)
            for s in sorted(range(seed, seed + seeds), key=lambda s: s != tune_seed)]
    result = summarise(runs, len(users.ids), k)
    result = {"dataset": dataset_name(dataset), **result, "warmup_fraction": warmup_fraction,
              "event_weights": weights, "max_events": max_events, "tuned": tuned,
              "tuned_once": _tuned_once(names, tune_seed) if tuned else None,
              "wall_seconds": round(time.monotonic() - began, 1), "command": command, "note": note}
    if out is not None:
        write_results(result, out)
    return result
