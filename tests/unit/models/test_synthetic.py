"""The synthetic stream: deterministic, time-ordered, and with the structure the demo relies on."""

from __future__ import annotations

import numpy as np
import pytest

from models.data.events import EVENT_TYPES
from models.data.synthetic import generate

SMALL = dict(n_users=300, n_items=120, n_categories=6, mean_events=20)


def test_same_seed_same_stream_and_different_seed_different_stream():
    a, b, c = generate(seed=4, **SMALL), generate(seed=4, **SMALL), generate(seed=5, **SMALL)
    for name in ("users", "items", "ts", "types"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.values, b.values)  # NaNs compare equal here
    assert a.item_text == b.item_text and a.user_ids == b.user_ids
    assert len(a) != len(c) or not np.array_equal(a.items, c.items)


def test_events_are_in_time_order_and_start_at_start_ts():
    log = generate(seed=1, start_ts=1_000.0, **SMALL)
    assert np.all(np.diff(log.ts) >= 0)
    assert log.ts.min() >= 1_000.0


def test_users_arrive_over_time_so_a_late_replay_meets_new_users():
    log = generate(seed=2, **SMALL)
    first_seen = np.full(log.n_users, np.inf)
    np.minimum.at(first_seen, log.users, log.ts)
    half = np.quantile(log.ts, 0.5)
    assert (first_seen > half).mean() > 0.2


def test_catalogue_side_tables_line_up():
    log = generate(seed=3, **SMALL)
    assert log.item_features.shape == (120, 6) and log.item_feature_names and len(log.item_text) == 120
    assert set(np.unique(log.item_features)) <= {0.0, 1.0} and (log.item_features.sum(1) >= 1).all()
    title = log.item_text[7]
    assert title.endswith("#7") and any(w in title for w in log.item_feature_names)
    assert len(log.user_ids) == 300 and log.users.max() < 300 and log.items.max() < 120


def test_ratings_are_stars_on_rating_events_only_and_types_are_mixed():
    log = generate(seed=0, **SMALL)
    is_rating = log.types == EVENT_TYPES.index("rating")
    stars = log.values[is_rating]
    assert set(np.unique(stars)) <= {1, 2, 3, 4, 5} and len(np.unique(stars)) >= 3
    assert np.isnan(log.values[~is_rating]).all()
    assert len(np.unique(log.types)) >= 4


def test_users_have_planted_tastes_concentrated_on_few_categories():
    log = generate(seed=0, **SMALL)
    shares = []
    for _, pos in log.user_sequences():
        counts = log.item_features[log.items[pos]].sum(0)
        shares.append(np.sort(counts)[-2:].sum() / counts.sum())
    overall = np.sort(log.item_features[log.items].sum(0))[-2:].sum() / log.item_features[log.items].sum()
    assert np.median(shares) > overall + 0.2  # a user's top two categories dominate far more than the crowd's


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        generate(n_categories=99)
    with pytest.raises(ValueError):
        generate(n_items=3, n_categories=6)
