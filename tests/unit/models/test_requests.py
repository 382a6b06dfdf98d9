"""One way to build a request: the event-type table is one table, and the stream and the offline evaluation
hand the model the same request for the same events."""

from __future__ import annotations

import math
from collections import deque
from typing import get_args

import pytest

from models.core.targets import EVENT_TYPE_CODES, EVENT_TYPES, IMPLICIT_WEIGHTS, event_target
from models.data import events as data_events
from models.eval.metarec_methods import MetarecMethod, Schedule
from models.eval.methods import Pending, Query
from models.serving import recommender
from models.serving.requests import AdaptRequest, LearnedUser, build_request, support_targets, target
from schemas.records import Interaction, InteractionType
from stream import pipeline, state
from stream.state import Limits, UserState, apply_interaction

TS = 1_700_000_000.0


def test_every_module_speaks_the_same_event_types_with_the_same_codes():
    assert get_args(InteractionType) == EVENT_TYPES, "schemas/records.py decodes exactly the models' types"
    assert data_events.EVENT_TYPES is EVENT_TYPES
    assert state.EVENT_TYPE_CODES is EVENT_TYPE_CODES and state.EVENT_TYPE_NAMES is EVENT_TYPES
    assert [EVENT_TYPE_CODES[t] for t in EVENT_TYPES] == list(range(len(EVENT_TYPES)))
    assert set(IMPLICIT_WEIGHTS) | {"rating"} == set(EVENT_TYPES), "every type teaches the implicit objective"
    # codes are stored in states and event logs: the known ones may never move
    assert EVENT_TYPES[:6] == ("view", "click", "cart", "purchase", "rating", "play")


def test_the_request_type_is_importable_where_it_always_was():
    assert recommender.AdaptRequest is AdaptRequest


def test_support_is_mapped_by_event_target_and_untaught_events_are_left_out():
    support = [("a", "click", None, TS), ("b", "rating", 1.0, TS + 1), ("c", "rating", 4.0, TS + 2),
               ("d", "rating", math.nan, TS + 3), ("e", "play", 3.0, TS + 4)]
    expected = [(i, event_target(t, v, "implicit")) for i, t, v, _ in support]
    assert support_targets(support, "implicit") == [(i, w) for i, w in expected if w is not None]
    assert support_targets(support, "rating") == [("b", 1.0), ("c", 4.0)]


def test_the_memo_answers_like_event_target_also_for_nan():
    for _ in range(3):  # NaN is keyed as None: it must hit the memo, and answer as event_target does
        assert target("rating", float("nan"), "implicit") is None
    assert target("rating", 5.0, "implicit") == event_target("rating", 5.0, "implicit")
    with pytest.raises(ValueError):
        target("click", None, "regression")


def test_seen_items_become_the_history_in_arrival_order_and_the_exclusions():
    request = build_request("u", [("b", "click", None, TS)], "implicit", seen=["c", "a", "b"], fresh=9)
    assert request.history == ("c", "a", "b") and request.exclude == frozenset("abc")
    assert request.fresh == 3, "fresh is clamped to the history"
    unordered = build_request("u", [], "implicit", exclude={"x"}, user_features=[1.0])
    assert unordered.history == () and unordered.fresh == 0 and unordered.exclude == {"x"}
    assert unordered.user_features == [1.0]


def test_a_learned_user_record_is_a_plain_value():
    record = LearnedUser("u", ("a",), (("b", TS, None), ("c", TS + 1, 4.0)))
    assert record == ("u", ("a",), (("b", TS, None), ("c", TS + 1, 4.0)))
    assert record.history_before == ("a",) and record.events[1][2] == 4.0


@pytest.mark.parametrize("objective", ["implicit", "rating"])
def test_the_evaluation_and_the_stream_build_the_same_request_for_the_same_events(objective):
    """The offline evaluation must measure what the worker serves: same events in, same support and exclusions
    out (the evaluation keeps no arrival order, so only the stream fills ``history``)."""
    items = [f"i{n}" for n in range(8)]
    kinds = ["view", "rating", "click", "rating", "purchase", "rating", "play"]
    values = [math.nan, 4.0, math.nan, 1.0, math.nan, 5.0, 12.0]
    picked = [3, 1, 3, 0, 6, 2, 5]
    log = data_events.build_log(["u"] * 8, items, [TS + n for n in range(8)])

    method = MetarecMethod("metarec", schedule=Schedule(support_size=5))
    method.template, method.objective = log, objective
    learned = [Pending(i, v, EVENT_TYPES.index(k), TS + n)
               for n, (i, k, v) in enumerate(zip(picked, kinds, values))]
    method.support = {0: deque(learned[:5], maxlen=5)}
    query = Query(0, set(picked), tuple(learned[5:]))
    offline = method._request(query)

    stream_state = UserState()
    for n, (i, k, v) in enumerate(zip(picked, kinds, values)):
        event = Interaction(event_id=f"e{n}", user_id="u", item_id=items[i], type=k, ts=TS + n,
                                     value=None if math.isnan(v) else v)
        apply_interaction(stream_state, event, Limits(support_size=5))
    online = pipeline.adapt_request("u", stream_state, objective)

    assert offline.support == online.support and offline.support
    assert set(offline.exclude) == set(online.exclude)
    assert online.history == ("i3", "i1", "i0", "i6", "i2", "i5")
