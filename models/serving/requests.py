"""What the model is asked: one user's support, exclusions and history (placeholder until the core lands)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence


@dataclass(frozen=True)
class AdaptRequest:
    """One user to adapt and rank for."""

    user_id: str
    support: Sequence[tuple[str, float]]  # (item_id, target) oldest first, already mapped by event_target
    exclude: Collection[str]  # items the user has seen: never recommended
    user_features: Sequence[float] | None = None  # (G,) when the model was trained with user features
    history: tuple[str, ...] = ()  # the user's distinct items, first arrival first (the statistics' view)
    fresh: int = 0  # how many trailing items of ``history`` the statistics have not counted yet
