"""The MeLU cold-start split: groups, task shapes, and nothing from new users or new items in training."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from models.data.events import EventLog
from models.eval.coldstart.split import (
    SCENARIOS,
    SplitConfig,
    coldstart_split,
    existing_items_by_first_appearance,
)

LogFactory = Callable[..., EventLog]


def test_items_split_by_first_appearance(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_items=50)
    existing = existing_items_by_first_appearance(log, 0.8)
    numbers = np.array([int(i[1:]) for i in log.item_ids])
    assert existing.sum() == 40
    assert set(numbers[existing]) == set(range(40))  # the 40 earliest first ratings: items i0..i39


def test_user_split_sizes_and_seed(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=60)
    a = coldstart_split(log, SplitConfig(seed=1))
    b = coldstart_split(log, SplitConfig(seed=1))
    c = coldstart_split(log, SplitConfig(seed=2))
    assert a.existing_users.sum() == 48
    np.testing.assert_array_equal(a.existing_users, b.existing_users)
    assert not np.array_equal(a.existing_users, c.existing_users)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tasks_have_ten_query_items_disjoint_from_support(
    make_ratings_log: LogFactory, scenario: str
) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    split = coldstart_split(log)
    tasks = split.test_tasks[scenario] + (split.train_tasks if scenario == "warm" else [])
    assert tasks, f"no {scenario} tasks on the test log"
    users_ok, items_ok = {
        "warm": (1, 1),
        "new_user": (0, 1),
        "new_item": (1, 0),
        "new_user_new_item": (0, 0),
    }[scenario]
    for t in tasks:
        assert len(t.query) == 10 and len(t.support) >= 3
        assert 13 <= len(t.query) + len(t.support) <= 100
        assert not set(log.items[t.query]) & set(log.items[t.support])
        assert not set(t.query.tolist()) & set(t.support.tolist())
        assert (log.users[np.concatenate([t.support, t.query])] == t.user).all()
        assert split.existing_users[t.user] == bool(users_ok)
        assert split.existing_items[log.items[np.concatenate([t.support, t.query])]].all() == bool(items_ok)
        assert (~split.existing_items[log.items[np.concatenate([t.support, t.query])]]).all() == (
            not items_ok
        )


def test_users_with_too_few_ratings_in_a_scenario_get_no_task(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=40, n_items=50, per_user=20)  # ~4 ratings per user on the 10 new items
    split = coldstart_split(log)
    assert split.test_tasks["new_item"] == [] and split.test_tasks["new_user_new_item"] == []
    assert split.skipped["new_item"] == split.existing_users.sum()


def test_training_data_holds_no_new_user_or_new_item_rating(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    split = coldstart_split(log)
    train = split.train_events()
    assert len(train) > 0
    assert split.existing_users[log.users[train]].all()
    assert split.existing_items[log.items[train]].all()
    tested = {
        int(p)
        for name in SCENARIOS
        for t in split.test_tasks[name]
        for p in np.concatenate([t.support, t.query])
    }
    assert not tested & set(train.tolist())  # the held-out warm tasks are out of training too
    assert split.test_tasks["warm"], "warm holdout is empty"


def test_split_counts(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    counts = coldstart_split(log).counts()
    assert set(counts) == {"train", *SCENARIOS}
    assert counts["new_user"]["query_ratings"] == 10 * counts["new_user"]["tasks"]


def test_split_does_not_depend_on_row_order(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    shuffled = log.take(np.random.default_rng(5).permutation(len(log)))

    def pairs(lg: EventLog) -> dict[str, list[tuple[int, frozenset[int], frozenset[int]]]]:
        split = coldstart_split(lg)
        return {
            name: [(t.user, frozenset(lg.items[t.support]), frozenset(lg.items[t.query])) for t in tasks]
            for name, tasks in split.test_tasks.items()
        }

    assert pairs(log) == pairs(shuffled)
