"""Records: round trips through encode/decode, the bounds each type declares, the union's tags."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decode import decode_item_event, decode_recommendation, decode_user_event, encode
from schemas.records import (
    DEAD_LETTER_HEADERS,
    HEADER_REASON,
    TS_MAX,
    TS_MIN,
    DeadLetterHeaders,
    Interaction,
    ItemEvent,
    Recommendation,
    ScoredItem,
    UserAttributes,
    UserDeletion,
    dead_letter_headers,
)

ids = st.text(min_size=1, max_size=40)
timestamps = st.floats(min_value=TS_MIN, max_value=TS_MAX)
attr_values = st.one_of(st.text(max_size=50), st.booleans(), st.floats(allow_nan=False, allow_infinity=False))
attributes = st.dictionaries(st.text(min_size=1, max_size=20), attr_values, max_size=10)

interactions = st.builds(
    Interaction,
    event_id=ids,
    user_id=ids,
    item_id=ids,
    type=st.sampled_from(["view", "click", "cart", "purchase", "rating", "play"]),
    ts=timestamps,
    value=st.none() | st.floats(min_value=-1e6, max_value=1e6),
)
user_events = st.one_of(
    interactions,
    st.builds(UserAttributes, event_id=ids, user_id=ids, ts=timestamps, attributes=attributes),
    st.builds(UserDeletion, event_id=ids, user_id=ids, ts=timestamps),
)
item_events = st.builds(
    ItemEvent,
    event_id=ids,
    item_id=ids,
    ts=timestamps,
    title=st.text(max_size=100),
    text=st.text(max_size=300),
    categories=st.lists(st.text(min_size=1, max_size=20), max_size=8),
    attributes=attributes,
)


@settings(max_examples=200, deadline=None)
@given(user_events)
def test_user_events_round_trip(event: Interaction | UserAttributes | UserDeletion) -> None:
    assert decode_user_event(encode(event)) == event


@settings(max_examples=100, deadline=None)
@given(item_events)
def test_item_events_round_trip(event: ItemEvent) -> None:
    assert decode_item_event(encode(event)) == event


def test_recommendation_round_trip() -> None:
    rec = Recommendation(
        user_id="u1",
        items=[ScoredItem("i1", 2.5), ScoredItem("i2", -1.0)],
        model_version="v7",
        event_id="e1",
        event_ts=1.7e9,
        produced_ts=1.7e9 + 0.01,
        seq=3,
        first_event_id="e0",
    )
    assert decode_recommendation(encode(rec)) == rec


def test_a_list_from_before_seq_and_first_event_id_still_decodes() -> None:
    old = b'{"kind":"recommendation","user_id":"u","items":[],"model_version":"v","event_id":"e","event_ts":1.7e9,' \
          b'"produced_ts":1.7e9}'
    rec = decode_recommendation(old)
    assert rec.seq == 0 and rec.first_event_id is None


def test_dead_letter_headers_are_what_the_schema_says() -> None:
    headers = {name: value.decode() for name, value in dead_letter_headers("model_error", "boom", "t", 3, 41)}
    assert msgspec.convert(headers, DeadLetterHeaders) == DeadLetterHeaders("model_error", "boom", "t", "3", "41")
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**headers, HEADER_REASON: "bored"}, DeadLetterHeaders)


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (Interaction("e", "u", "i", "view", 1.7e9), "interaction"),
        (UserAttributes("e", "u", 1.7e9), "user"),
        (UserDeletion("e", "u", 1.7e9), "delete"),
        (ItemEvent("e", "i", 1.7e9), "item"),
    ],
)
def test_encoding_carries_kind_and_version(record: msgspec.Struct, kind: str) -> None:
    doc = msgspec.json.decode(encode(record))
    assert doc["kind"] == kind
    assert doc["v"] == 1


def test_records_are_immutable() -> None:
    event = Interaction("e", "u", "i", "view", 1.7e9)
    with pytest.raises(AttributeError):
        event.user_id = "other"  # type: ignore[misc]


def test_dead_letter_headers_are_distinct_and_prefixed() -> None:
    assert len(set(DEAD_LETTER_HEADERS)) == 5
    assert all(h.startswith("metarec-") for h in DEAD_LETTER_HEADERS)
