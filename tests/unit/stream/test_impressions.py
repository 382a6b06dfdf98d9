"""Impressions in state and in the requests: shown items are remembered (bounded, not the user's own), a take
forgets them, those shown longer than the window ago become negatives, those shown too often are excluded."""

from __future__ import annotations

from schemas.decode import encode
from schemas.records import Impression, Interaction
from stream.pipeline import RawMessage, Rules, adapt_request, decode, plan
from stream.state import (
    Limits,
    Shown,
    UserState,
    apply_impression,
    decode_state,
    demoted,
    encode_state,
    shown_negatives,
    take_shown,
)

TS = 1_700_000_000.0


def shown(items, ts=TS, n=0, user="u") -> Impression:
    return Impression(event_id=f"imp{n}", user_id=user, list_id=f"l{n}", items=list(items), ts=ts)


def took(item, ts, n=0, user="u") -> Interaction:
    return Interaction(event_id=f"e{n}", user_id=user, item_id=item, type="click", ts=ts)


def msg(event, offset) -> RawMessage:
    return RawMessage(event.user_id.encode(), encode(event), "interactions", 0, offset, event.ts)


def run(events, state=None, rules=Rules()):
    decoded = decode([msg(e, n) for n, e in enumerate(events)], rules, TS + 1e6)
    return plan(decoded, {"u": state or UserState()}, rules, "implicit")


def test_an_impression_counts_each_shown_item_once_and_skips_the_user_s_own():
    state = UserState(seen=["own"])
    assert apply_impression(state, shown(["a", "b", "a", "own"]), Limits())
    assert not apply_impression(state, shown(["a"]), Limits()), "the same event twice counts once"
    apply_impression(state, shown(["b", "c"], TS + 10, n=1), Limits())
    assert state.shown == [Shown("a", TS, TS, 1, 0), Shown("b", TS, TS + 10, 2, 0), Shown("c", TS + 10, TS + 10, 1, 1)]
    assert decode_state(encode_state(state)).shown == state.shown


def test_shown_items_are_bounded_and_the_longest_shown_go_first():
    state = UserState()
    for n in range(5):
        apply_impression(state, shown([f"i{n}"], TS + n, n), Limits(shown_max=3))
    assert [s.item_id for s in state.shown] == ["i2", "i3", "i4"]


def test_negatives_are_items_shown_longer_than_the_window_ago_latest_first():
    state = UserState(shown=[Shown("old", TS, TS, 1), Shown("mid", TS + 50, TS + 50, 1),
                             Shown("new", TS + 290, TS + 290, 1)])
    assert shown_negatives(state, TS + 300, 100, 10) == ["mid", "old"]
    assert shown_negatives(state, TS + 300, 100, 1) == ["mid"]
    assert demoted(UserState(shown=[Shown("x", TS, TS, 3), Shown("y", TS, TS, 2)]), 3) == ["x"]
    assert demoted(UserState(shown=[Shown("x", TS, TS, 9)]), 0) == []


def test_a_take_forgets_the_item_and_the_request_carries_negatives_and_demotions():
    rules = Rules(impression_window_s=60, demote_after=2, by_skips=False)
    events = [shown(["a", "b", "c"], TS, 0), shown(["b", "c"], TS + 10, 1), took("a", TS + 100, 2)]
    batch = run(events, rules=rules)
    work = batch.users["u"]
    assert [s.item_id for s in work.state.shown] == ["b", "c"], "taken items are no longer shown-not-taken"
    assert work.impressions == 2 and work.applied == 1 and batch.processed == 3
    (request,) = batch.requests
    assert request.negatives == ("c", "b")
    assert {"b", "c", "a"} <= set(request.exclude), "demoted items are excluded like seen ones"
    assert [s[0] for s in request.support] == ["a"], "an impression is not a positive"


def test_impressions_alone_trigger_no_list_and_teach_the_statistics_nothing():
    batch = run([shown(["a", "b"])])
    assert not batch.requests and not batch.learned and batch.users["u"].state.shown


def test_the_window_is_measured_in_event_time_at_the_trigger():
    rules = Rules(impression_window_s=600, by_skips=False)
    early = run([shown(["x"], TS, 0), took("y", TS + 60, 1)], rules=rules)
    assert early.requests[0].negatives == ()
    late = run([shown(["x"], TS, 0), took("y", TS + 601, 1)], rules=rules)
    assert late.requests[0].negatives == ("x",)
    assert adapt_request("u", late.users["u"].state, "implicit", rules=rules).negatives == ("x",)


def test_a_take_marks_the_items_shown_above_it_in_the_same_impression_as_skipped():
    state = UserState()
    apply_impression(state, shown(["a", "b", "c", "d"], TS, 0), Limits())
    apply_impression(state, shown(["x", "a"], TS + 5, 1), Limits())  # a re-shown, now below x
    take_shown(state, "c")
    assert {s.item_id: s.skips for s in state.shown} == {"a": 0, "b": 1, "d": 0, "x": 0}, \
        "only b was above c in the impression c was last shown in (a moved to a later one)"
    take_shown(state, "a")
    assert {s.item_id: s.skips for s in state.shown} == {"b": 1, "d": 0, "x": 1}
    assert shown_negatives(state, TS + 10, 0, 10, skipped=True) == ["x", "b"]
    assert demoted(state, 1, skips=True) == ["b", "x"] and demoted(state, 2, skips=True) == []


def test_by_default_only_items_skipped_for_a_take_become_negatives_and_none_is_demoted():
    events = [shown(["a", "b", "c", "d"], TS, 0), took("c", TS + 5, 1), shown(["b", "e"], TS + 6, 2),
              took("x", TS + 9, 3)]
    batch = run(events)
    (request,) = batch.requests
    assert request.negatives == ("b", "a"), "a and b were shown above c, which the user took"
    assert not {"a", "b", "d", "e"} & set(request.exclude), "no demotion by default"
