"""The batch planner: valid events change state once, invalid ones become dead letters, processing goes on."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("models.serving.recommender")

from schemas.decode import encode  # noqa: E402
from schemas.records import Interaction, UserDeletion  # noqa: E402
from stream.pipeline import RawMessage, Rules, adapt_request, plan_batch  # noqa: E402
from stream.state import Limits, UserState, apply_interaction  # noqa: E402

TS = 1_700_000_000.0
NOW = TS + 1000


def msg(value: bytes | None, key: bytes | None, offset: int = 0) -> RawMessage:
    return RawMessage(key=key, value=value, topic="interactions", partition=0, offset=offset, timestamp=NOW, ref=None)


def ev(i: int, user: str = "u1", item: str | None = None, **kw) -> RawMessage:
    record = Interaction(event_id=f"e{i}", user_id=user, item_id=item or f"i{i}", type="click", ts=TS + i, **kw)
    return msg(encode(record), user.encode(), i)


def plan(messages, stored: dict[str, UserState] | None = None):
    stored = stored or {}
    loads: list[str] = []

    def load(user_id: str, _m: RawMessage) -> UserState:
        loads.append(user_id)
        return stored.get(user_id, UserState())

    return plan_batch(messages, load, Rules(), NOW), loads


def test_events_are_grouped_per_user_in_order_and_state_is_loaded_once():
    p, loads = plan([ev(1, "a"), ev(2, "b"), ev(3, "a"), ev(4, "a")])
    assert sorted(loads) == ["a", "b"]
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
    p, _ = plan([bad[0], good, *bad[1:], ev(2, "a")])
    assert len(p.dead) == len(bad)
    assert all(d.reason and d.detail for d in p.dead)
    assert {d.reason for d in p.dead} >= {"not_utf8", "not_json", "wrong_type", "key_mismatch", "out_of_range"}
    assert p.users["a"].applied == 2


def test_redelivered_events_are_not_counted_but_still_trigger_a_recommendation():
    stored = UserState()
    apply_interaction(stored, Interaction(event_id="e1", user_id="a", item_id="i1", type="click", ts=TS + 1),
                      Limits())
    p, _ = plan([ev(1, "a")], {"a": stored})
    work = p.users["a"]
    assert work.applied == 0 and work.duplicates == 1
    assert work.state.interactions == 1
    assert work.trigger is not None, "a redelivered event must still get its (possibly lost) recommendation"


def test_deletion_resets_state_and_later_events_start_fresh():
    stored = UserState()
    apply_interaction(stored, Interaction(event_id="old", user_id="a", item_id="old-item", type="click", ts=TS),
                      Limits())
    delete = msg(encode(UserDeletion(event_id="d1", user_id="a", ts=TS + 2)), b"a")
    p, _ = plan([delete, ev(3, "a")], {"a": stored})
    work = p.users["a"]
    assert work.deleted
    assert [s.item_id for s in work.state.support] == ["i3"]
    assert "old-item" not in work.state.seen


def test_online_hit_is_counted_when_the_item_was_in_the_last_list():
    stored = UserState()
    apply_interaction(stored, Interaction(event_id="e0", user_id="a", item_id="i0", type="click", ts=TS), Limits())
    stored.last_recs = ["i7", "i9"]
    p, _ = plan([ev(7, "a"), ev(8, "a")], {"a": stored})
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
    first = plan_batch([ev(i) for i in range(10)], lambda u, m: UserState(), rules, NOW)
    state = first.users["u1"].state
    assert state.interactions == 10 and len(state.recent_ids) == 4
    again = plan_batch([ev(i) for i in range(12)], lambda u, m: state, rules, NOW)
    assert again.users["u1"].state.interactions == 12  # only offsets 10 and 11 are new
    assert again.duplicates == 10 and again.processed == 2


def test_a_redelivered_deletion_does_not_wipe_what_came_after_it():
    deletion = msg(encode(UserDeletion(event_id="d", user_id="u1", ts=TS + 5)), b"u1", 5)
    first = plan_batch([ev(1), ev(2), deletion, ev(6)], lambda u, m: UserState(), Rules(), NOW)
    state = first.users["u1"].state
    assert state.interactions == 1 and state.last_event_id == "e6"
    again = plan_batch([deletion, ev(6)], lambda u, m: state, Rules(), NOW)
    assert not again.users["u1"].deleted and again.users["u1"].state.interactions == 1


def test_a_recreated_topic_is_not_taken_for_a_redelivery():
    """Offsets start from 0 again in a recreated topic (the embedded broker forgets its topics): newer events
    at old offsets are applied."""
    first = plan_batch([ev(i) for i in range(5)], lambda u, m: UserState(), Rules(), NOW)
    state = first.users["u1"].state
    newer = Interaction(event_id="n0", user_id="u1", item_id="x", type="click", ts=TS + 100)
    again = plan_batch([msg(encode(newer), b"u1", 0)], lambda u, m: state, Rules(), NOW)
    assert again.processed == 1 and again.users["u1"].state.interactions == 6
