"""The impression event and the item event's ``available`` field: decoded strictly like every record."""

from __future__ import annotations

import json

import pytest

from schemas.decode import DecodeError, decode_item_event, decode_user_event
from schemas.records import IMPRESSION_ITEMS_MAX, Impression

TS = 1.7e9


def impression(**changes) -> bytes:
    doc = {"kind": "impression", "event_id": "e1", "user_id": "u1", "list_id": "l1", "items": ["a", "b"],
           "ts": TS}
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def reason(payload: bytes) -> str:
    with pytest.raises(DecodeError) as info:
        decode_user_event(payload)
    return info.value.reason


def test_an_impression_decodes_with_its_list_and_items() -> None:
    event = decode_user_event(impression())
    assert isinstance(event, Impression)
    assert (event.list_id, event.items, event.user_id) == ("l1", ["a", "b"], "u1")


def test_an_impression_needs_a_list_id_and_one_to_a_bounded_number_of_items() -> None:
    assert reason(impression(list_id=None)) == "missing_field"
    assert reason(impression(items=[])) == "out_of_range"
    assert reason(impression(items=[f"i{n}" for n in range(IMPRESSION_ITEMS_MAX + 1)])) == "out_of_range"
    assert reason(impression(items=["a", ""])) == "out_of_range"
    assert reason(impression(items="a")) == "wrong_type"


def test_item_availability_is_optional_and_boolean() -> None:
    base = {"kind": "item", "event_id": "e", "item_id": "i", "ts": TS}
    assert decode_item_event(json.dumps(base).encode()).available is None
    assert decode_item_event(json.dumps({**base, "available": False}).encode()).available is False
    with pytest.raises(DecodeError) as info:
        decode_item_event(json.dumps({**base, "available": "no"}).encode())
    assert info.value.reason == "wrong_type"
