"""The training-only item bias plus the user's support offset: a reference the cold-start target is set against."""

from __future__ import annotations

import numpy as np

from models.data.events import build_log
from models.eval.coldstart.methods import ItemBiasUserOffset, TaskData


def _log():
    """Item "good" is rated 5 by everyone, "bad" 1; "mid" 3. User "harsh" rates everything one star lower."""
    users, items, values = [], [], []
    for u in range(20):
        name = "harsh" if u == 0 else f"u{u}"
        for item, value in (("good", 5.0), ("bad", 1.0), ("mid", 3.0)):
            users.append(name)
            items.append(item)
            values.append(value - (1.0 if u == 0 else 0.0))
    users.append("u1")  # an item only the test tasks will meet has no training rating
    items.append("new")
    values.append(3.0)
    log = build_log(users, items, np.arange(len(users), dtype=float), np.asarray(values), ["rating"] * len(users),
                    name="bias", explicit=True)
    keep = np.flatnonzero(log.items != log.item_ids.index("new"))
    return log, log.take(keep)


def _task(log, support: dict[str, float], query: list[str]) -> TaskData:
    idx = [log.item_ids.index(i) for i in support]
    return TaskData(0, np.asarray(idx), np.asarray(list(support.values()), np.float32), np.zeros(len(idx)),
                    np.asarray([log.item_ids.index(i) for i in query]), None)


def test_item_biases_come_from_training_and_the_offset_from_the_support():
    full, train = _log()
    method = ItemBiasUserOffset(item_shrink=0.0, user_shrink=0.0)
    method.fit(train, [])
    # a user who rated "mid" 4 (one above everyone): predicted one above everyone on "good" and "bad" too
    (pred,) = method.predict([_task(full, {"mid": 4.0}, ["good", "bad", "new"])])
    good, bad, new = pred.tolist()
    assert good > bad + 3.5
    assert abs(good - 5.9) < 0.15 and abs(bad - 1.9) < 0.15, pred
    # an item without training ratings gets no item bias: the mean plus the user's offset
    assert abs(new - (method.mean + 1.0)) < 0.15, pred


def test_user_biases_are_fitted_jointly_so_harsh_raters_do_not_pull_their_items_down():
    # ten harsh users rate "good" 4 and "mid" 2; ten others rate "mid" 3 and "bad" 1: "good" is rated by harsh
    # users alone, and only the joint fit sees (on "mid") that they rate low
    rows = [(f"h{u}", "good", 4.0) for u in range(10)] + [(f"h{u}", "mid", 2.0) for u in range(10)]
    rows += [(f"n{u}", "mid", 3.0) for u in range(10)] + [(f"n{u}", "bad", 1.0) for u in range(10)]
    users, items, values = zip(*rows)
    train = build_log(list(users), list(items), np.arange(len(rows), dtype=float), np.asarray(values),
                      ["rating"] * len(rows), name="harsh", explicit=True)
    joint = ItemBiasUserOffset(item_shrink=0.0, user_shrink=0.0, rounds=20)
    one_round = ItemBiasUserOffset(item_shrink=0.0, user_shrink=0.0, rounds=1)
    joint.fit(train, [])
    one_round.fit(train, [])
    good = train.item_ids.index("good")
    assert joint.item_bias[good] > one_round.item_bias[good] + 0.2


def test_shrinkage_pulls_a_short_support_towards_no_offset():
    full, train = _log()
    loose, shrunk = ItemBiasUserOffset(user_shrink=0.0), ItemBiasUserOffset(user_shrink=3.0)
    loose.fit(train, [])
    shrunk.fit(train, [])
    task = _task(full, {"mid": 5.0}, ["mid"])
    (a,), (b,) = loose.predict([task]), shrunk.predict([task])
    assert a[0] > b[0] > loose.predict([_task(full, {"mid": 3.0}, ["mid"])])[0][0]
