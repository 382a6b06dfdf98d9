"""Item statistics and context features: what they count, that training's features never see a task's query
(or anything after it), and that saving and observing behave as the worker needs."""

from __future__ import annotations

import numpy as np
import pytest

from models.data.synthetic import generate
from models.features.context import CONTEXT_NAMES, KNN_WINDOW, N_CONTEXT
from models.features.history import HistoryBook, Learned
from models.features.item_stats import PAIR_WINDOW, ItemStats, position_bucket
from models.serving.recommender import AdaptRequest
from models.serving.requests import LearnedUser
from models.training.task_context import SNAPSHOT_EVERY, attach_context, replay_stats
from models.training.train import default_config, sample_tasks, user_tracks


def small_log():
    return generate(n_users=80, n_items=40, n_categories=4, mean_events=12, seed=3).sorted_by_time()


def windowed_cooccurrence(log) -> np.ndarray:
    """(N, N) co-occurrence counted as the statistics count it: a user's new item with their previous
    ``PAIR_WINDOW`` distinct items (a brute-force reference, exact while no row has more neighbours than kept)."""
    counts = np.zeros((log.n_items, log.n_items))
    history: dict[int, list[int]] = {}
    for user, item in zip(log.users.tolist(), log.items.tolist()):
        items = history.setdefault(user, [])
        if item in items:
            continue
        for other in items[-PAIR_WINDOW:]:
            counts[item, other] += 1
            counts[other, item] += 1
        items.append(item)
    return counts


def test_knn_feature_is_windowed_item_knn_and_counts_are_counted():
    log = small_log()
    stats = replay_stats(log)
    cooc = windowed_cooccurrence(log)
    users = np.bincount(log.users, minlength=log.n_users)
    inv = np.where(stats.n_users_of > 0, 1 / np.sqrt(np.maximum(stats.n_users_of, 1)), 0.0)
    for user in np.argsort(-users)[:5].tolist():
        seen = list(dict.fromkeys(log.items[log.users == user].tolist()))
        ctx = stats.context([seen], [seen[-3:]])[0]  # (N, C)
        assert ctx.shape == (log.n_items, N_CONTEXT) == (log.n_items, len(CONTEXT_NAMES))
        window = seen[-KNN_WINDOW:]
        expected = (inv[window] @ cooc[window]) * inv  # (N,)
        np.testing.assert_allclose(np.expm1(ctx[:, CONTEXT_NAMES.index("log_knn")]), expected, rtol=1e-4,
                                   atol=1e-6)
        assert ctx[0, CONTEXT_NAMES.index(f"position_is_{position_bucket(len(seen))}")] == 1.0
    np.testing.assert_array_equal(stats.counts, np.bincount(log.items, minlength=log.n_items))


def test_own_items_knn_leaves_the_user_out():
    """With the user's key, their own items score as item-kNN fitted without them would score them; the
    catalogue's other items keep the plain score. Checked against statistics replayed without the user."""
    log = small_log()
    user = int(log.users[-1])
    key = log.user_ids[user]
    stats = replay_stats(log)
    without = replay_stats(log.take(np.flatnonzero(log.users != user)))
    seen = list(dict.fromkeys(log.items[log.users == user].tolist()))  # first arrival first
    assert 3 <= len(seen) <= KNN_WINDOW
    with_user = stats.context([seen], [seen[-3:]], [key])[0]  # (N, C)
    plain = stats.context([seen], [seen[-3:]])[0]
    left_out = without.context([seen], [seen[-3:]])[0]
    knn = CONTEXT_NAMES.index("log_knn")
    np.testing.assert_allclose(with_user[seen, knn], left_out[seen, knn], rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(np.arange(log.n_items), seen)
    np.testing.assert_array_equal(with_user[others], plain[others])
    assert (with_user[seen, knn] < plain[seen, knn]).any(), "the user's own pairs were in the plain score"
    mean = CONTEXT_NAMES.index("knn_mean")  # averaged over the user's other seen items
    np.testing.assert_allclose(with_user[seen, mean], left_out[seen, mean] * len(seen) / (len(seen) - 1),
                               rtol=1e-5, atol=1e-6)


def test_task_context_comes_only_from_events_before_the_cut():
    """Rewriting every event from a task's first query on must not change the task's features; rewriting one
    event just before its snapshot must (the check can fail)."""
    log = small_log()
    cfg = default_config(log)
    tasks = sample_tasks(user_tracks(log, cfg.objective), 32, cfg, np.random.default_rng(0))
    (with_ctx,), _ = attach_context(log, [tasks], log.n_items)
    row = int(np.argmax(tasks.cut_at.numpy()))
    cut = int(tasks.cut_at[row])
    assert cut >= SNAPSHOT_EVERY and tasks.qry_mask[row].any()
    future = log.take(np.arange(len(log)))
    future.items = future.items.copy()
    future.items[cut:] = np.random.default_rng(1).integers(0, log.n_items, len(log) - cut)
    (changed,), _ = attach_context(future, [tasks], log.n_items)
    np.testing.assert_array_equal(changed.context[row].numpy(), with_ctx.context[row].numpy())
    past = log.take(np.arange(len(log)))
    past.items = past.items.copy()
    snapshot = cut - cut % SNAPSHOT_EVERY
    past.items[snapshot - 1] = (past.items[snapshot - 1] + 1) % log.n_items
    (moved,), _ = attach_context(past, [tasks], log.n_items)
    assert not np.array_equal(moved.context[row].numpy(), with_ctx.context[row].numpy())


def test_saved_statistics_give_the_same_features():
    log = small_log()
    stats = replay_stats(log)
    arrays, meta = stats.to_state()
    back = ItemStats.from_state(arrays, meta)
    seen, recent = [[0, 3, 5], []], [[5, 3], []]
    np.testing.assert_array_equal(back.context(seen, recent), stats.context(seen, recent))
    assert back.book is None  # users' histories are not saved: a served user brings their own


def test_observed_events_move_a_new_users_list(world, tmp_path):
    world.model.save(tmp_path / "m")
    model = type(world.model).load(tmp_path / "m")  # a copy: the shared model's statistics stay as they are
    assert model.stats is not None and model.stats.events == world.model.stats.events
    target = model.item_ids[-1]
    before = model.recommend([AdaptRequest("newcomer", [], frozenset())], 5)[0].items
    model.observe([(f"fan{n}", target, float(world.log.ts.max()) + n) for n in range(300)])
    after = model.recommend([AdaptRequest("newcomer", [], frozenset())], 5)[0].items
    assert target not in before and target in after


@pytest.mark.parametrize("extra", [1, 3])
def test_growing_the_catalogue_keeps_counts(extra):
    stats = replay_stats(small_log())
    counts = stats.counts.copy()
    stats.grow(extra)
    assert stats.context([[0]], [[0]]).shape[1] == len(counts) + extra
    np.testing.assert_array_equal(stats.counts[: len(counts)], counts)


def served_context(model, request: AdaptRequest) -> np.ndarray:
    """(N, C) the features ranking computes for one request, for every item."""
    batch, reader = model._encode(model._snap, [request])
    return reader.at(np.arange(len(model.item_ids))[None, :])[0]


def test_serving_scores_a_users_own_items_with_the_user_left_out(world, tmp_path):
    """A request's history says which of the user's items the statistics counted: those are scored with the
    user left out, as training scores each task's user; the fresh ones are not."""
    world.model.save(tmp_path / "m")
    model = type(world.model).load(tmp_path / "m")
    a, b = model.item_ids[:2]
    t = float(world.log.ts.max())
    model.learn([LearnedUser("pair-fan", (), ((a, t, None), (b, t + 1, None)))])
    request = AdaptRequest("pair-fan", [(a, 1.0), (b, 1.0)], frozenset({a, b}), history=(a, b))
    served = served_context(model, request)
    knn = CONTEXT_NAMES.index("log_knn")
    stats = model.stats
    plain = stats.context([[0, 1]], [[0, 1]])[0]
    stats.book = HistoryBook()  # an offline replay that counted the pair
    stats.book.set("pair-fan", [0, 1])
    left_out = stats.context([[0, 1]], [[0, 1]], ["pair-fan"])[0]
    assert served[0, knn] == pytest.approx(left_out[0, knn]) and served[0, knn] < plain[0, knn]
    fresh = served_context(model, AdaptRequest("pair-fan", [(a, 1.0), (b, 1.0)], frozenset({a, b}),
                                               history=(a, b), fresh=2))
    assert fresh[0, knn] == pytest.approx(plain[0, knn])


def test_training_features_leave_each_tasks_user_out():
    """A task's support items carry the left-out kNN score, keyed as the replay keys users."""
    log = small_log()
    cfg = default_config(log)
    tasks = sample_tasks(user_tracks(log, cfg.objective), 32, cfg, np.random.default_rng(0))
    (with_ctx,), _ = attach_context(log, [tasks], log.n_items)
    knn = CONTEXT_NAMES.index("log_knn")
    checked = arrival = 0
    for row in np.argsort(-tasks.cut_at.numpy())[:8].tolist():  # late cuts: snapshots hold the pairs
        cut = int(tasks.cut_at[row])
        stats = replay_stats(log, cut - cut % SNAPSHOT_EVERY)
        seen = tasks.seen[1][tasks.seen[0] == row].tolist()
        recent = tasks.sup_items[row][tasks.sup_mask[row]].tolist()
        key = log.user_ids[int(tasks.users[row])]
        expected = stats.context([seen], [recent], [key], [recent])[0].astype(np.float16)
        np.testing.assert_array_equal(with_ctx.context[row].numpy(), expected)
        plain = stats.context([seen], [recent])[0].astype(np.float16)
        checked += not np.array_equal(plain[seen, knn], expected[seen, knn])
        latest = stats.context([seen], [recent], [key])[0].astype(np.float16)  # support transitions from now
        arrival += not np.array_equal(latest, expected)
    assert checked, "some task's user must have counted pairs, or the check says nothing"
    assert arrival, "some task's support must carry transitions at arrival, or the check says nothing"


def test_support_items_carry_their_transitions_at_arrival_with_the_user_left_out():
    """A support item's transition features are what the statistics without the user say of it following
    the support items before it; the catalogue's other items keep the features of the user's latest items."""
    log = small_log()
    user = int(np.bincount(log.users).argmax())
    key = log.user_ids[user]
    stats = replay_stats(log)
    without = replay_stats(log.take(np.flatnonzero(log.users != user)))
    support = list(dict.fromkeys(log.items[log.users == user].tolist()))  # the user's items, first arrival order
    assert len(support) >= 5
    seen = sorted(support)
    got = stats.context([seen], [support[-3:]], [key], [support])[0]  # (N, C)
    plain = stats.context([seen], [support[-3:]], [key])[0]
    cols = [CONTEXT_NAMES.index("log_share_transitions"), CONTEXT_NAMES.index("transition_share")]
    for s, item in enumerate(support):
        before = support[max(0, s - 3) : s]
        expected = without.context([seen], [before])[0][item, cols] if before else np.zeros(2)
        np.testing.assert_allclose(got[item, cols], expected, rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(np.arange(log.n_items), support)
    np.testing.assert_array_equal(got[others], plain[others])
    assert not np.allclose(got[support][:, cols], plain[support][:, cols]), "the check must be able to fail"


def test_serving_gives_support_items_their_transitions_at_arrival(world, tmp_path):
    """The Recommender hands each request's support, in order, to the statistics (as training does)."""
    world.model.save(tmp_path / "m")
    model = type(world.model).load(tmp_path / "m")
    ids = model.item_ids[:4]
    t = float(world.log.ts.max())
    model.observe([("walker", i, t + n) for n, i in enumerate(ids)])
    request = AdaptRequest("walker", [(i, 1.0) for i in ids], frozenset(ids))
    served = served_context(model, request)
    expected = model.stats.context([[0, 1, 2, 3]], [[0, 1, 2, 3]], ["walker"], [[0, 1, 2, 3]])[0]
    latest = model.stats.context([[0, 1, 2, 3]], [[0, 1, 2, 3]], ["walker"])[0]
    share = CONTEXT_NAMES.index("transition_share")
    np.testing.assert_allclose(served, expected, rtol=1e-6)
    assert not np.allclose(served[:4, share], latest[:4, share])


def test_learning_with_histories_counts_as_an_offline_replay_does():
    """The stream's records (history before, events) and an offline replay's book give the same statistics,
    whatever the batches, and the stream's way keeps nothing per user."""
    log = small_log()
    replayed = replay_stats(log)
    streamed, history = ItemStats(log.n_items), {}
    for start in range(0, len(log), 37):  # batches of 37 events, grouped per user as the worker groups them
        part = slice(start, start + 37)
        records = {}
        for user, item, t in zip(log.users[part].tolist(), log.items[part].tolist(), log.ts[part].tolist()):
            key = log.user_ids[user]
            records.setdefault(key, (list(history.get(key, [])), []))[1].append((item, t, None))
            history[key] = list(dict.fromkeys(history.get(key, []) + [item]))
        streamed.learn([Learned(k, h, e) for k, (h, e) in records.items()])
    assert streamed.book is None
    for name in ("counts", "n_users_of", "position", "out_degree"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(replayed, name))
    np.testing.assert_allclose(streamed.decayed, replayed.decayed, rtol=1e-9)
    for name in ("cooc", "transitions"):
        np.testing.assert_allclose(getattr(streamed, name).counts, getattr(replayed, name).counts, rtol=1e-6)


def test_an_event_s_count_weight_is_what_it_adds_to_the_counts():
    from models.features.history import Learned

    plain, weighted = ItemStats(3), ItemStats(3)
    plain.learn([Learned("u", [], [(0, 1e9, None), (1, 1e9 + 1, None)])])
    weighted.learn([Learned("u", [], [(0, 1e9, None, 3.0), (1, 1e9 + 1, None, 0.5)])])
    assert plain.counts.tolist() == [1.0, 1.0, 0.0]
    assert weighted.counts.tolist() == [3.0, 0.5, 0.0]
    assert weighted.decayed[:, 0] / plain.decayed[:, 0] == pytest.approx([3.0, 3.0])
    assert weighted.n_users_of.tolist() == plain.n_users_of.tolist(), "first arrivals stay binary"
