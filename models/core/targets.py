"""What an interaction teaches the inner loop: the event types, one mapping from (type, value) to a target.

The stream worker and the trainer both call ``event_target`` so a user adapts online on exactly what tasks
were built from offline. ``None`` means "remember that the user saw it, but do not adapt on it".

``EVENT_TYPES`` is the one table of interaction types: a type's index in it is its code wherever a code is
stored (``EventLog.types``, the stream's per-user state). ``schemas.records.InteractionType`` spells the same
names for decoding (schemas may not import models); tests/unit/models/test_requests.py ties them together.
"""

from __future__ import annotations

import math
from typing import Mapping

EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase", "rating", "play")
"""Interaction types, by code. Stored states hold the codes: append new types, never reorder."""

EVENT_TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}

IMPLICIT_WEIGHTS: dict[str, float] = {"view": 0.25, "click": 0.5, "cart": 0.75, "purchase": 1.0, "play": 1.0}
"""Confidence that an implicit interaction means "likes it": stronger commitment, stronger positive."""

POSITIVE_RATING = 1.0
"""Implicit objective: ratings below this are not positives; from it up, the weight grows to 1 at 5 stars.

Every rating counts: "will interact" is what is ranked, and a film rated 2 stars was still picked next (the
weight, 0.4 at 2 stars, still says it was liked less). Raising it drops low ratings from the support sets."""

EventWeights = tuple[tuple[str, float], ...]
"""An operator's event weights (``METAREC_EVENT_WEIGHTS``) in canonical, hashable form: sorted (type, weight)
pairs. A type listed with a weight above 0 is a positive worth that much (the inner-loop target and what one
event adds to the item statistics' counts); a type left out is not a positive. ``None`` wherever a weights
argument is taken means the defaults above (``IMPLICIT_WEIGHTS``, and every event counts 1)."""


def event_weights(mapping: Mapping[str, float] | None) -> EventWeights | None:
    """``mapping`` (type name -> weight) checked and in canonical form; ``None`` stays ``None``.

    Raises ValueError on an unknown type or a weight that is not a finite number >= 0."""
    if mapping is None:
        return None
    for name, weight in mapping.items():
        if name not in EVENT_TYPE_CODES:
            raise ValueError(f"unknown event type {name!r} (known: {', '.join(EVENT_TYPES)})")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {weight}")
    return tuple(sorted((name, float(weight)) for name, weight in mapping.items()))


def count_weight(type: str, weights: EventWeights | None) -> float:  # noqa: A002 - the event's field name
    """What one event of ``type`` adds to the item statistics' counts: 1 by default, else its weight (0 for a
    type that is not a positive)."""
    if weights is None:
        return 1.0
    for name, weight in weights:
        if name == type:
            return weight
    return 0.0


def event_target(  # noqa: A002 - ``type`` is the event's field name
    type: str, value: float | None, objective: str, weights: EventWeights | None = None
) -> float | None:
    """The inner-loop target of one interaction, or None if it should not be adapted on.

    ``rating`` objective: only rating events with a finite value count, and the target is the rating itself.
    ``implicit`` objective: the target is a confidence weight in (0, 1]; a rating is a positive only if it is
    at least ``POSITIVE_RATING``, a play is a full positive whatever its count. With ``weights`` (implicit only)
    a type's target is its weight (a rating's: its weight times the star confidence above), and a type without
    a weight above 0 is not adapted on.
    """
    has_value = value is not None and math.isfinite(value)
    if objective == "rating":
        return float(value) if type == "rating" and has_value else None  # type: ignore[arg-type]
    if objective != "implicit":
        raise ValueError(f"unknown objective {objective!r}")
    scale = 1.0 if weights is None else count_weight(type, weights)
    if scale <= 0.0:
        return None
    if type == "rating":
        if not has_value or value < POSITIVE_RATING:  # type: ignore[operator]
            return None
        stars = float(value)  # type: ignore[arg-type]
        return scale * min(1.0, (stars - POSITIVE_RATING + 1.0) / (6.0 - POSITIVE_RATING))
    return IMPLICIT_WEIGHTS.get(type) if weights is None else scale
