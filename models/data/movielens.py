"""MovieLens (100K and 1M layouts) as an explicit-rating EventLog with item and user side tables.

Two layouts are recognised by their file names:

* ML-100K: ``u.data`` (tab: user, item, rating, ts), ``u.item`` (pipe, ISO-8859-1: id, title, release date,
  video date, URL, 19 genre flags), ``u.user`` (pipe: id, age, gender, occupation, zip).
* ML-1M: ``ratings.dat`` / ``movies.dat`` / ``users.dat``, ``::``-separated, genres as ``A|B``, the year in
  the title, age as a group code and occupation as a number 0-20.

Side tables, indexed by the dense ids of the log (only items/users that have ratings appear):

* ``item_features``: genre multi-hot (``genre:<name>``) and ``year`` = release year min-max scaled to [0, 1]
  (a missing year gets the median). ``item_text``: "title | genre, genre".
* ``user_features``: ``age`` min-max scaled to [0, 1], ``gender:F``/``gender:M``, occupation one-hot
  (``occupation:<name>``) and the first zip digit one-hot (``zip:0`` .. ``zip:9``, ``zip:other`` for
  non-numeric codes such as Canadian ones). The zip prefix is a field MeLU embeds.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from models.data.events import EventLog, build_log

log = logging.getLogger(__name__)

ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
ZIP_PREFIXES: tuple[str, ...] = tuple("0123456789") + ("other",)
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class _Movie:
    title: str
    year: float  # NaN when unknown
    genres: list[str]


@dataclass
class _User:
    age: float
    gender: str
    occupation: str
    zip_code: str


def _lines(path: Path, encoding: str) -> list[str]:
    with path.open(encoding=encoding, newline="") as fh:
        return [line.rstrip("\r") for line in fh.read().split("\n") if line.strip()]


def _year_from_date(text: str) -> float:
    """``01-Jan-1995`` -> 1995.0; empty or malformed -> NaN (one ML-100K movie has no date)."""
    try:
        return float(datetime.strptime(text.strip(), "%d-%b-%Y").year)
    except ValueError:
        return float("nan")


def _year_from_title(title: str) -> float:
    match = _YEAR_IN_TITLE.search(title)
    return float(match.group(1)) if match else float("nan")


def _read_100k(folder: Path) -> tuple[list[list[str]], dict[str, _Movie], dict[str, _User], list[str]]:
    ratings = [line.split("\t") for line in _lines(folder / "u.data", "iso-8859-1")]
    movies: dict[str, _Movie] = {}
    item_path = folder / "u.item"
    for line in _lines(item_path, "iso-8859-1") if item_path.exists() else []:
        parts = line.split("|")
        flags = parts[5:]
        genres = [g for g, f in zip(ML100K_GENRES, flags) if f.strip() == "1"]
        movies[parts[0]] = _Movie(parts[1], _year_from_date(parts[2]), genres)
    users: dict[str, _User] = {}
    user_path = folder / "u.user"
    for line in _lines(user_path, "iso-8859-1") if user_path.exists() else []:
        uid, age, gender, occupation, zip_code = line.split("|")[:5]
        users[uid] = _User(float(age), gender, occupation, zip_code)
    occ_path = folder / "u.occupation"
    occupations = (
        _lines(occ_path, "iso-8859-1")
        if occ_path.exists()
        else sorted({u.occupation for u in users.values()})
    )
    return ratings, movies, users, occupations


def _read_1m(folder: Path) -> tuple[list[list[str]], dict[str, _Movie], dict[str, _User], list[str]]:
    ratings = [line.split("::") for line in _lines(folder / "ratings.dat", "iso-8859-1")]
    movies: dict[str, _Movie] = {}
    movie_path = folder / "movies.dat"
    for line in _lines(movie_path, "iso-8859-1") if movie_path.exists() else []:
        mid, title, genres = line.split("::")[:3]
        movies[mid] = _Movie(title, _year_from_title(title), [g for g in genres.split("|") if g])
    users: dict[str, _User] = {}
    user_path = folder / "users.dat"
    for line in _lines(user_path, "iso-8859-1") if user_path.exists() else []:
        uid, gender, age, occupation, zip_code = line.split("::")[:5]
        occ = int(occupation)
        name = ML1M_OCCUPATIONS[occ] if 0 <= occ < len(ML1M_OCCUPATIONS) else "other"
        users[uid] = _User(float(age), gender, name, zip_code)
    return ratings, movies, users, list(ML1M_OCCUPATIONS)


def _min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; NaN becomes the median; a constant column becomes 0."""
    out = values.astype(np.float64).copy()
    known = ~np.isnan(out)
    if not known.any():
        return np.zeros_like(out, np.float32)
    out[~known] = np.median(out[known])
    lo, hi = out.min(), out.max()
    return ((out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)).astype(np.float32)


def _item_tables(item_ids: list[str], movies: dict[str, _Movie], genre_order: list[str]):
    """(features (n_items, G + 1), names, texts) with genre multi-hot then the scaled year."""
    column = {g: j for j, g in enumerate(genre_order)}
    features = np.zeros((len(item_ids), len(genre_order) + 1), np.float32)
    years = np.full(len(item_ids), np.nan)
    texts: list[str] = []
    for row, mid in enumerate(item_ids):
        movie = movies.get(mid, _Movie(f"movie {mid}", float("nan"), []))
        for genre in movie.genres:
            features[row, column[genre]] = 1.0
        years[row] = movie.year
        texts.append(f"{movie.title} | {', '.join(movie.genres)}" if movie.genres else movie.title)
    features[:, -1] = _min_max(years)
    return features, [f"genre:{g}" for g in genre_order] + ["year"], texts


def _zip_prefix(zip_code: str) -> str:
    head = zip_code.strip()[:1]
    return head if head.isdigit() else "other"


def _user_tables(user_ids: list[str], users: dict[str, _User], occupations: list[str]):
    """(features (n_users, 1 + 2 + O + 11), names): scaled age, gender, occupation and zip-prefix one-hots."""
    names = ["age", "gender:F", "gender:M"] + [f"occupation:{o}" for o in occupations]
    names += [f"zip:{z}" for z in ZIP_PREFIXES]
    column = {n: j for j, n in enumerate(names)}
    features = np.zeros((len(user_ids), len(names)), np.float32)
    ages = np.full(len(user_ids), np.nan)
    for row, uid in enumerate(user_ids):
        user = users.get(uid)
        if user is None:
            continue
        ages[row] = user.age
        for key in (
            f"gender:{user.gender}",
            f"occupation:{user.occupation}",
            f"zip:{_zip_prefix(user.zip_code)}",
        ):
            if key in column:
                features[row, column[key]] = 1.0
    features[:, 0] = _min_max(ages)
    return features, names


def load_movielens(path: str | Path) -> EventLog:
    """Load an ML-100K or ML-1M folder as an explicit EventLog (values = ratings, type "rating")."""
    folder = Path(path)
    if (folder / "u.data").exists():
        ratings, movies, users, occupations = _read_100k(folder)
        genre_order = list(ML100K_GENRES)
    elif (folder / "ratings.dat").exists():
        ratings, movies, users, occupations = _read_1m(folder)
        genre_order = sorted({g for m in movies.values() for g in m.genres})
    else:
        raise FileNotFoundError(f"{folder} holds neither u.data (ML-100K) nor ratings.dat (ML-1M)")
    bad = [r for r in ratings if len(r) < 4]
    if bad:
        raise ValueError(f"{folder.name}: expected user, item, rating, timestamp; got {bad[0]!r}")
    genre_order += sorted({g for m in movies.values() for g in m.genres} - set(genre_order))
    events = build_log(
        [r[0] for r in ratings],
        [r[1] for r in ratings],
        np.array([float(r[3]) for r in ratings], np.float64),
        values=np.array([float(r[2]) for r in ratings], np.float32),
        types=["rating"] * len(ratings),
        name=folder.name,
        explicit=True,
    )
    events.item_features, events.item_feature_names, events.item_text = _item_tables(
        events.item_ids, movies, genre_order
    )
    events.user_features, events.user_feature_names = _user_tables(events.user_ids, users, occupations)
    log.info("loaded %s: %d ratings, %d users, %d items", folder, len(events), events.n_users, events.n_items)
    return events
