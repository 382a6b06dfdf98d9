"""Per-user state: bounded, deduplicated by event id, round-trips through bytes."""

from __future__ import annotations

from schemas.records import Interaction, UserAttributes
from stream.state import (
    Applied,
    Limits,
    UserState,
    apply_attributes,
    apply_interaction,
    decode_state,
    encode_state,
    history_bucket,
)

TS = 1_700_000_000.0


def interaction(i: int, item: str | None = None, user: str = "u1") -> Interaction:
    return Interaction(event_id=f"e{i}", user_id=user, item_id=item or f"i{i}", type="click", ts=TS + i)


def test_support_set_and_seen_items_stay_bounded_and_keep_the_latest():
    limits = Limits(support_size=5, seen_max=7, recent_ids=9)
    state = UserState()
    for i in range(100):
        assert apply_interaction(state, interaction(i), limits)
    assert [s.item_id for s in state.support] == [f"i{i}" for i in range(95, 100)]
    assert state.seen == [f"i{i}" for i in range(93, 100)]
    assert len(state.recent_ids) == 9
    assert state.interactions == 100


def test_a_redelivered_event_is_not_counted_twice():
    limits = Limits()
    state = UserState()
    assert apply_interaction(state, interaction(1), limits)
    before = encode_state(state)
    assert not apply_interaction(state, interaction(1), limits)
    assert encode_state(state) == before


def test_seen_keeps_first_arrival_order_and_says_which_items_are_new():
    """``seen`` is the item statistics' view of the user's history: a re-seen item keeps its place."""
    state = UserState()
    results = [apply_interaction(state, interaction(i, item), Limits()) for i, item in enumerate("aba")]
    assert state.seen == ["a", "b"]
    assert results == [Applied.NEW_ITEM, Applied.NEW_ITEM, Applied.KNOWN_ITEM]
    assert apply_interaction(state, interaction(2, "a"), Limits()) is Applied.DUPLICATE


def test_a_full_seen_list_drops_the_oldest_arrivals_not_the_least_recent():
    state = UserState()
    limits = Limits(seen_max=3)
    for i, item in enumerate(["a", "b", "c", "a", "d"]):
        apply_interaction(state, interaction(i, item), limits)
    assert state.seen == ["b", "c", "d"]  # "a" arrived first: it goes, although it was seen again


def test_state_round_trips_through_bytes_and_empty_means_new_user():
    state = UserState()
    apply_interaction(state, Interaction(event_id="x", user_id="u", item_id="i", type="rating", ts=TS, value=4.0),
                      Limits())
    apply_attributes(state, UserAttributes(event_id="y", user_id="u", ts=TS, attributes={"plan": "pro"}), Limits())
    assert decode_state(encode_state(state)) == state
    assert decode_state(None) == UserState()
    assert decode_state(b"") == UserState()


def test_history_buckets_match_the_evaluation():
    assert [history_bucket(n) for n in (0, 1, 4, 5, 9, 10, 49, 50, 500)] == [
        "0", "1-4", "1-4", "5-9", "5-9", "10-49", "10-49", "50+", "50+"]
