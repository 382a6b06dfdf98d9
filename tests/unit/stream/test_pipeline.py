"""The batch's two pure steps: ``plan`` (valid events change state once, invalid ones become dead letters, the
model is asked about every triggered user and taught every new interaction) and ``settle`` (what is written
and sent once the model answered). No Faust, no broker, no model: the answers are built by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from models.serving.recommender import AdaptResult
from schemas.decode import decode_recommendation, encode
from schemas.records import Interaction, UserAttributes, UserDeletion
from stream.pipeline import BatchPlan, RawMessage, Rules, adapt_request, decode, plan, replan, settle
from stream.state import Limits, UserState, apply_interaction, decode_state

TS = 1_700_000_000.0
NOW = TS + 1000


def msg(value: bytes | None, key: bytes | None, offset: int = 0, partition: int = 0) -> RawMessage:
    return RawMessage(key=key, value=value, topic="interactions", partition=partition, offset=offset,
                      timestamp=TS + offset)


def ev(i: int, user: str = "u1", item: str | None = None, **kw) -> RawMessage:
    kind = kw.pop("type", "click")
    record = Interaction(event_id=f"e{i}", user_id=user, item_id=item or f"i{i}", type=kind, ts=TS + i, **kw)
    return msg(encode(record), user.encode(), i)


def run_plan(messages, stored: dict[str, UserState] | None = None, rules: Rules = Rules(),
             objective: str = "implicit") -> BatchPlan:
    """What the handler does around ``plan``: decode, load each user's state once (here from a dict)."""
    stored = stored or {}
    decoded = decode(messages, rules, NOW)
    states = {u: stored.get(u, UserState()) for u in decoded.users}
    return plan(decoded, states, rules, objective)


def state_of(*items: str) -> UserState:
    state = UserState()
    for n, item in enumerate(items):
        apply_interaction(state, Interaction(event_id=f"old{n}", user_id="a", item_id=item, type="click",
                                             ts=TS - 100 + n), Limits())
    return state


@dataclass
class Answer:
    result: AdaptResult
    version: str


def answer(items: list[str], version: str = "v1", loss: float = 0.5) -> Answer:
    head = np.arange(3, dtype=np.float32)
    scores = [1.0 - 0.1 * n for n in range(len(items))]
    return Answer(AdaptResult(items, scores, head, loss, loss / 2), version)


# --- plan ---------------------------------------------------------------------------------------------------
def test_events_are_grouped_per_user_in_order_and_the_decoded_batch_names_each_user_once():
    decoded = decode([ev(1, "a"), ev(2, "b"), ev(3, "a"), ev(4, "a")], Rules(), NOW)
    assert decoded.users == {"a": 0, "b": 0}
    p = run_plan([ev(1, "a"), ev(2, "b"), ev(3, "a"), ev(4, "a")])
    assert [s.item_id for s in p.users["a"].state.support] == ["i1", "i3", "i4"]
    assert p.users["a"].trigger.event_id == "e4"
    assert p.processed == 4 and not p.dead


def test_malformed_events_become_dead_letters_with_reasons_and_valid_ones_go_on():
    good = ev(1, "a")
    bad = [
        msg(b"\xff\xfe not utf8", b"a"),
        msg(b"{not json", b"a"),
        msg(json.dumps({"kind": "interaction", "event_id": "x", "user_id": "a", "item_id": 5, "type": "click",
                        "ts": TS}).encode(), b"a"),
        msg(json.dumps({"kind": "interaction", "event_id": "x", "user_id": "a", "item_id": "i", "type": "teleport",
                        "ts": TS}).encode(), b"a"),
        msg(json.dumps({"kind": "interaction", "event_id": "x", "item_id": "i", "type": "click", "ts": TS}).encode(),
            b"a"),
        msg(json.dumps({"kind": "interaction", "event_id": "x", "user_id": "b", "item_id": "i", "type": "click",
                        "ts": TS}).encode(), b"a"),  # key is not the user
        msg(json.dumps({"kind": "interaction", "event_id": "x", "user_id": "a", "item_id": "i", "type": "click",
                        "ts": NOW + 10 * 86400}).encode(), b"a"),  # far future
        msg(None, b"a"),
    ]
    p = run_plan([bad[0], good, *bad[1:], ev(2, "a")])
    assert len(p.dead) == len(bad)
    assert all(d.reason and d.detail for d in p.dead)
    assert {d.reason for d in p.dead} >= {"not_utf8", "not_json", "wrong_type", "key_mismatch", "out_of_range"}
    assert p.users["a"].applied == 2
    assert "b" not in p.users, "a dead letter's user is not loaded"


def test_the_model_is_asked_about_every_triggered_user_with_their_support_and_seen_items():
    stored = {"a": state_of("x", "y")}
    attrs = UserAttributes(event_id="at", user_id="c", ts=TS, attributes={"plan": "pro"})
    batch = [ev(1, "a", item="y", type="purchase"), ev(2, "b", type="view"), msg(encode(attrs), b"c", 3)]
    p = run_plan(batch, stored)
    assert [w.user_id for w in p.wanted] == ["a", "b"], "c changed attributes only: no list"
    (ra, rb) = p.requests
    assert [r.user_id for r in p.requests] == ["a", "b"]
    assert ra.support == [("x", 0.5), ("y", 0.5), ("y", 1.0)]  # click 0.5, purchase 1.0 (event_target)
    assert ra.history == ("x", "y") and set(ra.exclude) == {"x", "y"}
    assert ra.fresh == 0, "a re-seen item is not fresh: the statistics already counted it"
    assert rb.history == ("i2",) and rb.fresh == 1


def test_history_keeps_first_arrival_order_and_fresh_counts_the_batch_s_new_items():
    batch = [ev(1, "a", item="z"), ev(2, "a", item="x"), ev(3, "a", item="w")]
    p = run_plan(batch, {"a": state_of("x", "y")})
    (request,) = p.requests
    assert request.history == ("x", "y", "z", "w")  # x re-seen keeps its place
    assert request.fresh == 2 and request.history[-request.fresh:] == ("z", "w")


def test_the_statistics_learn_each_new_interaction_once_with_the_history_before_the_batch():
    stored = UserState()
    apply_interaction(stored, Interaction(event_id="e1", user_id="a", item_id="i1", type="click", ts=TS + 1),
                      Limits())
    p = run_plan([ev(1, "a"), ev(2, "a", item="r", type="rating", value=4.0), ev(3, "b")], {"a": stored})
    by_user = {r.user_id: r for r in p.learned}
    assert by_user["a"].history_before == ("i1",)
    assert by_user["a"].events == (("r", TS + 2, 4.0),), "the redelivered e1 is not learned again"
    assert by_user["b"].history_before == () and by_user["b"].events == (("i3", TS + 3, None),)
    assert p.forget == []


def test_redelivered_events_are_not_counted_but_still_trigger_a_recommendation():
    stored = state_of()
    apply_interaction(stored, Interaction(event_id="e1", user_id="a", item_id="i1", type="click", ts=TS + 1),
                      Limits())
    p = run_plan([ev(1, "a")], {"a": stored})
    work = p.users["a"]
    assert work.applied == 0 and work.duplicates == 1
    assert work.state.interactions == 1
    assert work.trigger is not None, "a redelivered event must still get its (possibly lost) recommendation"
    assert p.learned == [] and len(p.requests) == 1


def test_deletion_resets_state_forgets_the_user_and_learns_only_what_came_after():
    stored = state_of("old-item")
    delete = msg(encode(UserDeletion(event_id="d1", user_id="a", ts=TS + 2)), b"a", 2)
    p = run_plan([ev(1, "a"), delete, ev(3, "a")], {"a": stored})
    work = p.users["a"]
    assert work.deleted
    assert [s.item_id for s in work.state.support] == ["i3"]
    assert "old-item" not in work.state.seen
    assert p.forget == ["a"]
    assert p.learned == [("a", (), (("i3", TS + 3, None),))]  # nothing from before the deletion
    assert p.requests[0].history == ("i3",) and p.requests[0].fresh == 1


def test_online_hit_is_counted_when_the_item_was_in_the_last_list():
    stored = state_of("i0")
    stored.last_recs = ["i7", "i9"]
    p = run_plan([ev(7, "a"), ev(8, "a")], {"a": stored})
    assert p.users["a"].hits == [("1-4", True), ("1-4", False)]


def test_adapt_request_excludes_every_seen_item():
    state = UserState()
    for i in range(5):
        apply_interaction(state, Interaction(event_id=f"e{i}", user_id="a", item_id=f"i{i}", type="purchase",
                                             ts=TS + i), Limits())
    request = adapt_request("a", state, "implicit")
    assert set(request.exclude) == {f"i{i}" for i in range(5)}
    assert [item for item, _ in request.support] == [f"i{i}" for i in range(5)]


def test_a_redelivery_longer_than_the_id_window_is_still_counted_once():
    """Kafka redelivers everything after the last commit, which can be more of one user's events than the
    event-id window holds: the offsets applied per partition catch them all."""
    rules = Rules(limits=Limits(recent_ids=4))
    first = run_plan([ev(i) for i in range(10)], rules=rules)
    state = first.users["u1"].state
    assert state.interactions == 10 and len(state.recent_ids) == 4
    again = run_plan([ev(i) for i in range(12)], {"u1": state}, rules=rules)
    assert again.users["u1"].state.interactions == 12  # only offsets 10 and 11 are new
    assert again.duplicates == 10 and again.processed == 2


def test_a_redelivered_deletion_does_not_wipe_what_came_after_it():
    deletion = msg(encode(UserDeletion(event_id="d", user_id="u1", ts=TS + 5)), b"u1", 5)
    first = run_plan([ev(1), ev(2), deletion, ev(6)])
    state = first.users["u1"].state
    assert state.interactions == 1 and state.last_event_id == "e6"
    again = run_plan([deletion, ev(6)], {"u1": state})
    assert not again.users["u1"].deleted and again.users["u1"].state.interactions == 1
    assert again.forget == []


def test_a_recreated_topic_is_not_taken_for_a_redelivery():
    """Offsets start from 0 again in a recreated topic (the embedded broker forgets its topics): newer events
    at old offsets are applied."""
    first = run_plan([ev(i) for i in range(5)])
    state = first.users["u1"].state
    newer = Interaction(event_id="n0", user_id="u1", item_id="x", type="click", ts=TS + 100)
    again = run_plan([msg(encode(newer), b"u1", 0)], {"u1": state})
    assert again.processed == 1 and again.users["u1"].state.interactions == 6


# --- settle -------------------------------------------------------------------------------------------------
def test_settle_writes_each_user_s_state_and_sends_the_lists_the_model_answered():
    p = run_plan([ev(1, "a"), ev(2, "b")])
    done = settle(p, [answer(["x", "y"], "v1"), answer(["z"], "v1")], NOW)
    assert [(w.partition, w.key) for w in done.writes] == [(0, b"a"), (0, b"b")]
    stored = decode_state(done.writes[0].value)
    assert stored.last_recs == ["x", "y"] and stored.model_version == "v1"
    assert np.frombuffer(stored.head, np.float32).tolist() == [0.0, 1.0, 2.0]
    assert stored.interactions == 1
    keys = [k for k, _ in done.lists]
    assert keys == [b"a", b"b"] and not done.tombstones
    rec = decode_recommendation(done.lists[0][1])
    assert [s.item_id for s in rec.items] == ["x", "y"] and rec.event_id == "e1" and rec.model_version == "v1"
    assert rec.produced_ts == NOW and rec.event_ts == TS + 1
    assert done.observations.latencies == [NOW - (TS + 1), NOW - (TS + 2)]


def test_each_list_counts_in_the_user_s_seq_and_names_the_events_it_answers():
    """seq: the lists sent to the user so far, kept in the state (so a redelivery's list comes after); the list
    answers the user's events of the batch, from first_event_id to event_id."""
    p = run_plan([ev(1, "a"), ev(2, "b"), ev(3, "a"), ev(4, "a")], {"a": state_of("x")})
    done = settle(p, [answer(["x"]), answer(["y"])], NOW)
    lists = {k: decode_recommendation(v) for k, v in done.lists}
    assert (lists[b"a"].seq, lists[b"a"].first_event_id, lists[b"a"].event_id) == (1, "e1", "e4")
    assert (lists[b"b"].seq, lists[b"b"].first_event_id, lists[b"b"].event_id) == (1, "e2", "e2")
    stored = decode_state(done.writes[0].value)
    assert stored.seq == 1, "the state remembers the list it sent"
    again = run_plan([ev(4, "a")], {"a": stored})  # the same event, redelivered
    assert again.processed == 0 and again.duplicates == 1
    (_key, value), = settle(again, [answer(["z"])], NOW + 1).lists
    assert decode_recommendation(value).seq == 2 and decode_recommendation(value).event_id == "e4"


def test_a_list_after_a_deletion_answers_only_what_came_after_it():
    delete = msg(encode(UserDeletion(event_id="d1", user_id="a", ts=TS + 2)), b"a", 2)
    served_before = state_of("x")
    served_before.seq = 5
    p = run_plan([ev(1, "a"), delete, ev(3, "a"), ev(4, "a")], {"a": served_before})
    (_, value), = settle(p, [answer(["q"])], NOW).lists
    rec = decode_recommendation(value)
    assert (rec.first_event_id, rec.event_id, rec.seq) == ("e3", "e4", 1), (
        "a deletion forgets the user, their count included: the tombstone sent first separates the sequences")


def test_a_user_planned_again_without_the_batch_s_interactions_keeps_its_other_events():
    """What the handler does when the model fails on a user: the batch's interactions are left out (they are
    dead-lettered), the rest of the user's events still apply, and nothing is asked of the model."""
    attrs = UserAttributes(event_id="at", user_id="a", ts=TS + 2, attributes={"plan": "pro"})
    p = run_plan([ev(1, "a"), msg(encode(attrs), b"a", 2), ev(3, "a"), ev(4, "b")], {"a": state_of("x")})
    assert [m.offset for m in p.users["a"].counted] == [1, 3], "the messages a failure dead-letters"
    decoded = decode([ev(1, "a"), msg(encode(attrs), b"a", 2), ev(3, "a"), ev(4, "b")], Rules(), NOW)
    before = state_of("x")
    undone = replan(decoded, "a", 0, before, Rules(), "implicit", interactions=False)
    work = undone.users["a"]
    assert work.state is before and before.seen == ["x"] and before.attributes == {"plan": "pro"}
    assert before.interactions == 1 and not work.counted and not undone.requests and not undone.learned
    assert list(undone.users) == ["a"] and not undone.dead
    redo = replan(decoded, "a", 0, state_of("x"), Rules(), "implicit")
    assert redo.users["a"].state.seen == ["x", "i1", "i3"] and [r.user_id for r in redo.requests] == ["a"]
    assert redo.learned[0].events == tuple(p.learned[0].events)
    nothing = replan(decode([ev(1, "a")], Rules(), NOW), "a", 0, state_of("x"), Rules(), "implicit",
                     interactions=False)
    assert list(nothing.users) == ["a"], "still written: an earlier batch may have stored the undone events"


def test_metrics_are_attributed_to_the_version_that_served_each_list():
    """A batch can straddle a model swap: each list counts for the version that computed it."""
    p = run_plan([ev(1, "a"), ev(2, "b"), ev(3, "c")])
    done = settle(p, [answer(["x"], "v1"), answer(["y"], "v2"), answer(["z"], "v1")], NOW)
    served = done.observations.served
    assert sorted(served) == ["v1", "v2"]
    assert [r.items for r in served["v1"][1]] == [["x"], ["z"]] and len(served["v2"][0]) == 1
    assert decode_state(done.writes[1].value).model_version == "v2"


def test_a_deleted_user_gets_a_tombstone_and_only_a_marker_unless_something_came_after():
    delete = msg(encode(UserDeletion(event_id="d1", user_id="a", ts=TS + 2)), b"a", 2)
    gone = run_plan([delete], {"a": state_of("x")})
    done = settle(gone, [], NOW)
    assert done.tombstones == [b"a"] and not done.lists
    marker = decode_state(done.writes[0].value)
    assert marker == UserState(offsets={"interactions:0": 2}, deleted_ts=TS + 2), "nothing of the user is kept"
    assert done.observations.deletions == 1
    back = run_plan([delete, ev(3, "a")], {"a": state_of("x")})
    done = settle(back, [answer(["q"])], NOW)
    assert done.tombstones == [b"a"], "the old list is withdrawn before the new one is sent"
    assert decode_state(done.writes[0].value).seen == ["i3"] and [k for k, _ in done.lists] == [b"a"]


def test_a_user_without_a_trigger_is_written_but_sent_nothing():
    attrs = UserAttributes(event_id="at", user_id="c", ts=TS, attributes={"plan": "pro"})
    p = run_plan([msg(encode(attrs), b"c", 0, partition=3)])
    done = settle(p, [], NOW)
    assert [(w.partition, w.key) for w in done.writes] == [(3, b"c")]
    assert decode_state(done.writes[0].value).attributes == {"plan": "pro"}
    assert not done.lists and not done.observations.served


def test_settle_refuses_answers_that_do_not_match_the_requests():
    p = run_plan([ev(1, "a"), ev(2, "b")])
    with pytest.raises(ValueError, match="1 answers for 2 requests"):
        settle(p, [answer(["x"])], NOW)


def test_plan_and_settle_depend_only_on_their_inputs():
    """Pure: the same messages, states and answers give the same writes and lists, byte for byte."""
    def once() -> tuple:
        p = run_plan([ev(1, "a"), ev(2, "b"), ev(3, "a", type="rating", value=3.0)], {"a": state_of("x")})
        done = settle(p, [answer(["x"]), answer(["y"])], NOW)
        return p.requests, p.learned, p.forget, done.writes, done.lists, done.tombstones

    assert once() == once()
