"""Batching changes speed, never results: the same events give the same per-user state and recommendations
whether they arrive one by one or in large batches.

The handler's steps are run purely (``decode`` and ``plan`` against a dict store, ``Recommender.recommend``,
``settle``), with a small untrained model: equivalence does not depend on what the model learned.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.serving.recommender import Recommender
from schemas.decode import decode_recommendation, encode
from schemas.records import Interaction, UserAttributes, UserDeletion
from stream.model_worker import Served
from stream.pipeline import RawMessage, Rules, decode, plan, settle
from stream.state import Limits, UserState, decode_state

TS = 1_700_000_000.0
NOW = TS + 10_000
ITEMS = [f"i{n}" for n in range(40)]
TYPES = ("view", "click", "cart", "purchase", "rating")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["implicit", "rating"])
def model(request) -> Recommender:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=6, max_support=6, objective=request.param
    )
    return Recommender(MetaRec(cfg), ITEMS, version="v-test")


def event_stream(n: int, seed: int) -> list[RawMessage]:
    """Interactions of a few users (skewed), with redeliveries, attribute updates and mid-stream deletions."""
    rng = random.Random(seed)
    users = [f"u{k}" for k in range(6)]
    records = []
    for i in range(n):
        user = users[min(int(rng.expovariate(0.6)), len(users) - 1)]
        kind = rng.random()
        if kind < 0.04:
            records.append(
                UserAttributes(event_id=f"a{i}", user_id=user, ts=TS + i, attributes={"plan": "pro"})
            )
        elif kind < 0.06:
            records.append(UserDeletion(event_id=f"d{i}", user_id=user, ts=TS + i))
        else:
            kind_name = rng.choice(TYPES)
            records.append(
                Interaction(
                    event_id=f"e{i}",
                    user_id=user,
                    item_id=rng.choice(ITEMS),
                    type=kind_name,
                    ts=TS + i,
                    value=float(rng.randint(1, 5)) if kind_name == "rating" else None,
                )
            )
        if i and rng.random() < 0.05:
            records.append(records[rng.randrange(len(records))])  # a redelivery of an earlier event
    return [
        RawMessage(r.user_id.encode(), encode(r), "interactions", 0, i, TS + i) for i, r in enumerate(records)
    ]


def replay(model: Recommender, messages: list[RawMessage], batch: int):
    """Run the stream in batches of ``batch``; the final store and each user's last list with its trigger."""
    rules = Rules(limits=Limits(support_size=6, seen_max=12, recent_ids=64))
    store: dict[str, bytes] = {}
    last_sent: dict[str, tuple[str, list[str], list[float]]] = {}
    for start in range(0, len(messages), batch):
        decoded = decode(messages[start : start + batch], rules, NOW)
        assert not decoded.dead
        states = {u: decode_state(store.get(u)) for u in decoded.users}
        planned = plan(decoded, states, rules, model.config.objective)
        results = model.recommend(planned.requests, 5)
        done = settle(planned, [Served(r, model.version) for r in results], NOW)
        for key in done.tombstones:
            last_sent.pop(key.decode(), None)  # no list stands for this user
        for key, value in done.lists:
            rec = decode_recommendation(value)
            items, scores = [i.item_id for i in rec.items], [i.score for i in rec.items]
            last_sent[key.decode()] = (rec.event_id, items, scores)
        for write in done.writes:
            if write.value is None:
                store.pop(write.key.decode(), None)
            else:
                store[write.key.decode()] = write.value
    return store, last_sent


def assert_same_state(one: UserState, other: UserState) -> None:
    head_one, head_other = np.frombuffer(one.head, np.float32), np.frombuffer(other.head, np.float32)
    np.testing.assert_allclose(head_one, head_other, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.last_scores, other.last_scores, rtol=1e-5, atol=1e-6)  # the list's scores
    one.head = other.head = b""
    one.last_scores = other.last_scores = []
    one.seq = other.seq = 0  # lists sent: one per user and batch, so batching changes how many, by design
    assert one == other


N_EVENTS = 120


@pytest.fixture(scope="module")
def one_by_one(model):
    """The reference: every event its own batch (computed once per model, it is the slow one)."""
    return replay(model, event_stream(N_EVENTS, seed=1), 1)


@pytest.mark.parametrize("batch", [7, 1000])
def test_batched_replay_matches_one_event_at_a_time(model, one_by_one, batch):
    store_one, sent_one = one_by_one
    store_many, sent_many = replay(model, event_stream(N_EVENTS, seed=1), batch)
    assert store_one.keys() == store_many.keys()
    for user in store_one:
        assert_same_state(decode_state(store_one[user]), decode_state(store_many[user]))
    assert sent_one.keys() == sent_many.keys()
    for user, (trigger, items, scores) in sent_one.items():
        trigger_many, items_many, scores_many = sent_many[user]
        assert (trigger, items) == (trigger_many, items_many), user
        np.testing.assert_allclose(scores, scores_many, rtol=1e-5, atol=1e-5)


def test_the_stream_exercises_deletions_redeliveries_and_several_users(model):
    """Guards the test above against a generator that stopped producing the hard cases."""
    messages = event_stream(N_EVENTS, seed=1)
    decoded = decode(messages, Rules(), NOW)
    planned = plan(decoded, {u: UserState() for u in decoded.users}, Rules(), "implicit")
    assert len(planned.users) >= 4
    assert planned.duplicates > 0
    assert planned.forget and planned.learned
