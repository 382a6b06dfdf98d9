"""Last.fm HetRec 2011 (2K users) as an EventLog: implicit play counts, artists as items, tags as side data.

``user_artists.dat`` holds one row per (user, artist) with the total play count, and no time. The stream-order
evaluation needs an order, so each pair gets a timestamp by this rule (deterministic for a given ``seed``):

1. A pair the user also tagged (``user_taggedartists.dat``) happens on the earliest day the user tagged that
   artist: the listener had found the artist by then.
2. A pair the user never tagged happens on a day drawn uniformly from the user's own tagging span (their first
   to their last tag date over all artists), or from the dataset's tagging span if the user tagged nothing.
3. Within its day every event gets a uniformly drawn second, so users interleave instead of queuing by id.

Tag dates before 2005-01-01 (a handful, back to 1956, a known quirk of the data) are clipped to that day,
since they would otherwise stretch users' spans over decades. About 22% of the pairs are ordered by rule 1.

Item side data: a multi-hot matrix over the ``top_tags`` most used tags (an artist has a tag if anyone tagged
it so), and ``item_text`` = "name | tag, tag, ..." with the artist's most used tags, for text encoders.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from models.data.events import EventLog, build_log

log = logging.getLogger(__name__)

DAY_S = 86400.0
EARLIEST_TAG_DAY = datetime(2005, 1, 1, tzinfo=timezone.utc).timestamp()
TEXT_TAGS = 5  # tag words per artist in item_text


def _rows(path: Path, encoding: str) -> list[list[str]]:
    """Tab-separated rows without the header; the files mix CRLF and LF, so trailing \r is stripped."""
    with path.open(encoding=encoding, newline="") as fh:
        lines = fh.read().splitlines()
    return [line.rstrip("\r").split("\t") for line in lines[1:] if line.strip()]


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: a Last.fm HetRec 2K folder needs {name}")
    return path


def _day(day: str, month: str, year: str) -> float:
    stamp = datetime(int(year), int(month), int(day), tzinfo=timezone.utc).timestamp()
    return max(stamp, EARLIEST_TAG_DAY)


def _tag_days(rows: list[list[str]]) -> tuple[dict[tuple[str, str], float], dict[str, tuple[float, float]]]:
    """Earliest tag day per (user, artist), and each user's (first, last) tag day over all artists."""
    first: dict[tuple[str, str], float] = {}
    span: dict[str, tuple[float, float]] = {}
    for user, artist, _tag, day, month, year in rows:
        stamp = _day(day, month, year)
        key = (user, artist)
        first[key] = min(first.get(key, stamp), stamp)
        lo, hi = span.get(user, (stamp, stamp))
        span[user] = (min(lo, stamp), max(hi, stamp))
    return first, span


def _pair_times(
    pairs: list[tuple[str, str]],
    first: dict[tuple[str, str], float],
    span: dict[str, tuple[float, float]],
    rng: np.random.Generator,
) -> np.ndarray:
    """Timestamps for the (user, artist) pairs by the module's rule; two seeded draws per pair, in order."""
    all_days = np.array([d for pair in span.values() for d in pair]) if span else np.array([EARLIEST_TAG_DAY])
    default_span = (float(all_days.min()), float(all_days.max()))
    day_draw = rng.random(len(pairs))
    second_draw = rng.random(len(pairs)) * DAY_S
    ts = np.empty(len(pairs), np.float64)
    for n, (user, artist) in enumerate(pairs):
        tagged = first.get((user, artist))
        if tagged is not None:
            day = tagged
        else:
            lo, hi = span.get(user, default_span)
            day = lo + np.floor(day_draw[n] * ((hi - lo) / DAY_S + 1.0)) * DAY_S
        ts[n] = day + second_draw[n]
    return ts


def _artist_tags(rows: list[list[str]], tag_names: dict[str, str]) -> dict[str, Counter[str]]:
    """How often each tag was put on each artist (by any user)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for _user, artist, tag, *_date in rows:
        if tag in tag_names:
            counts[artist][tag] += 1
    return counts


def _side_tables(
    item_ids: list[str],
    names: dict[str, str],
    tag_names: dict[str, str],
    per_artist: dict[str, Counter[str]],
    top_tags: int,
) -> tuple[np.ndarray, list[str], list[str]]:
    """(multi-hot features (n_items, top_tags), feature names, item_text) for the catalogue in index order."""
    usage: Counter[str] = Counter()
    for counts in per_artist.values():
        usage.update(counts)
    vocab = [tag for tag, _ in usage.most_common(top_tags)]
    column = {tag: j for j, tag in enumerate(vocab)}
    features = np.zeros((len(item_ids), len(vocab)), np.float32)
    texts: list[str] = []
    for row, artist in enumerate(item_ids):
        counts = per_artist.get(artist, Counter())
        for tag in counts:
            if tag in column:
                features[row, column[tag]] = 1.0
        words = ", ".join(tag_names[t] for t, _ in counts.most_common(TEXT_TAGS))
        name = names.get(artist, f"artist {artist}")
        texts.append(f"{name} | {words}" if words else name)
    return features, [f"tag:{tag_names[t]}" for t in vocab], texts


def load_lastfm(folder: str | Path, *, top_tags: int = 50, seed: int = 0) -> EventLog:
    """Load a HetRec 2011 Last.fm 2K folder; timestamps follow the module's ordering rule under ``seed``."""
    folder = Path(folder)
    plays = _rows(_require(folder, "user_artists.dat"), "utf-8")
    artists = _rows(_require(folder, "artists.dat"), "utf-8")
    tags_path, tagged_path = folder / "tags.dat", folder / "user_taggedartists.dat"
    tags = _rows(tags_path, "iso-8859-1") if tags_path.exists() else []
    tagged = _rows(tagged_path, "utf-8") if tagged_path.exists() else []
    bad = [r for r in plays if len(r) != 3]
    if bad:
        raise ValueError(f"user_artists.dat: expected userID, artistID, weight; got {bad[0]!r}")
    pairs = [(r[0], r[1]) for r in plays]
    first, span = _tag_days(tagged)
    ts = _pair_times(pairs, first, span, np.random.default_rng(seed))
    events = build_log(
        [u for u, _ in pairs],
        [a for _, a in pairs],
        ts,
        values=np.array([float(r[2]) for r in plays], np.float32),
        types=["play"] * len(pairs),
        name="hetrec2011-lastfm-2k",
        explicit=False,
    )
    tag_names = {r[0]: r[1] for r in tags if len(r) >= 2}
    names = {r[0]: r[1] for r in artists if len(r) >= 2}
    features, feature_names, texts = _side_tables(
        events.item_ids, names, tag_names, _artist_tags(tagged, tag_names), top_tags
    )
    events.item_features, events.item_feature_names, events.item_text = features, feature_names, texts
    log.info("Last.fm: %d plays, %d users, %d artists, %d tagged pairs", len(events), events.n_users,
             events.n_items, sum(p in first for p in pairs))
    return events
