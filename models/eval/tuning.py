"""Every setting of every method chosen on the warm-up alone, never on the scored events.

The warm-up (the events every method is given before scoring starts) is replayed as a stream of its own: its
first ``VALIDATION_WARM`` (75%) warms a fresh method, its last 25% is scored test-then-train, exactly as the
scored part is later. Each setting of the method's declared grid (``models.eval.registry``) is tried this way
and the best validation score wins (HR@10 over all points; MAE for the rating predictors on explicit data;
ties go to the earlier setting). What was tried, each score and what was picked go into the results file.

metarec's rating model is chosen by its own grid on MAE (``Entry.rating_grid``); its ablations serve the
settings chosen for metarec. The peers that fall back on position popularity get the setting chosen for it,
so position-popularity is tuned first.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from models.core.targets import EventWeights
from models.data.events import EventLog
from models.eval.methods import StreamMethod
from models.eval.peers.position_popularity import DEFAULT as FALLBACK_DEFAULT
from models.eval.registry import METHODS, Setting
from models.eval.registry import build as build_method
from models.eval.stream_protocol import StreamPlan, plan_stream, replay

log = logging.getLogger(__name__)

VALIDATION_WARM = 0.75
FALLBACK = "position-popularity"


def validation_plan(prefix: EventLog) -> StreamPlan:
    """The warm-up as a stream: its first 75% warms, its last 25% is scored."""
    return plan_stream(prefix, VALIDATION_WARM)


def _score(method: StreamMethod, plan: StreamPlan, mae: bool, k: int) -> float | None:
    summary = replay(method, plan, k).summary()
    return summary["mae"] if mae else summary[f"hr@{k}"]["all"]  # type: ignore[index]


def choose(build: Callable[[Setting], StreamMethod], grid: Sequence[Setting], plan: StreamPlan, mae: bool,
           k: int = 10, label: str = "") -> dict[str, Any]:
    """Replay ``build(setting)`` for each setting on ``plan``; the record of what was tried and picked."""
    scores: list[float | None] = []
    seconds: list[float] = []
    for setting in grid:
        began = time.perf_counter()
        scores.append(_score(build(setting), plan, mae, k))
        seconds.append(round(time.perf_counter() - began, 2))
        log.info("validation %s %s: %s %s", label, setting, "MAE" if mae else f"HR@{k}", scores[-1])
    valid = [n for n, s in enumerate(scores) if s is not None]
    if valid:
        best = min(valid, key=lambda n: scores[n]) if mae else max(valid, key=lambda n: scores[n])
    else:
        best = 0  # nothing scored (no rating, no point): the first setting
    return {"criterion": "mae" if mae else f"hr@{k}", "grid": list(grid), "scores": scores,
            "seconds": seconds, "picked": dict(grid[best])}


def tuned_names(names: Sequence[str]) -> list[str]:
    """The methods whose grids are tried for ``names``: an ablation's source instead of the ablation, and
    position popularity first whenever a peer falls back on it (they take its choice)."""
    wanted = list(dict.fromkeys(METHODS[n].settings_of or n for n in names))
    if any(METHODS[n].fallback for n in wanted) and FALLBACK not in wanted:
        wanted.append(FALLBACK)  # its pick is their fallback, chosen on validation like everything else
    return sorted(wanted, key=lambda n: n != FALLBACK)


def tune_method(name: str, plan: StreamPlan, seed: int, fallback: Setting | None = None,
                k: int = 10, event_weights: EventWeights | None = None) -> dict[str, Any]:
    """Choose ``name``'s setting on the validation ``plan``; the record of ``choose``, plus its rating
    model's (``rating``) and the fallback setting it was tried with (``fixed``). ``event_weights`` reach the
    methods that take them (``Entry.weighted``), as in the scored replay."""
    entry = METHODS[name]
    explicit = plan.log.explicit
    fixed = {"fallback": dict(fallback or FALLBACK_DEFAULT)} if entry.fallback else {}

    def build(setting: Setting) -> StreamMethod:
        return build_method(name, seed, {**setting, **fixed}, event_weights)

    grid = entry.grid_for(plan.log.n_items)
    record = choose(build, grid, plan, entry.criterion == "mae" and explicit, k, name)
    if fixed:
        record["fixed"] = fixed
    if entry.rating_grid and entry.rating_trial is not None and explicit:
        trial = entry.rating_trial
        weights = (event_weights,) if entry.weighted else ()
        record["rating"] = choose(lambda setting: trial(seed, setting, *weights), entry.rating_grid, plan,
                                  True, k, f"{name} (ratings)")
    return record


def tune(prefix: EventLog, names: Sequence[str], seed: int, k: int = 10,
         event_weights: EventWeights | None = None) -> dict[str, dict[str, Any]]:
    """Choose every setting of ``names`` on ``prefix`` (the warm-up); per method, ``tune_method``'s record."""
    plan = validation_plan(prefix)
    choices: dict[str, dict[str, Any]] = {}
    for name in tuned_names(names):
        if METHODS[name].explicit_only and not prefix.explicit:
            continue
        fallback = choices[FALLBACK]["picked"] if FALLBACK in choices else None
        choices[name] = tune_method(name, plan, seed, fallback, k, event_weights)
    return choices


def chosen_setting(name: str, choices: dict[str, dict[str, Any]]) -> Setting:
    """The setting ``name`` serves with: its picked grid point, its fixed fallback, its rating model's pick.
    Empty (the method's defaults) when nothing was tuned."""
    record = choices.get(METHODS[name].settings_of or name)
    if record is None:
        return {}
    setting = {**record["picked"], **record.get("fixed", {})}
    if "rating" in record:
        setting["rating"] = record["rating"]["picked"]
    return setting
