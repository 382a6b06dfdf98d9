"""Methods by name, so the CLI, the report and the tests agree on what "isgd" or "metarec" means.

Each factory takes the seed and returns a fresh method; the metarec ones are imported lazily, because they
need the meta-learner (torch) and the baselines do not.
"""

from __future__ import annotations

from typing import Callable

from models.eval.methods import StreamMethod

Factory = Callable[[int], StreamMethod]


def _popularity(seed: int) -> StreamMethod:
    from models.eval.baselines import Popularity

    return Popularity(seed)


def _decayed(seed: int) -> StreamMethod:
    from models.eval.baselines import DecayedPopularity

    return DecayedPopularity(seed)


def _knn(seed: int) -> StreamMethod:
    from models.eval.baselines import ItemKNN

    return ItemKNN(seed)


def _isgd(seed: int) -> StreamMethod:
    from models.eval.isgd import ISGD

    return ISGD(seed)


def _river(seed: int) -> StreamMethod:
    from models.eval.river_mf import RiverBiasedMF

    return RiverBiasedMF(seed)


def _metarec(variant: str) -> Factory:
    def build(seed: int) -> StreamMethod:
        from models.eval.metarec_methods import build_metarec

        return build_metarec(variant, seed)

    return build


BASELINES: dict[str, Factory] = {
    "popularity": _popularity,
    "decayed-popularity": _decayed,
    "item-knn": _knn,
    "isgd": _isgd,
    "river-biasedmf": _river,
}
METAREC: dict[str, Factory] = {
    name: _metarec(name) for name in ("metarec", "metarec-no-adapt", "metarec-finetune")
}
DEFAULT: dict[str, Factory] = {**BASELINES, **METAREC}
ABLATIONS: dict[str, Factory] = {"metarec-full": _metarec("metarec-full")}  # only when named
METHODS: dict[str, Factory] = {**DEFAULT, **ABLATIONS}


def parse_methods(spec: str | None) -> list[str]:
    """A comma list of method names (None or "all": every method), validated; order kept, no duplicates."""
    if spec is None or spec.strip() in ("", "all"):
        return list(DEFAULT)
    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return names


def build(name: str, seed: int) -> StreamMethod:
    return METHODS[name](seed)
