"""Small hand-made event logs for the evaluation tests (factories, so each test builds its own)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pytest

from models.data.events import EventLog, build_log

Row = tuple[str, str, float] | tuple[str, str, float, float]


def make_log(rows: Sequence[Row], explicit: bool = False, n_items: int | None = None) -> EventLog:
    """A log from (user, item, ts[, value]) rows; ``n_items`` pads the catalogue with items nobody touched."""
    users = [r[0] for r in rows]
    items = [r[1] for r in rows]
    ts = [r[2] for r in rows]
    values = [r[3] if len(r) > 3 else np.nan for r in rows]  # type: ignore[misc]
    log = build_log(users, items, ts, values=values, types=["rating" if explicit else "view"] * len(rows),
                    explicit=explicit)
    if n_items is not None and n_items > log.n_items:
        log.item_ids += [f"pad{i}" for i in range(n_items - log.n_items)]
    return log


@pytest.fixture
def log_factory() -> Callable[..., EventLog]:
    return make_log


def planted_stream(seed: int = 0, users: int = 60, per_user: int = 12, items: int = 40) -> EventLog:
    """Two taste groups: even users pick from items 0-9, odd users from 10-19; items 20+ are rare."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for u in range(users):
        base = 0 if u % 2 == 0 else 10
        picks = rng.choice(10, per_user if per_user <= 10 else 10, replace=False) + base
        starts = rng.uniform(0, 1000)
        for n, item in enumerate(picks):
            rows.append((f"u{u}", f"i{item}", starts + n * 10 + rng.uniform(0, 5)))
    for n in range(20, items):  # rare items keep the catalogue bigger than the planted ones
        rows.append((f"u{n % users}", f"i{n}", rng.uniform(0, 1100)))
    return make_log(rows)


@pytest.fixture
def planted() -> EventLog:
    return planted_stream()
