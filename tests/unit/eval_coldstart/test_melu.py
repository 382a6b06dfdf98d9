"""MeLU: fields from side tables; local updates touch only the decision layers, global ones embeddings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models.data.events import EventLog
from models.eval.coldstart.fields import field_table
from models.eval.coldstart.melu import LOCAL_NAMES, MeLU, MeLUConfig, local_update
from models.eval.coldstart.methods import task_data
from models.eval.coldstart.protocol import training_inputs
from models.eval.coldstart.split import coldstart_split

LogFactory = Callable[..., EventLog]


def _fitted(log: EventLog, **cfg: float) -> tuple[MeLU, list]:
    split = coldstart_split(log)
    train_log, train_tasks = training_inputs(log, split)
    melu = MeLU(MeLUConfig(epochs=1, **cfg))  # type: ignore[arg-type]
    melu.fit(train_log, train_tasks)
    tests = [task_data(log, t, with_labels=False) for t in split.test_tasks["new_user"]]
    return melu, tests


def test_fields_from_feature_names(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=10, n_items=20, per_user=15)
    items = field_table(log.item_features, log.item_feature_names, log.n_items, bins=4)
    assert (
        items.names == ["year", "genre"] and items.vocab == [4] and items.multi[0].shape == (log.n_items, 3)
    )
    users = field_table(log.user_features, log.user_feature_names, log.n_users, bins=4)
    assert users.names == ["age", "gender"] and users.vocab == [4, 3]
    np.testing.assert_array_equal(users.codes[:, 1], log.user_features[:, 1:].argmax(axis=1))
    empty = field_table(None, [], 5)
    assert empty.names == ["constant"] and empty.codes.shape == (5, 1)


def test_local_update_changes_only_decision_layers(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=30, n_items=40, per_user=30)
    melu, tests = _fitted(log, local_lr=0.05)
    net = melu.net
    assert net is not None
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x = net.embed(torch.tensor([[0, 1, 2, 3]]), torch.zeros(1, 4, dtype=torch.long))  # (1, 4, D)
    y, m = torch.tensor([[5.0, 1.0, 5.0, 1.0]]), torch.ones(1, 4)
    fc = local_update(net.local_params(), x, y, m, steps=5, lr=0.05, create_graph=False)
    assert set(fc) == set(LOCAL_NAMES)
    assert all(not torch.equal(fc[k][0], before[k]) for k in LOCAL_NAMES)  # every decision layer moved
    melu.predict(tests)
    after = net.state_dict()
    assert all(
        torch.equal(before[k], after[k]) for k in before
    )  # adapting for prediction changed no meta-param
    local = {id(p) for p in net.local_params().values()}
    assert all(id(p) not in local for n, p in net.named_parameters() if "emb" in n)


def test_global_update_reaches_embeddings(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=30, n_items=40, per_user=30)
    split = coldstart_split(log)
    train_log, train_tasks = training_inputs(log, split)
    first = MeLU(MeLUConfig(epochs=0))
    first.fit(train_log, train_tasks)
    trained = MeLU(MeLUConfig(epochs=1, global_lr=1e-2))
    trained.fit(train_log, train_tasks)
    init, done = first.net.state_dict(), trained.net.state_dict()  # type: ignore[union-attr]
    emb_keys = [k for k in init if "emb" in k and k.endswith("weight")]
    assert emb_keys and all(not torch.equal(init[k], done[k]) for k in emb_keys)


def test_predictions_depend_on_support(make_ratings_log: LogFactory) -> None:
    log = make_ratings_log(n_users=30, n_items=40, per_user=30)
    melu, tests = _fitted(log, local_lr=0.005)
    task = tests[0]
    high = type(task)(**{**task.__dict__, "support_values": np.full_like(task.support_values, 5.0)})
    low = type(task)(**{**task.__dict__, "support_values": np.full_like(task.support_values, 1.0)})
    p_high, p_low = melu.predict([high, low])
    assert p_high.shape == (10,) and (p_high > p_low).all()
