"""From a user's events to what the model is asked and what it learns: the one place both are built.

The stream worker (stream/pipeline.py) and the offline evaluation (models/eval/metarec_methods.py) both hand
over a user's recent events as plain tuples and get the same ``AdaptRequest``, so what the evaluation measures
is what the worker serves. Neither side's storage type crosses this line: the stream keeps ``UserState``
structs, the evaluation dense indices, and each turns its own into ``Support`` tuples.

``LearnedUser`` is the other direction: what one batch teaches the model's item statistics about one user.
The worker keeps no per-user history in its own memory, so everything the statistics need about the user
(their items before the batch, the batch's new interactions) travels in the record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Iterable, NamedTuple, Sequence

from models.core.targets import EVENT_TYPE_CODES, EVENT_TYPES, EventWeights, event_target

__all__ = [
    "EVENT_TYPES",
    "EVENT_TYPE_CODES",
    "AdaptRequest",
    "EventWeights",
    "LearnedUser",
    "Support",
    "build_request",
    "support_targets",
    "target",
]

Support = tuple[str, str, "float | None", float]
"""One remembered interaction: (item_id, event type name, value or None/NaN, ts seconds), oldest first."""


@dataclass(frozen=True)
class AdaptRequest:
    """One user to adapt and rank for."""

    user_id: str
    support: Sequence[tuple[str, float]]  # (item_id, target) oldest first, already mapped by event_target
    exclude: Collection[str]  # items the user has seen: never recommended
    user_features: Sequence[float] | None = None  # (G,) when the model was trained with user features
    # The user's distinct items in first-arrival order (bounded): what the item statistics have seen of this
    # user. Empty where the caller tracks no arrival order (the offline evaluation today).
    history: tuple[str, ...] = ()
    # How many trailing items of ``history`` first arrived in the batch being served: they are not yet counted
    # into the item statistics when this request is ranked (a batch is ranked before it is learned).
    fresh: int = 0
    # Items the user was shown and did not take (most recent first): the inner loop's first negatives, before
    # the uniform ones (implicit objective).
    negatives: tuple[str, ...] = ()


class LearnedUser(NamedTuple):
    """What one batch teaches the item statistics about one user (a named tuple: one per user and batch).

    ``history_before`` is the user's distinct items before the batch, in first-arrival order (empty after a
    deletion in the batch: the user starts over); ``events`` are the batch's newly applied interactions, in
    order, as (item_id, ts, rating or None), or (item_id, ts, rating or None, count weight) under operator
    event weights (``models.core.targets.count_weight``; events of a type that is not a positive are left out).
    """

    user_id: str
    history_before: tuple[str, ...]
    events: tuple[tuple[str, float, float | None] | tuple[str, float, float | None, float], ...]


_TARGETS: dict[tuple[str, float | None, str, EventWeights | None], float | None] = {}
_TARGETS_MAX = 4096  # distinct (type, value, objective) remembered; a stream repeats a few (ratings, weights)


def target(type_name: str, value: float | None, objective: str,
           weights: EventWeights | None = None) -> float | None:
    """``event_target``, memoised: it runs for every support event of every served user (50 per user)."""
    if value is not None and math.isnan(value):
        value = None  # NaN never equals itself, so it would never hit the memo; event_target reads it as None
    key = (type_name, value, objective, weights)
    try:
        return _TARGETS[key]
    except KeyError:
        if len(_TARGETS) >= _TARGETS_MAX:
            _TARGETS.clear()
        result = _TARGETS[key] = event_target(type_name, value, objective, weights)
        return result


def support_targets(support: Iterable[Support], objective: str,
                    weights: EventWeights | None = None) -> list[tuple[str, float]]:
    """The support events the ``objective`` adapts on (under ``weights``), as (item_id, target), oldest
    first."""
    out = []
    for item_id, type_name, value, _ts in support:
        mapped = target(type_name, value, objective, weights)
        if mapped is not None:
            out.append((item_id, mapped))
    return out


def build_request(
    user_id: str,
    support: Iterable[Support],
    objective: str,
    *,
    seen: Sequence[str] | None = None,
    exclude: Collection[str] | None = None,
    fresh: int = 0,
    user_features: Sequence[float] | None = None,
    weights: EventWeights | None = None,
    negatives: Sequence[str] = (),
    demoted: Collection[str] = (),
) -> AdaptRequest:
    """The request for one user: their support mapped to targets, their seen items excluded.

    ``seen``: the user's distinct items in first-arrival order; it becomes both the request's ``history`` and,
    unless ``exclude`` is given, its ``exclude`` set. A caller without an arrival order passes ``exclude``
    alone (``history`` stays empty). ``fresh`` is clamped to the history's length. ``weights``: the operator's
    event weights (``models.core.targets``). ``negatives``: items shown and not taken (the inner loop's first
    negatives); ``demoted``: items shown too often without a take, excluded like seen ones.
    """
    history = tuple(seen) if seen is not None else ()
    if exclude is None:
        exclude = frozenset(history)
    if demoted:
        exclude = frozenset(exclude).union(demoted)
    return AdaptRequest(
        user_id=user_id,
        support=support_targets(support, objective, weights),
        exclude=exclude,
        user_features=user_features,
        history=history,
        fresh=max(0, min(fresh, len(history))),
        negatives=tuple(negatives),
    )
