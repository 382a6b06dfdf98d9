"""Requests become index arrays: negatives that depend on the user alone, histories that say what is counted."""

from __future__ import annotations

import numpy as np

from models.core.config import ModelConfig
from models.features.history import HistoryBook
from models.serving.encode import encode, negatives
from models.serving.requests import AdaptRequest


def _req(user: str, **kw) -> AdaptRequest:
    return AdaptRequest(user, kw.pop("support", []), kw.pop("exclude", ()), **kw)


def test_negatives_depend_on_the_user_and_seed_alone_and_cover_the_catalogue():
    alone = negatives([_req("user-7")], 500, 16, seed=3).numpy()
    in_batch = negatives([_req("user-1"), _req("user-7"), _req("user-2")], 500, 16, seed=3).numpy()
    np.testing.assert_array_equal(alone[0], in_batch[1])
    assert not np.array_equal(in_batch[0], in_batch[1])
    assert not np.array_equal(negatives([_req("user-7")], 500, 16, seed=4).numpy(), alone)
    many = negatives([_req(f"u{n}") for n in range(2000)], 50, 64, seed=0).numpy()
    counts = np.bincount(many.ravel(), minlength=50)
    assert many.min() >= 0 and many.max() < 50
    expected = many.size / 50
    assert ((counts - expected) ** 2 / expected).sum() < 2 * 50  # chi-square far below a skewed draw's


def test_a_request_history_says_which_items_are_counted_and_offline_callers_use_the_book():
    index = {f"i{n}": n for n in range(10)}
    cfg = ModelConfig(n_items=10, n_context=12)
    served = encode(index, [_req("u", support=[("i1", 1.0), ("i2", 1.0)], exclude={"i1", "i2", "i3"},
                                 history=("i3", "i1", "i2"), fresh=1)], cfg, True)
    tail = served.views.tail[0]
    assert tail[-3:].tolist() == [3, 1, 2] and served.views.counted[0, -3:].tolist() == [True, True, False]
    book = HistoryBook()
    book.set("v", [5, 4])
    offline = encode(index, [_req("v", support=[("i4", 1.0)], exclude={"i4", "i5", "i6"})], cfg, True, book)
    assert offline.views.tail[0, -3:].tolist() == [5, 4, 6]  # the book's, then what it has not counted
    assert offline.views.counted[0, -3:].tolist() == [True, True, False]
    assert offline.views.n_seen[0] == 3
