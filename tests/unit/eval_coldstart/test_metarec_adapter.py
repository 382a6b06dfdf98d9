"""The metarec adapter: the trainer's log holds training items only, and new items are served by features."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.data.events import EventLog
from models.eval.coldstart.metarec import MetarecColdStart, MetarecSettings, training_log
from models.eval.coldstart.methods import task_data
from models.eval.coldstart.protocol import training_inputs
from models.eval.coldstart.split import coldstart_split

LogFactory = Callable[..., EventLog]


def test_training_log_reindexes_items_and_shuffles_within_users(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    split = coldstart_split(log)
    train_log, _ = training_inputs(log, split)
    out, kept = training_log(train_log, "shuffled", seed=0)
    assert out.n_items == len(kept) and split.existing_items[kept].all()
    np.testing.assert_array_equal(kept[out.items], train_log.items)  # same ratings, new item numbering
    assert out.item_features.shape == (len(kept), train_log.item_features.shape[1])
    for user in np.unique(train_log.users):
        rows = train_log.users == user
        np.testing.assert_array_equal(np.sort(out.ts[rows]), np.sort(train_log.ts[rows]))
    assert not np.array_equal(out.ts, train_log.ts)
    same, _ = training_log(train_log, "time", seed=0)
    np.testing.assert_array_equal(same.ts, train_log.ts)


def test_fit_and_predict_new_items(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    split = coldstart_split(log)
    train_log, train_tasks = training_inputs(log, split)
    method = MetarecColdStart(MetarecSettings(steps=3, batch_users=8))
    method.fit(train_log, train_tasks)
    tasks = [task_data(log, t, with_labels=False) for t in split.test_tasks["new_user_new_item"]]
    preds = method.predict(tasks)
    assert len(preds) == len(tasks) > 0
    assert all(p.shape == (10,) and np.isfinite(p).all() and (p >= 1).all() and (p <= 5).all() for p in preds)


def test_unrated_blend_moves_only_unrated_items_to_the_support_median(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    split = coldstart_split(log)
    train_log, train_tasks = training_inputs(log, split)
    plain = MetarecColdStart(MetarecSettings(steps=3, batch_users=8, unrated_blend=0.0))
    plain.fit(train_log, train_tasks)
    full = MetarecColdStart(MetarecSettings(steps=3, batch_users=8, unrated_blend=1.0))
    full.fit(train_log, train_tasks)
    for name in ("warm", "new_user_new_item"):
        tasks = [task_data(log, t, with_labels=False) for t in split.test_tasks[name]]
        for t, p0, p1 in zip(tasks, plain.predict(tasks), full.predict(tasks)):
            unrated = ~np.isin(t.query_items, train_log.items)
            np.testing.assert_allclose(p1[unrated], np.median(t.support_values), atol=1e-5)
            np.testing.assert_allclose(p1[~unrated], p0[~unrated], atol=1e-5)


def test_observed_supports_inform_new_items_without_touching_the_trained_statistics(
    make_ratings_log: LogFactory,
) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    split = coldstart_split(log)
    train_log, train_tasks = training_inputs(log, split)
    settings = MetarecSettings(steps=3, batch_users=8, unrated_blend=0.0)
    strict = MetarecColdStart(settings)
    strict.fit(train_log, train_tasks)
    pooled = MetarecColdStart(MetarecSettings(steps=3, batch_users=8, unrated_blend=0.0, observe_supports=True))
    pooled.fit(train_log, train_tasks)
    tasks = [task_data(log, t, with_labels=False) for t in split.test_tasks["new_user_new_item"]]
    counts = pooled.rec.stats.rating_count.copy()
    first, again, alone = pooled.predict(tasks), pooled.predict(tasks), strict.predict(tasks)
    np.testing.assert_array_equal(pooled.rec.stats.rating_count, counts)  # the trained statistics are untouched
    for p, q in zip(first, again):
        np.testing.assert_array_equal(p, q)  # each call starts from the trained statistics
    rated = np.zeros(log.n_items, bool)
    rated[np.concatenate([t.support_items for t in tasks])] = True
    moved = [~np.isclose(p, q, atol=1e-5) for p, q in zip(first, alone)]
    assert any((m & rated[t.query_items]).any() for m, t in zip(moved, tasks))  # supports told of query items
