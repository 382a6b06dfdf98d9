"""Decoding refuses bad payloads with the right reason, and never with anything but DecodeError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decode import MAX_DEPTH, REASONS, DecodeError, decode_item_event, decode_user_event, encode
from schemas.records import Interaction, UserAttributes


def interaction(**changes: Any) -> dict[str, Any]:
    doc = {
        "kind": "interaction",
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "type": "click",
        "ts": 1.7e9,
    }
    doc.update(changes)
    return doc


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def reason_of(payload: bytes, **kwargs: Any) -> str:
    with pytest.raises(DecodeError) as info:
        decode_user_event(payload, **kwargs)
    assert info.value.reason in REASONS
    return info.value.reason


def test_valid_interaction_decodes_to_its_type() -> None:
    event = decode_user_event(raw(interaction(value=4.0)))
    assert isinstance(event, Interaction)
    assert (event.user_id, event.item_id, event.value, event.v) == ("u1", "i1", 4.0, 1)


def test_unknown_fields_are_ignored() -> None:
    event = decode_user_event(raw(interaction(added_later={"nested": [1, 2, {"x": None}]}, note="hi")))
    assert event == decode_user_event(raw(interaction()))


def test_attributes_accept_strings_numbers_and_bools() -> None:
    doc = {
        "kind": "user",
        "event_id": "e",
        "user_id": "u",
        "ts": 1.7e9,
        "attributes": {"a": "x", "b": 2, "c": True},
    }
    event = decode_user_event(raw(doc))
    assert isinstance(event, UserAttributes)
    assert event.attributes == {"a": "x", "b": 2.0, "c": True}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (raw(interaction(kind="item")), "unknown_kind"),
        (raw(interaction(kind="nope")), "unknown_kind"),
        (raw(interaction(v=2)), "unsupported_version"),
        (raw(interaction(v="1")), "unsupported_version"),
        (raw({k: v for k, v in interaction().items() if k != "item_id"}), "missing_field"),
        (raw({k: v for k, v in interaction().items() if k != "kind"}), "missing_field"),
        (raw(interaction(ts="yesterday")), "wrong_type"),
        (raw(interaction(value=True)), "wrong_type"),
        (b"[1, 2]", "wrong_type"),
        (b"null", "wrong_type"),
        (raw(interaction(ts=1.7e12)), "out_of_range"),  # milliseconds, not seconds
        (raw(interaction(ts=0)), "out_of_range"),
        (raw(interaction(value=2e6)), "out_of_range"),
        (raw(interaction(event_id="")), "out_of_range"),
        (raw(interaction(user_id="u" * 257)), "out_of_range"),
        (raw(interaction(type="stare")), "invalid"),
        (b"", "not_json"),
        (b"{not json", "not_json"),
        (raw(interaction()) + b" trailing", "not_json"),
    ],
)
def test_bad_payloads_get_their_reason(payload: bytes, reason: str) -> None:
    assert reason_of(payload) == reason


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"nan"])
def test_non_finite_tokens_are_refused(token: bytes) -> None:
    payload = raw(interaction(value=0.5)).replace(b"0.5", token)
    assert reason_of(payload) == "not_json"


@pytest.mark.parametrize("number", [b"1e400", b"-1e400"])
def test_numbers_beyond_float_range_are_refused(number: bytes) -> None:
    payload = raw(interaction(value=0.5)).replace(b"0.5", number)
    assert reason_of(payload) == "out_of_range"


def test_attribute_bounds() -> None:
    many = {
        "kind": "user",
        "event_id": "e",
        "user_id": "u",
        "ts": 1.7e9,
        "attributes": {str(i): i for i in range(65)},
    }
    assert reason_of(raw(many)) == "out_of_range"
    long_value = dict(many, attributes={"k": "x" * 1025})
    assert reason_of(raw(long_value)) == "out_of_range"
    nested = dict(many, attributes={"k": [1]})
    assert reason_of(raw(nested)) == "wrong_type"


def test_oversized_payload_is_refused_before_parsing() -> None:
    payload = b"{" + b" " * 70_000  # not JSON either: size must be checked first
    assert reason_of(payload) == "too_large"
    assert reason_of(raw(interaction()), max_bytes=10) == "too_large"


def test_invalid_utf8_is_refused_even_in_ignored_fields() -> None:
    assert reason_of(raw(interaction(user_id="AAAA")).replace(b"AAAA", b"A\xffA")) == "not_utf8"
    assert reason_of(raw(interaction(extra="AAAA")).replace(b"AAAA", b"\xc3")) == "not_utf8"


def test_non_ascii_utf8_is_fine() -> None:
    assert decode_user_event(raw(interaction(user_id="Zoë 用户"))).user_id == "Zoë 用户"


@pytest.mark.parametrize("opener,closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_deep_nesting_in_an_ignored_field_gives_decode_error(opener: bytes, closer: bytes) -> None:
    depth = 50_000 if opener == b"[" else 10_000
    nested = opener * depth + closer * depth
    payload = raw(interaction(extra=0)).replace(b"0}", nested + b"}")
    assert len(payload) <= 2 * 65536
    assert reason_of(payload, max_bytes=len(payload)) == "too_deep"


def test_unclosed_deep_nesting_gives_decode_error() -> None:
    assert reason_of(b"[" * 60_000) == "not_json"


def test_nesting_at_the_limit_is_accepted_and_brackets_in_strings_do_not_count() -> None:
    inner = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    payload = raw(interaction(extra=0)).replace(b"0}", inner + b"}")
    assert isinstance(decode_user_event(payload), Interaction)
    over = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert reason_of(raw(interaction(extra=0)).replace(b"0}", over + b"}")) == "too_deep"
    text = '[[[{{{"\\"' * 100
    assert decode_user_event(raw(interaction(note=text))).user_id == "u1"


def test_null_value_is_a_decode_error() -> None:
    assert reason_of(None) == "invalid"  # type: ignore[arg-type]


def test_item_decoder_refuses_user_events() -> None:
    with pytest.raises(DecodeError) as info:
        decode_item_event(encode(Interaction("e", "u", "i", "view", 1.7e9)))
    assert info.value.reason == "unknown_kind"


def test_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        DecodeError("made_up", "x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(payload: bytes) -> None:
    try:
        decode_user_event(payload)
    except DecodeError as err:
        assert err.reason in REASONS


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=5),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
    )
)
def test_arbitrary_json_values_in_every_field_raise_only_decode_error(value: Any) -> None:
    for field in ("event_id", "ts", "value", "type", "kind", "v", "extra"):
        try:
            decode_user_event(json.dumps(interaction(**{field: value})).encode())
        except DecodeError as err:
            assert err.reason in REASONS


def test_decode_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(DecodeError("not_json", "bad")))
    assert (err.reason, err.detail, str(err)) == ("not_json", "bad", "not_json: bad")


@pytest.mark.parametrize("text", ["teleport", "a >= b", "x of length y", "Expected `int`"])
def test_an_unknown_enum_value_is_invalid_whatever_text_it_quotes(text: str) -> None:
    """The reason comes from what msgspec says, and msgspec quotes the producer's value: it must not steer it."""
    raw = json.dumps({"kind": "interaction", "event_id": "e", "user_id": "u", "item_id": "i", "type": text,
                      "ts": 1.7e9}).encode()
    with pytest.raises(DecodeError) as info:
        decode_user_event(raw)
    assert info.value.reason == "invalid"
