"""One way to name a dataset: ``synthetic``, a MovieLens or Last.fm folder, or an event file.

The CLI, the demo and the evaluation all resolve datasets here, so a path that works for one works for all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.data.events import EventLog


class DatasetError(ValueError):
    """The dataset could not be recognised or read; the message says what was expected."""


def load_dataset(spec: str | Path, *, seed: int = 0) -> EventLog:
    """Load ``spec``: "synthetic", a folder (MovieLens 100K/1M, Last.fm HetRec 2K) or a CSV/JSON-lines file."""
    if str(spec) == "synthetic":
        from models.data.synthetic import generate

        return generate(seed=seed)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {str(spec)!r} not found (give 'synthetic', a dataset folder or an event file)")
    if path.is_dir():
        if (path / "u.data").exists() or (path / "ratings.dat").exists():
            from models.data.movielens import load_movielens

            return load_movielens(path)
        if (path / "user_artists.dat").exists():
            from models.data.lastfm import load_lastfm

            return load_lastfm(path, seed=seed)
        raise DatasetError(f"{path} holds no known dataset (u.data, ratings.dat or user_artists.dat)")
    from models.data.generic import load_event_file

    return load_event_file(path)


def dataset_name(spec: str | Path) -> str:
    """A short name for result files: ``synthetic``, ``ml-100k``, ``hetrec2011-lastfm-2k``, a file's stem."""
    if str(spec) == "synthetic":
        return "synthetic"
    path = Path(spec)
    return path.name if path.is_dir() else path.stem


def split_by_time(log: EventLog, fraction: float) -> tuple[EventLog, EventLog]:
    """The first ``fraction`` of events in time order, and the rest."""
    ordered = log.sorted_by_time()
    cut = int(len(ordered) * fraction)
    return ordered.take(np.arange(cut)), ordered.take(np.arange(cut, len(ordered)))
