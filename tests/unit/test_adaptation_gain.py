"""bench.adaptation_gain reads the warm-up only, and its intervals are over users."""

from __future__ import annotations

import numpy as np

from bench.adaptation_gain import WARMUP_FRACTION, paired_interval, window_plan
from tests.unit.eval.conftest import planted_stream


def test_windows_never_read_past_the_warm_up():
    events = planted_stream(seed=1, users=40).sorted_by_time()
    warm = int(len(events) * WARMUP_FRACTION)
    for window, (upto, end) in (("w1", (0.5, 0.75)), ("w2", (0.75, 1.0))):
        plan = window_plan(events, window)
        assert len(plan.log) == int(warm * end) <= warm
        assert np.array_equal(plan.log.items, events.items[: len(plan.log)])  # a prefix of the stream
        assert plan.start == int(warm * upto)  # trained on what comes before the replayed stretch


def test_the_interval_is_over_users_not_events():
    users = np.repeat(np.arange(20), 10)  # 20 users, 10 events each
    same = paired_interval(users, np.full(200, 0.25))
    assert same == [0.25, 0.25, 0.25]
    one_user = np.where(users == 3, 1.0, 0.0)  # every gain from one user: the mean is 0.05, the low end 0
    low, mean, high = paired_interval(users, one_user)
    assert mean == 0.05 and low == 0.0 and high > 0.1
