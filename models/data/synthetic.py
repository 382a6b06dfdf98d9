"""A synthetic interaction stream with planted structure: the demo data and the ground truth for tests.

Items belong to one or two categories and have Zipf popularity; users belong to a few taste archetypes (sparse
Dirichlet mixtures over categories) and arrive over time, so a live replay keeps meeting brand-new users whose
taste can only be learned from their first few events. That is exactly what meta-learned adaptation is for,
and a model that ignores a user's events cannot do well here.
"""

from __future__ import annotations

import numpy as np

from models.data.events import EVENT_TYPES, EventLog

CATEGORY_WORDS: tuple[str, ...] = (
    "jazz", "garden", "kitchen", "travel", "chess", "cycling", "poetry", "astronomy", "baking", "camping",
    "photography", "pottery", "robotics", "sailing", "knitting", "surfing", "opera", "hiking", "origami",
    "coffee",
)
ADJECTIVES: tuple[str, ...] = (
    "vintage", "compact", "deluxe", "classic", "modern", "rustic", "pocket", "bold",
)
NOUNS: tuple[str, ...] = ("kit", "guide", "set", "box", "album", "manual", "tool", "collection")

TYPE_MIX: dict[str, float] = {"view": 0.45, "click": 0.25, "cart": 0.10, "purchase": 0.08, "rating": 0.12}
"""Share of each event type; ``play`` is a music-data type and does not occur here."""

N_ARCHETYPES = 6
SPAN_S = 30 * 86400.0  # users arrive over 30 days
GAP_MEAN_S = 1800.0  # mean time between a user's events
EXPLORE = 0.1  # chance an event ignores taste and follows global popularity


def generate(
    n_users: int = 2000,
    n_items: int = 600,
    n_categories: int = 12,
    mean_events: int = 40,
    seed: int = 0,
    start_ts: float = 1_700_000_000.0,
) -> EventLog:
    """A time-ordered EventLog of ``n_users`` users with planted taste types; same arguments, same log."""
    if not 1 <= n_categories <= len(CATEGORY_WORDS):
        raise ValueError(f"n_categories must be in 1..{len(CATEGORY_WORDS)}, got {n_categories}")
    if n_users < 1 or n_items < n_categories or mean_events < 1:
        raise ValueError("need n_users >= 1, n_items >= n_categories and mean_events >= 1")
    rng = np.random.default_rng(seed)
    cats = _item_categories(rng, n_items, n_categories)  # (n_items, C) multi-hot
    popularity = _zipf_popularity(rng, n_items)  # (n_items,) sums to 1
    quality = rng.normal(0.0, 0.5, n_items)  # (n_items,) shifts ratings
    tastes = _user_tastes(rng, n_users, n_categories)  # (n_users, C) rows sum to 1
    users, items, ts, types, values = _events(rng, cats, popularity, quality, tastes, mean_events, start_ts)
    order = np.argsort(ts, kind="stable")
    names = list(CATEGORY_WORDS[:n_categories])
    return EventLog(
        users=users[order],
        items=items[order],
        ts=ts[order],
        values=values[order],
        types=types[order],
        user_ids=[f"user-{u}" for u in range(n_users)],
        item_ids=[f"item-{i}" for i in range(n_items)],
        name=f"synthetic-{seed}",
        explicit=False,
        item_features=cats.astype(np.float32),
        item_feature_names=names,
        item_text=_titles(rng, cats, names),
    )


def _item_categories(rng: np.random.Generator, n_items: int, n_categories: int) -> np.ndarray:
    """Every item has a main category (all categories used) and, for a fifth of items, a second one."""
    main = np.concatenate([np.arange(n_categories), rng.integers(0, n_categories, n_items - n_categories)])
    rng.shuffle(main)
    cats = np.zeros((n_items, n_categories), np.float32)
    cats[np.arange(n_items), main] = 1.0
    second = np.flatnonzero(rng.random(n_items) < 0.2)
    cats[second, rng.integers(0, n_categories, len(second))] = 1.0
    return cats


def _zipf_popularity(rng: np.random.Generator, n_items: int, exponent: float = 0.7) -> np.ndarray:
    ranks = rng.permutation(n_items) + 1.0
    weights = ranks**-exponent
    return weights / weights.sum()


def _user_tastes(rng: np.random.Generator, n_users: int, n_categories: int) -> np.ndarray:
    """Archetypes are sparse Dirichlet draws; a user is a Dirichlet draw around one archetype."""
    archetypes = rng.dirichlet(np.full(n_categories, 0.15), N_ARCHETYPES)  # (A, C)
    kind = rng.integers(0, N_ARCHETYPES, n_users)
    return np.stack([rng.dirichlet(30.0 * archetypes[k] + 0.02) for k in kind])  # (U, C)


def _events(
    rng: np.random.Generator,
    cats: np.ndarray,
    popularity: np.ndarray,
    quality: np.ndarray,
    tastes: np.ndarray,
    mean_events: int,
    start_ts: float,
) -> tuple[np.ndarray, ...]:
    """Each event: a category drawn from the user's taste, then an item of it by popularity (or any item)."""
    n_users, n_categories = tastes.shape
    pools = [np.flatnonzero(cats[:, c]) for c in range(n_categories)]
    pool_p = [popularity[p] / popularity[p].sum() for p in pools]
    counts = np.maximum(3, rng.geometric(1.0 / mean_events, n_users))
    arrivals = start_ts + rng.random(n_users) * SPAN_S
    type_codes = np.array([EVENT_TYPES.index(t) for t in TYPE_MIX], np.int8)
    type_p = np.array(list(TYPE_MIX.values()))
    type_p /= type_p.sum()
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)  # (E,)
    gaps = rng.exponential(GAP_MEAN_S, len(users))  # (E,)
    starts = np.cumsum(counts) - counts  # (U,) first event position of each user
    within = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[starts] - gaps[starts], counts)
    ts = arrivals[users] + within  # (E,) increasing within each user
    chosen = _draw(rng, tastes[users])  # (E,) a category per event
    items = np.empty(len(users), np.int64)
    for c in range(n_categories):
        at = np.flatnonzero(chosen == c)
        items[at] = rng.choice(pools[c], len(at), p=pool_p[c])
    explore = np.flatnonzero(rng.random(len(users)) < EXPLORE)
    items[explore] = rng.choice(len(popularity), len(explore), p=popularity)
    types = rng.choice(type_codes, len(users), p=type_p)
    affinity = (tastes[users] * cats[items]).sum(1) / tastes[users].max(1)  # (E,) in [0, 1]
    stars = np.clip(np.rint(1.0 + 4.0 * affinity + quality[items] + rng.normal(0.0, 0.6, len(users))), 1, 5)
    values = np.where(types == EVENT_TYPES.index("rating"), stars, np.nan).astype(np.float32)
    return users, items, ts, types, values


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` (R, K), by inverse CDF: vectorised ``rng.choice`` with a per-row p."""
    cdf = np.cumsum(probs, axis=1)  # (R, K)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]  # (R, 1)
    return np.minimum((cdf <= u).sum(axis=1), probs.shape[1] - 1)


def _titles(rng: np.random.Generator, cats: np.ndarray, names: list[str]) -> list[str]:
    """"<category words> <adjective> <noun> #id", e.g. "jazz baking vintage album #17"."""
    titles = []
    for i, row in enumerate(cats):
        words = " ".join(names[c] for c in np.flatnonzero(row))
        adjective, noun = ADJECTIVES[rng.integers(len(ADJECTIVES))], NOUNS[rng.integers(len(NOUNS))]
        titles.append(f"{words} {adjective} {noun} #{i}")
    return titles
