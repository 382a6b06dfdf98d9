"""What an interaction teaches the inner loop: the event types, one mapping from (type, value) to a target.

The stream worker and the trainer both call ``event_target`` so a user adapts online on exactly what tasks
were built from offline. ``None`` means "remember that the user saw it, but do not adapt on it".

``EVENT_TYPES`` is the one table of interaction types: a type's index in it is its code wherever a code is
stored (``EventLog.types``, the stream's per-user state). ``schemas.records.InteractionType`` spells the same
names for decoding (schemas may not import models); tests/unit/models/test_requests.py ties them together.
"""

from __future__ import annotations

import math

EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase", "rating", "play")
"""Interaction types, by code. Stored states hold the codes: append new types, never reorder."""

EVENT_TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}

IMPLICIT_WEIGHTS: dict[str, float] = {"view": 0.25, "click": 0.5, "cart": 0.75, "purchase": 1.0, "play": 1.0}
"""Confidence that an implicit interaction means "likes it": stronger commitment, stronger positive."""

POSITIVE_RATING = 1.0
"""Implicit objective: ratings below this are not positives; from it up, the weight grows to 1 at 5 stars.

Every rating counts: "will interact" is what is ranked, and a film rated 2 stars was still picked next (the
weight, 0.4 at 2 stars, still says it was liked less). Raising it drops low ratings from the support sets."""


def event_target(  # noqa: A002 - ``type`` is the event's field name
    type: str, value: float | None, objective: str
) -> float | None:
    """The inner-loop target of one interaction, or None if it should not be adapted on.

    ``rating`` objective: only rating events with a finite value count, and the target is the rating itself.
    ``implicit`` objective: the target is a confidence weight in (0, 1]; a rating is a positive only if it is
    at least ``POSITIVE_RATING``, a play is a full positive whatever its count.
    """
    has_value = value is not None and math.isfinite(value)
    if objective == "rating":
        return float(value) if type == "rating" and has_value else None  # type: ignore[arg-type]
    if objective != "implicit":
        raise ValueError(f"unknown objective {objective!r}")
    if type == "rating":
        if not has_value or value < POSITIVE_RATING:  # type: ignore[operator]
            return None
        stars = float(value)  # type: ignore[arg-type]
        return min(1.0, (stars - POSITIVE_RATING + 1.0) / (6.0 - POSITIVE_RATING))
    return IMPLICIT_WEIGHTS.get(type)
