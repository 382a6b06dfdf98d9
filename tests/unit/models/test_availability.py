"""Item availability and restrictions in serving: an unavailable item is never retrieved nor ranked (with
candidates and with the whole catalogue scored), ``only`` restricts a call's lists, and the items a user was
shown and did not take are the inner loop's first negatives."""

from __future__ import annotations

import numpy as np
import torch

from models.serving.availability import Availability
from models.serving.candidates import CandidateBudget
from models.serving.encode import negatives, shown_negatives
from models.serving.recommender import AdaptRequest, Recommender


def _requests(world, users=range(600, 640)):
    log = world.log
    out = []
    for user in users:
        pos = np.flatnonzero(log.users == user)[:6]
        items = [log.item_ids[i] for i in log.items[pos]]
        out.append(AdaptRequest(log.user_ids[user], [(i, 1.0) for i in items], frozenset(items),
                                history=tuple(dict.fromkeys(items))))
    return out + [AdaptRequest("newcomer", [], frozenset())]


def _models(world, tmp_path):
    world.model.save(tmp_path / "m")
    budget = CandidateBudget(total=30, knn=15, next_items=5, position=5, popular=5, taste=5, new=0)
    return Recommender.load(tmp_path / "m", candidates=None), Recommender.load(tmp_path / "m", candidates=budget)


def test_an_unavailable_item_is_never_served_and_comes_back_when_available(world, tmp_path):
    requests = _requests(world)
    for model in _models(world, tmp_path):
        before = model.recommend(requests, 10)
        counts: dict[str, int] = {}
        for r in before:
            for item in r.items:
                counts[item] = counts.get(item, 0) + 1
        withdrawn = sorted(counts, key=counts.get, reverse=True)[:5]  # the most served items
        model.availability.set({i: False for i in withdrawn})
        after = model.recommend(requests, 10)
        assert all(r.items and not set(r.items) & set(withdrawn) for r in after)
        if model.candidates is None:  # the whole catalogue: the next best items fill the list
            assert all(len(r.items) == 10 for r in after)
        model.availability.set({i: True for i in withdrawn})
        again = model.recommend(requests, 10)
        assert [r.items for r in again] == [r.items for r in before]


def test_a_catalogue_grown_after_a_withdrawal_still_honours_it(world, tmp_path):
    _, model = _models(world, tmp_path)
    model.availability.set({"late-item": False})
    model.add_items(["late-item"], np.ones((1, model.config.n_item_features), np.float32))
    banned = model.availability.banned(model._snap.item_ids, model._snap.index)
    assert banned is not None and banned[model._snap.index["late-item"]] and banned.sum() == 1


def test_only_restricts_every_list_of_the_call(world, tmp_path):
    requests = _requests(world, range(600, 610))
    for model in _models(world, tmp_path):
        allowed = set(model.item_ids[40:60])
        for r, req in zip(model.recommend(requests, 8, only=allowed), requests):
            assert r.items and set(r.items) <= allowed - set(req.exclude)
        assert all(not r.items for r in model.recommend(requests[:2], 5, only={"no-such-item"}))


def test_shown_items_take_the_first_negative_slots():
    index = {f"i{n}": n for n in range(50)}
    requests = [AdaptRequest("a", [], (), negatives=("i7", "unknown", "i9")), AdaptRequest("b", [], ())]
    uniform = negatives(requests, 50, 8, seed=0)
    out = shown_negatives(index, requests, uniform)
    assert out[0, :2].tolist() == [7, 9] and torch.equal(out[0, 2:], uniform[0, 2:])
    rest = uniform[1:]
    assert torch.equal(out[1], uniform[1]) and shown_negatives(index, requests[1:], rest) is rest


def test_shown_negatives_push_those_items_down_for_that_user(world):
    model = world.model
    log = world.log
    pos = np.flatnonzero(log.users == 650)[:5]
    support = [(log.item_ids[i], 1.0) for i in log.items[pos]]
    plain = AdaptRequest("u650", support, frozenset(i for i, _ in support))
    (base,) = model.recommend([plain], 10)
    shown = tuple(base.items[:3])
    told = AdaptRequest("u650", support, plain.exclude, negatives=shown)
    scores = model.predict([plain, told], list(shown))
    assert (scores[1] < scores[0]).all(), "shown and not taken items should lose score"


def test_availability_sets_are_replaced_whole():
    availability = Availability()
    assert availability.banned(("a", "b"), {"a": 0, "b": 1}) is None
    first = availability.unavailable
    availability.set({"a": False})
    assert availability.unavailable == {"a"} and first == frozenset()
    availability.reset(["b"])
    assert availability.banned(("a", "b"), {"a": 0, "b": 1}).tolist() == [False, True]
