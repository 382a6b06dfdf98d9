"""Each (seed, method) outcome of a stream run kept on disk, so a long run resumes and split runs combine.

A part holds what the summary needs (the method's summary, its per-user sums keyed by user id, its choices on
the warm-up, its setting, seconds and training notes) and the run's key (data set, event limit, warm-up share,
tuned or not, event weights if given). A part whose key differs is ignored. Parts are a cache of one version
of the code: the version given to the run is stored with each part and reported per method in the results
(``code_versions``), so a file combining parts made by different code says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from models.eval.uncertainty import UserSums

log = logging.getLogger(__name__)


class Parts:
    """The parts of one run's key under ``root/<dataset>/seed<N>/<method>.json``."""

    def __init__(self, root: Path, dataset: str, max_events: int | None, warmup_fraction: float,
                 tuned: bool, event_weights: dict[str, float] | None = None) -> None:
        self.folder = Path(root) / dataset
        self.key: dict[str, Any] = {"dataset": dataset, "max_events": max_events,
                                    "warmup_fraction": warmup_fraction, "tuned": tuned}
        if event_weights is not None:  # the operator's weights change metarec's outcomes
            self.key["event_weights"] = event_weights

    def path(self, seed: int, name: str) -> Path:
        return self.folder / f"seed{seed}" / f"{name}.json"

    def save(self, seed: int, name: str, outcome: dict[str, Any]) -> None:
        sums: UserSums = outcome["sums"]
        arrays = {f.name: getattr(sums, f.name).tolist() for f in fields(sums)}
        data = {**outcome, "key": self.key, "sums": arrays}
        path = self.path(seed, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)  # a part is whole or absent

    def choice_path(self, seed: int, source: str) -> Path:
        return self.folder / f"seed{seed}" / "choices" / f"{source}.json"

    def save_choice(self, seed: int, source: str, record: dict[str, Any]) -> None:
        """A tuned method's choice on ``seed``'s warm-up, kept as soon as it is made, so runs of other seeds
        that serve it (``Entry.tune_once``) can start while this seed's replay goes on."""
        path = self.choice_path(seed, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "record": record}))
        tmp.replace(path)

    def load_choice(self, seed: int, source: str) -> dict[str, Any] | None:
        path = self.choice_path(seed, source)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return data["record"] if data.get("key") == self.key else None

    def load(self, seed: int, name: str) -> dict[str, Any] | None:
        path = self.path(seed, name)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if data.get("key") != self.key:
            log.warning("ignoring %s: made for %s, not %s", path, data.get("key"), self.key)
            return None
        data["sums"] = UserSums(**{k: np.asarray(v, np.float64) for k, v in data["sums"].items()})
        log.info("seed %d %s: read from %s (code %s)", seed, name, path, data.get("code_version"))
        return data
