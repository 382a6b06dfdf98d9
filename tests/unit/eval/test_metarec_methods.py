"""metarec under the stream protocol: chunks give the one-by-one lists; the variants are what they say."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.data.events import EventLog
from models.eval.metarec_methods import MetarecMethod, Schedule, TrainingCache
from models.eval.methods import BatchRanker, Query
from models.eval.stream_protocol import plan_stream, replay
from models.serving.candidates import CandidateBudget
from tests.unit.eval.conftest import make_log, planted_stream

TINY = Schedule(steps=2, retrain_steps=1, retrain_every=40)


class OneByOne:
    """The same method with its batch interface hidden, so the protocol ranks event by event."""

    def __init__(self, inner: MetarecMethod) -> None:
        self.inner, self.name = inner, inner.name

    def fit_prefix(self, log: EventLog) -> None:
        self.inner.fit_prefix(log)

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return self.inner.rank(user, k, exclude)

    def predict_rating(self, user: int, item: int) -> float | None:
        return self.inner.predict_rating(user, item)

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self.inner.learn(user, item, value, type_code, ts)


def rated(log: EventLog) -> EventLog:
    """The planted stream as ratings: planted items 4-5 stars, the rare ones 1-2."""
    rows = [(log.user_ids[u], log.item_ids[i], t, 5.0 - (i % 2) if int(log.item_ids[i][1:]) < 20 else 1.5)
            for u, i, t in zip(log.users.tolist(), log.items.tolist(), log.ts.tolist())]
    return make_log(rows, explicit=True)


@pytest.fixture(scope="module")
def cache() -> TrainingCache:
    return TrainingCache()


@pytest.mark.parametrize("explicit", [False, True])
def test_chunked_replay_equals_one_by_one(cache, explicit):
    log = planted_stream(seed=4, users=10)
    plan = plan_stream(rated(log) if explicit else log, 0.3)
    batched = MetarecMethod("metarec", 0, TINY, cache)
    assert isinstance(batched, BatchRanker) and not isinstance(OneByOne(batched), BatchRanker)
    chunked = replay(batched, plan).summary()
    single = replay(OneByOne(MetarecMethod("metarec", 0, TINY, cache)), plan).summary()
    assert batched.rounds > 2  # re-trained along the stream
    for metric in ("hr@10", "ndcg@10"):
        assert chunked[metric] == pytest.approx(single[metric])
    if explicit:
        assert chunked["mae"] == pytest.approx(single["mae"], abs=1e-5)
        assert 0 < chunked["mae"] < 4
    else:
        assert chunked["mae"] is None


def test_variants_share_training_and_differ_only_in_the_head(cache):
    plan = plan_stream(planted_stream(seed=4, users=10), 0.3)
    variants = ("metarec", "metarec-no-adapt", "metarec-finetune")
    methods = {v: MetarecMethod(v, 0, TINY, cache) for v in variants}
    for m in methods.values():
        m.fit_prefix(plan.prefix)
    base = methods["metarec"].model
    still = methods["metarec-no-adapt"]
    assert still.model.model is base.model and still.steps == 0  # the same meta-parameters
    assert still.model.stats is not base.stats  # each variant feeds statistics of its own
    veteran = int(plan.prefix.users[0])
    newcomer = next(u for u in range(plan.log.n_users) if u not in still.support)

    def scores(method: MetarecMethod, user: int) -> np.ndarray:
        request = method._request(Query(user, set()))
        return method.model.predict([request], plan.log.item_ids, steps=method.steps)

    assert np.allclose(scores(still, veteran), scores(still, newcomer))  # the init alone: history unused
    assert not np.allclose(scores(methods["metarec"], veteran), scores(methods["metarec"], newcomer))
    tuned = methods["metarec-finetune"].model.model
    assert torch.count_nonzero(tuned.head_w) == 0
    lrs = tuned.step_sizes()["w"]
    lrs = lrs[lrs > 0]  # a taste vector that is not adapted has step sizes of zero
    assert len(lrs) and torch.allclose(lrs, torch.full_like(lrs, TINY.finetune_lr))
    for name in ("item_emb", "feat_proj"):  # the same trained item tower for all three
        assert torch.equal(getattr(tuned, name), getattr(base.model, name))
    assert methods["metarec-finetune"].trained is methods["metarec"].trained  # trained once


def test_support_is_bounded_like_the_workers_state(cache):
    log = make_log([("u0", f"i{n}", float(n)) for n in range(12)] + [("u1", "i0", 20.0)])
    method = MetarecMethod("metarec", 0, Schedule(steps=1, support_size=5), cache)
    method.fit_prefix(log)
    assert [p.item for p in method.support[0]] == list(range(7, 12))
    assert sorted(method.rank(0, 3, set(range(10)))) == [10, 11]  # seen items never come back


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown metarec variant"):
        MetarecMethod("metarec-magic")


def test_the_candidate_stage_recall_is_recorded_and_full_scoring_has_none(cache):
    """Ranked among a few retrieved candidates, some scored items fall outside them: the recall says how many;
    ``metarec-full`` scores every item."""
    plan = plan_stream(planted_stream(seed=4, users=10), 0.3)
    small = replace(TINY, candidates=CandidateBudget(total=6, knn=3, next_items=2, position=2, popular=2,
                                                     taste=2, new=0))
    retrieving = replay(MetarecMethod("metarec", 0, small, cache), plan).summary()["candidate_recall"]
    assert retrieving is not None and 0.0 < retrieving["all"] < 1.0
    full = replay(MetarecMethod("metarec-full", 0, small, cache), plan).summary()["candidate_recall"]
    assert full is not None and full["all"] == 1.0
