"""Event-to-target mapping: what each interaction teaches the inner loop on each objective."""

from __future__ import annotations

import math

import pytest

from models.core.targets import event_target
from models.data.events import EVENT_TYPES


def test_rating_objective_adapts_on_ratings_only():
    assert event_target("rating", 4.0, "rating") == 4.0
    assert event_target("rating", None, "rating") is None
    assert event_target("rating", math.nan, "rating") is None
    for kind in EVENT_TYPES:
        if kind != "rating":
            assert event_target(kind, 1.0, "rating") is None


def test_implicit_weights_grow_with_commitment_and_stay_in_unit_interval():
    weights = [event_target(k, None, "implicit") for k in ("view", "click", "cart", "purchase")]
    assert all(w is not None and 0 < w <= 1 for w in weights)
    assert weights == sorted(weights) and weights[0] < weights[-1]
    assert event_target("play", 120.0, "implicit") == 1.0


def test_implicit_ratings_are_positives_weighted_by_stars():
    assert event_target("rating", 0.5, "implicit") is None
    assert event_target("rating", None, "implicit") is None
    low, high = event_target("rating", 2.0, "implicit"), event_target("rating", 5.0, "implicit")
    assert low is not None and high == 1.0 and 0 < low < high


def test_every_event_type_is_mapped_on_implicit():
    for kind in EVENT_TYPES:
        assert event_target(kind, 5.0, "implicit") is not None


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError):
        event_target("click", None, "regression")
