"""Methods by name, so the CLI, the report, the tuning step and the tests agree on what "ease" means.

Each entry builds a fresh method from a seed and a setting (one dict of its ``grid``), and says how the
validation step (``models.eval.tuning``) chooses that setting: by HR@10, or by MAE for the rating predictors
on explicit data. A method with no settings has a grid of one empty setting. Each grid is declared beside its
model (``GRID`` in the peer's file, ``SETTINGS_GRID``/``RATING_GRID`` in ``metarec_methods``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from models.core.targets import EventWeights
from models.eval.methods import StreamMethod

Setting = dict[str, Any]
Builder = Callable[[int, Setting], StreamMethod]


@dataclass(frozen=True)
class Entry:
    """How to build a method and choose its settings."""

    build: Builder
    grid: tuple[Setting, ...] = ({},)
    criterion: str = "hr"  # "hr": HR@10; "mae": MAE on explicit data (HR@10 on implicit data)
    fallback: bool = False  # takes the position popularity's chosen setting as its cold fallback
    explicit_only: bool = False  # needs ratings (skipped on implicit data)
    peer: bool = True  # a peer of metarec (the ablations are not)
    settings_of: str | None = None  # an ablation serves the settings chosen for this method
    rating_grid: tuple[Setting, ...] = ()  # a second model predicting the ratings, chosen by MAE
    rating_trial: Builder | None = None  # builds that model alone for a rating_grid trial
    default: bool = True  # in the method list when none is named
    weighted: bool = False  # takes the operator's event weights (the metarec methods, as the worker)
    tune_once: bool = False  # too costly to choose per seed: chosen on one seed's warm-up, served on all
    large_grid: tuple[Setting, ...] | None = None  # the grid above ``large_items`` items (costly trials)
    large_items: int = 0

    def grid_for(self, n_items: int) -> tuple[Setting, ...]:
        return self.large_grid if self.large_grid is not None and n_items > self.large_items else self.grid


def _lazy(module: str, cls: str, **fixed: Any) -> Builder:
    def build(seed: int, setting: Setting) -> StreamMethod:
        return getattr(importlib.import_module(module), cls)(seed=seed, **fixed, **setting)

    return build


def _grid(module: str) -> tuple[Setting, ...]:
    return importlib.import_module(module).GRID


def _metarec(variant: str) -> Builder:
    def build(seed: int, setting: Setting, event_weights: EventWeights | None = None) -> StreamMethod:
        from models.eval.metarec_methods import Schedule, build_metarec, schedule_for

        base = Schedule(event_weights=event_weights)
        return build_metarec(variant, seed, schedule_for(setting, base) if setting else base)

    return build


def _metarec_rating_trial(seed: int, setting: Setting,
                          event_weights: EventWeights | None = None) -> StreamMethod:
    from models.eval.metarec_methods import rating_trial

    return rating_trial(seed, setting, event_weights)


def _entries() -> dict[str, Entry]:
    from models.eval.metarec_methods import LARGE_CATALOGUE, LARGE_SETTINGS_GRID, RATING_GRID, SETTINGS_GRID

    peers = "models.eval.peers."
    decays = tuple({"half_life_days": d} for d in (0.5, 1.0, 3.0, 7.0, 14.0, 30.0, 90.0, 365.0))
    isgd = tuple({"factors": f, "lr": lr, "reg": reg}
                 for f in (10, 50) for lr in (0.05, 0.1) for reg in (0.01, 0.1))
    river = tuple({"factors": f, "latent_lr": lr, "l2": l2}
                  for f in (10, 50) for lr in (0.01, 0.05) for l2 in (0.0, 0.01))
    return {
        "popularity": Entry(_lazy("models.eval.baselines", "Popularity")),
        "decayed-popularity": Entry(_lazy("models.eval.baselines", "DecayedPopularity"), decays),
        "position-popularity": Entry(_lazy(peers + "position_popularity", "PositionPopularity"),
                                     _grid(peers + "position_popularity")),
        "item-knn": Entry(_lazy("models.eval.baselines", "ItemKNN")),
        "item-knn-pos": Entry(_lazy(peers + "item_knn", "ItemKNNFallback"), _grid(peers + "item_knn"),
                              fallback=True),
        "session-knn": Entry(_lazy(peers + "session_knn", "SessionKNN"), _grid(peers + "session_knn"),
                             fallback=True),
        "ease": Entry(_lazy(peers + "ease", "EASE"), _grid(peers + "ease"), fallback=True),
        "sasrec": Entry(_lazy(peers + "sasrec", "SASRec"), _grid(peers + "sasrec"), fallback=True,
                        tune_once=True),
        "isgd": Entry(_lazy("models.eval.isgd", "ISGD"), isgd),
        "river-biasedmf": Entry(_lazy("models.eval.river_mf", "RiverBiasedMF"), river, criterion="mae"),
        "item-cf": Entry(_lazy(peers + "item_cf", "ItemCF"), _grid(peers + "item_cf"), criterion="mae",
                         explicit_only=True),
        "metarec": Entry(_metarec("metarec"), SETTINGS_GRID, peer=False, weighted=True, tune_once=True,
                         large_grid=LARGE_SETTINGS_GRID, large_items=LARGE_CATALOGUE, rating_grid=RATING_GRID,
                         rating_trial=_metarec_rating_trial),
        "metarec-no-adapt": Entry(_metarec("metarec-no-adapt"), peer=False, weighted=True,
                                  settings_of="metarec"),
        "metarec-finetune": Entry(_metarec("metarec-finetune"), peer=False, weighted=True,
                                  settings_of="metarec"),
        # metarec scoring the whole catalogue instead of its retrieved candidates (only when named)
        "metarec-full": Entry(_metarec("metarec-full"), peer=False, weighted=True, settings_of="metarec",
                              default=False),
    }


METHODS: dict[str, Entry] = _entries()


def parse_methods(spec: str | None) -> list[str]:
    """A comma list of method names (None or "all": every default method), validated; order kept, no
    duplicates."""
    if spec is None or spec.strip() in ("", "all"):
        return default_methods()
    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return names


def default_methods() -> list[str]:
    """Every method but the ablations that run only when named."""
    return [name for name, entry in METHODS.items() if entry.default]


def build(name: str, seed: int, setting: Setting | None = None,
          event_weights: EventWeights | None = None) -> StreamMethod:
    """A fresh method with ``setting``; ``event_weights`` (the operator's, ``models.core.targets``) reach the
    metarec methods, which serve as the worker does (support targets, item statistics); the peers take every
    event."""
    entry = METHODS[name]
    if entry.weighted:
        return entry.build(seed, setting or {}, event_weights)  # type: ignore[call-arg]
    return entry.build(seed, setting or {})
