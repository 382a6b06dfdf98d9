"""A deletion leaves a marker and nothing else; a new interaction or attributes bring the user back, an
impression does not; events redelivered from before the deletion are recognised."""

from __future__ import annotations

from schemas.decode import encode
from schemas.records import Impression, Interaction, UserAttributes, UserDeletion
from stream.pipeline import RawMessage, Rules, decode, plan
from stream.state import UserState, is_deleted

TS = 1_700_000_000.0


def msg(event, offset: int) -> RawMessage:
    return RawMessage(b"u", encode(event), "interactions", 0, offset, TS)


def click(n: int) -> Interaction:
    return Interaction(event_id=f"e{n}", user_id="u", item_id=f"i{n}", type="click", ts=TS + n)


def run(messages, state: UserState) -> UserState:
    batch = plan(decode(messages, Rules(), TS + 1e5), {"u": state}, Rules(), "implicit")
    return batch.users["u"].state


def test_the_marker_holds_nothing_of_the_user_and_old_events_redelivered_stay_out():
    state = run([msg(click(1), 1), msg(click(2), 2), msg(UserDeletion(event_id="d", user_id="u", ts=TS + 3), 3)],
                UserState())
    assert is_deleted(state) and not state.support and not state.seen and not state.recent_ids
    again = run([msg(click(2), 2)], state)
    assert is_deleted(again) and not again.seen, "a redelivered event from before the deletion came back"


def test_a_new_interaction_or_attributes_bring_the_user_back_an_impression_does_not():
    marker = UserState(deleted_ts=TS + 3, offsets={"interactions:0": 3})
    shown = Impression(event_id="s", user_id="u", list_id="l", items=["x"], ts=TS + 4)
    assert is_deleted(run([msg(shown, 4)], marker.__copy__()))
    assert not is_deleted(run([msg(click(5), 5)], marker.__copy__()))
    attrs = UserAttributes(event_id="a", user_id="u", ts=TS + 6, attributes={"plan": "pro"})
    assert not is_deleted(run([msg(attrs, 6)], marker.__copy__()))
