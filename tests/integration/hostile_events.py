"""Hypothesis strategies for the fuzz test: valid interactions, and hostile messages that must be refused.

Every hostile message is invalid *by construction* (the comment on each says which rule it breaks), so the test
can demand a dead letter for each one and a state change for every valid one. Long strings are built from a
drawn length and a drawn character, so a megabyte costs Hypothesis two choices, not a million.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from hypothesis import strategies as st

from schemas.records import TS_MIN, VALUE_ABS_MAX, Interaction

MAX_EVENT_BYTES = 65536  # Settings.max_event_bytes default
FUTURE_SKEW_S = 86400.0  # Settings.max_future_skew_s default
TYPES = ("view", "click", "cart", "purchase", "rating", "play")


@dataclass(frozen=True)
class Hostile:
    """A message that must land in dead-letters: its raw key and value, what is wrong with it, and the reason the
    dead letter must give (one of schemas.decode.REASONS), known from how the message was built."""

    key: bytes | None
    value: bytes | None
    why: str
    reason: str


def id_text(max_size: int) -> st.SearchStrategy[str]:
    """Ids as producers might send them: non-empty text, unicode and emoji included, within the length limit."""
    return st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=max_size)


def long_text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    chars = st.sampled_from("a\u00e9\u4e2d\U0001f600")
    return st.builds(lambda n, c: c * n, st.integers(min_size, max_size), chars)


def valid_interactions(users: list[str], items: list[str], now: float,
                       counter: Callable[[], int]) -> st.SearchStrategy[Interaction]:
    """Interactions that satisfy every rule, extreme but legal values included; ``counter()`` makes ids unique."""
    return st.builds(
        lambda suffix, user, item, typ, ts, value: Interaction(
            event_id=f"{suffix}#{counter()}", user_id=user, item_id=item, type=typ, ts=ts, value=value),
        suffix=id_text(16),
        user=st.sampled_from(users),
        item=st.one_of(st.sampled_from(items), id_text(24)),  # unknown items are legal too
        typ=st.sampled_from(TYPES),
        ts=st.floats(TS_MIN, now),
        value=st.one_of(st.none(), st.floats(-VALUE_ABS_MAX, VALUE_ABS_MAX, allow_nan=False)),
    )


def _base(user: str, now: float) -> dict[str, Any]:
    return {"kind": "interaction", "event_id": "h", "user_id": user, "item_id": "i", "type": "click",
            "ts": now - 5}


def _as_hostile(doc: dict[str, Any], why: str, reason: str) -> Hostile:
    return Hostile(str(doc.get("user_id", "nobody")).encode("utf-8", "replace"), _dumps(doc), why, reason)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, allow_nan=True).encode()


def _mutated(users: list[str], now: float) -> st.SearchStrategy[Hostile]:
    """A valid-looking interaction with one field made illegal, and the reason that makes it."""
    finite = st.floats(allow_nan=False, allow_infinity=False)
    not_json = st.sampled_from([math.nan, math.inf, -math.inf])  # json.dumps writes NaN/Infinity: not JSON
    bad_values: dict[str, list[tuple[st.SearchStrategy[Any], str]]] = {
        "event_id": [(st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=3)), "wrong_type"),
                     (long_text(129, 5000), "out_of_range")],
        "user_id": [(st.one_of(st.integers(), st.booleans()), "wrong_type"),
                    (st.one_of(st.just(""), long_text(257, 5000)), "out_of_range")],
        "item_id": [(st.one_of(finite, st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
                     "wrong_type"),
                    (not_json, "not_json"),
                    (st.one_of(st.just(""), long_text(257, 5000)), "out_of_range")],
        "type": [(st.text(max_size=10).filter(lambda t: t not in TYPES), "invalid"), (st.integers(), "wrong_type")],
        "kind": [(st.text(max_size=10).filter(lambda k: k not in {"interaction", "user", "delete"}),
                  "unknown_kind")],
        # numbers out of range: negative, far past and far future (also milliseconds); NaN and infinity
        "ts": [(st.one_of(st.floats(max_value=TS_MIN, exclude_max=True, allow_nan=False, allow_infinity=False),
                          st.floats(min_value=now + 2 * FUTURE_SKEW_S, max_value=1e300), st.just(now * 1000)),
                "out_of_range"),
               (not_json, "not_json"), (st.text(max_size=5), "wrong_type")],
        "value": [(st.one_of(st.floats(min_value=VALUE_ABS_MAX, exclude_min=True, allow_infinity=False),
                             st.floats(max_value=-VALUE_ABS_MAX, exclude_max=True, allow_infinity=False)),
                   "out_of_range"),
                  (not_json, "not_json"), (st.text(max_size=5), "wrong_type")],
        # schema versions we do not know
        "v": [(st.one_of(st.integers().filter(lambda v: v != 1), st.just("1"), st.just(1.5), st.none()),
               "unsupported_version")],
    }
    cases = [(name, values, reason) for name, options in sorted(bad_values.items()) for values, reason in options]
    return st.sampled_from(cases).flatmap(
        lambda case: st.builds(
            lambda user, bad: _as_hostile({**_base(user, now), case[0]: bad}, f"bad {case[0]}", case[2]),
            st.sampled_from(users), case[1]))


def _missing(users: list[str], now: float) -> st.SearchStrategy[Hostile]:
    def build(user: str, field: str) -> Hostile:
        return _as_hostile({k: v for k, v in _base(user, now).items() if k != field}, f"no {field}",
                           "missing_field")
    required = ["kind", "event_id", "user_id", "item_id", "type", "ts"]
    return st.builds(build, st.sampled_from(users), st.sampled_from(required))


def _huge(users: list[str], now: float) -> st.SearchStrategy[Hostile]:
    """Over the size limit (refused before parsing), up to 900 kB (under the clients' 1 MB message limit)."""
    return st.builds(lambda user, n: _as_hostile({**_base(user, now), "padding": "x" * n}, "too large",
                                                 "too_large"),
                     st.sampled_from(users), st.integers(MAX_EVENT_BYTES, 900_000))


def _deep(users: list[str], now: float) -> st.SearchStrategy[Hostile]:
    """Nesting deeper than the decoder's limit, in an unknown field or a known one, up to 20k levels."""
    def build(user: str, depth: int, field: str, arrays: bool) -> Hostile:
        nest = "[" * depth + "]" * depth if arrays else '{"a":' * depth + "1" + "}" * depth
        raw = _dumps(_base(user, now))[:-1] + f', "{field}": {nest}}}'.encode()
        # deep objects grow faster than deep arrays: past the size limit they are refused for their size first
        return Hostile(user.encode(), raw, "too deep", "too_large" if len(raw) > MAX_EVENT_BYTES else "too_deep")
    return st.builds(build, st.sampled_from(users), st.integers(40, 20000), st.sampled_from(["extra", "item_id"]),
                     st.booleans())


def _not_utf8(users: list[str], now: float) -> st.SearchStrategy[Hostile]:
    def build(user: str, junk: bytes, where: int) -> Hostile:
        raw = _dumps(_base(user, now))
        cut = raw.index(b'"i"') + 2 if where == 0 else len(raw) // 2
        return Hostile(user.encode(), raw[:cut] + junk + raw[cut:], "not utf-8", "not_utf8")
    invalid = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
    return st.builds(build, st.sampled_from(users), invalid, st.integers(0, 1))


def _garbage() -> st.SearchStrategy[Hostile]:
    """Bytes and texts that are no event at all: binary that is not UTF-8, text that is not JSON, JSON that is not
    an event object."""
    def garbage(raw: bytes, reason: str) -> Hostile:
        return Hostile(b"garbage", raw, "garbage", reason)
    not_json_start = st.sampled_from("x@#<!;)")  # no JSON value starts with these
    return st.one_of(
        st.builds(lambda head, tail: garbage(head + b"\xff" + tail, "not_utf8"), st.binary(max_size=150),
                  st.binary(max_size=150)),
        st.builds(lambda c, t: garbage((c + t).encode(), "not_json"), not_json_start, st.text(max_size=200)),
        st.sampled_from([(b"null", "wrong_type"), (b"[]", "wrong_type"), (b"123", "wrong_type"),
                         (b'"interaction"', "wrong_type"), (b"{}", "missing_field"),
                         (b'{"kind": "interaction"}', "missing_field"), (b"NaN", "not_json"),
                         (b"-Infinity", "not_json"), (b"{" * 5, "not_json")]).map(lambda g: garbage(*g)),
    )


def _keyless(users: list[str], now: float) -> st.SearchStrategy[Hostile]:
    """A valid event whose key is missing or names another user; and tombstones (no value)."""
    def build(user: str, key: bytes | None, tombstone: bool) -> Hostile:
        doc = _base(user, now)
        if tombstone:
            return Hostile(user.encode(), None, "null value", "invalid")
        return Hostile(key, _dumps(doc), "key mismatch", "key_mismatch")
    keys = {u.encode() for u in users}
    other_key = st.one_of(st.none(), st.binary(max_size=20).filter(lambda k: k not in keys))
    return st.builds(build, st.sampled_from(users), other_key, st.booleans())


def hostile_messages(users: list[str], now: float) -> st.SearchStrategy[Hostile]:
    return st.one_of(_mutated(users, now), _missing(users, now), _huge(users, now), _deep(users, now),
                     _not_utf8(users, now), _garbage(), _keyless(users, now))
