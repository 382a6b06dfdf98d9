"""The columnar event log every loader produces and every trainer and evaluator consumes.

One shape for MovieLens, Last.fm, a user's own event file and the synthetic demo stream, so that the offline
evaluation and the online worker see the same thing. Ids are mapped to dense indices once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from models.core.targets import EVENT_TYPE_CODES, EVENT_TYPES

__all__ = ["EVENT_TYPES", "EventLog", "build_log"]  # EVENT_TYPES: the code stored in ``EventLog.types``


@dataclass
class EventLog:
    """Interactions as parallel arrays, plus optional side tables.

    ``values`` holds the rating (explicit data) or the implicit strength (e.g. a play count); NaN where the event
    carries none. ``item_features``/``user_features`` are dense float matrices (multi-hot categories, scaled
    year, ...) indexed by the dense item/user index.
    """

    users: np.ndarray  # (E,) int64 dense user index
    items: np.ndarray  # (E,) int64 dense item index
    ts: np.ndarray  # (E,) float64 seconds since the epoch
    values: np.ndarray  # (E,) float32, NaN = none
    types: np.ndarray  # (E,) int8 index into EVENT_TYPES
    user_ids: list[str]
    item_ids: list[str]
    name: str = "events"
    explicit: bool = False
    item_features: np.ndarray | None = None  # (n_items, F) float32
    item_feature_names: list[str] = field(default_factory=list)
    item_text: list[str] | None = None  # (n_items,) title / tags / description
    user_features: np.ndarray | None = None  # (n_users, G) float32
    user_feature_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.users)
        for name in ("items", "ts", "values", "types"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"EventLog.{name} has {len(getattr(self, name))} rows, users has {n}")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def sorted_by_time(self) -> "EventLog":
        """Events in timestamp order; ties keep file order (a stable sort), so replays are deterministic."""
        order = np.argsort(self.ts, kind="stable")
        return self.take(order)

    def take(self, index: np.ndarray) -> "EventLog":
        """A log with the events at ``index`` (same id maps and side tables)."""
        return replace(
            self,
            users=self.users[index],
            items=self.items[index],
            ts=self.ts[index],
            values=self.values[index],
            types=self.types[index],
        )

    def user_sequences(self) -> Iterator[tuple[int, np.ndarray]]:
        """(user, event positions in time order) for every user with events."""
        order = np.lexsort((self.ts, self.users))
        users = self.users[order]
        bounds = np.flatnonzero(np.diff(users)) + 1
        for chunk in np.split(order, bounds):
            if len(chunk):
                yield int(self.users[chunk[0]]), chunk


def build_log(
    user_keys: Sequence[str],
    item_keys: Sequence[str],
    ts: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray | None = None,
    types: Sequence[str] | None = None,
    **extra: object,
) -> EventLog:
    """Build an EventLog from raw string ids, assigning dense indices in order of first appearance."""
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    users = np.fromiter((user_index.setdefault(u, len(user_index)) for u in user_keys), np.int64, len(user_keys))
    items = np.fromiter((item_index.setdefault(i, len(item_index)) for i in item_keys), np.int64, len(item_keys))
    n = len(users)
    vals = np.full(n, np.nan, np.float32) if values is None else np.asarray(values, np.float32)
    codes = EVENT_TYPE_CODES
    kinds = np.zeros(n, np.int8) if types is None else np.fromiter((codes[t] for t in types), np.int8, n)
    return EventLog(
        users=users,
        items=items,
        ts=np.asarray(ts, np.float64),
        values=vals,
        types=kinds,
        user_ids=list(user_index),
        item_ids=list(item_index),
        **extra,  # type: ignore[arg-type]
    )
