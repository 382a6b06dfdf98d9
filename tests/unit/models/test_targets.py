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


# --- operator event weights (METAREC_EVENT_WEIGHTS) ---------------------------------------------------------
def test_weights_make_listed_types_positives_worth_their_weight_and_drop_the_rest():
    from models.core.targets import count_weight, event_weights

    weights = event_weights({"view": 0.2, "click": 1, "purchase": 3, "rating": 2})
    assert event_target("view", None, "implicit", weights) == 0.2
    assert event_target("purchase", None, "implicit", weights) == 3.0
    assert event_target("cart", None, "implicit", weights) is None, "a type left out is not a positive"
    assert event_target("rating", 5.0, "implicit", weights) == 2.0
    assert event_target("rating", 0.5, "implicit", weights) is None
    assert event_target("rating", 4.0, "rating", weights) == 4.0, "the rating objective adapts on ratings"
    assert count_weight("view", weights) == 0.2 and count_weight("cart", weights) == 0.0
    assert count_weight("cart", None) == 1.0


def test_weights_are_checked_and_canonical():
    from models.core.targets import event_weights

    assert event_weights({"click": 1, "view": 0.5}) == event_weights({"view": 0.5, "click": 1.0})
    assert event_weights(None) is None
    with pytest.raises(ValueError, match="unknown event type"):
        event_weights({"teleport": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        event_weights({"view": -1.0})
