"""Retrieve, then rank: bounded candidates from every source, nothing excluded, and lists like full scoring."""

from __future__ import annotations

import numpy as np

from models.serving.candidates import CandidateBudget, _distinct_allowed, excluded_keys
from models.serving.recommender import AdaptRequest, Recommender


def test_candidates_keep_first_proposals_drop_excluded_and_respect_the_budget():
    proposed = np.array([[3, 1, 3, -1, 2, 7], [5, 5, 4, 0, 1, 2]])
    excluded = excluded_keys(10, [np.array([2]), np.array([4, 0])])
    out = _distinct_allowed(proposed, 10, excluded, total=4)
    assert out.tolist() == [[3, 1, 7, -1], [5, 1, 2, -1]]
    assert _distinct_allowed(proposed, 10, excluded, total=2).tolist() == [[3, 1], [5, 1]]


def _users(world, n=12):
    log = world.log
    requests = []
    for user in np.unique(log.users)[:n].tolist():
        items = [world.model.item_ids[i] for i in log.items[log.users == user].tolist()][-10:]
        history = tuple(dict.fromkeys(items))
        requests.append(AdaptRequest(log.user_ids[user], [(i, 1.0) for i in items], frozenset(items),
                                     history=history))
    return requests + [AdaptRequest("newcomer", [], frozenset())]


def test_retrieval_proposes_a_bounded_set_and_ranks_it_as_full_scoring_would(world, tmp_path):
    """Candidates never include excluded items, stay within the budget, and each served item scores exactly
    as full scoring scores it (the same features and head, read at fewer columns)."""
    world.model.save(tmp_path / "m")
    full = Recommender.load(tmp_path / "m", candidates=None)
    budget = CandidateBudget(total=15, knn=8, next_items=4, position=3, popular=3, taste=3, new=0)
    retrieved = Recommender.load(tmp_path / "m", candidates=budget)
    requests = _users(world)
    assert len(full.item_ids) > budget.total
    want = full.recommend(requests, 5)
    got = retrieved.recommend(requests, 5)
    overlap = 0
    for request, a, b in zip(requests, want, got):
        assert not set(b.items) & set(request.exclude)
        scored = dict(zip(a.items, a.scores))
        for item, score in zip(b.items, b.scores):
            if item in scored:
                assert abs(score - scored[item]) < 1e-4
        overlap += len(set(a.items) & set(b.items))
        np.testing.assert_allclose(a.head, b.head, rtol=1e-5, atol=1e-6)  # adaptation is the same
    assert overlap >= 0.6 * 5 * len(requests), "retrieval missed most of what full scoring ranks first"
    batch, reader = retrieved._encode(retrieved._snap, requests)
    out = retrieved._adapt(retrieved._snap, requests, batch, reader, None)
    cols = retrieved._columns(retrieved._snap, batch, reader, out.heads)
    assert cols.shape[1] <= budget.total and (cols[-1] >= 0).sum() > 0  # a newcomer still gets candidates
