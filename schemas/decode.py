"""Strict, fast decoding of topic payloads, with failures reduced to a few fixed reasons.

Agents decode once at the edge and send what fails to the dead-letter topic. The reason becomes a metric label
and a Kafka header, so it comes from the small fixed set :data:`DECODE_REASONS`; the free-text ``detail`` says
exactly what was wrong for a human reading the dead letter.

Guards beyond what the types say:

* payloads over ``max_bytes`` are refused before any parsing (a cheap defence against huge messages);
* invalid UTF-8 anywhere in the payload is refused, also inside fields we ignore;
* nesting deeper than :data:`MAX_DEPTH` is refused before msgspec sees it, because msgspec skips unknown
  fields recursively and a 64 KiB payload can nest 30,000 levels deep (a ``RecursionError`` otherwise);
* NaN and Infinity are not JSON, and numbers beyond float range (``1e400``) are refused by msgspec.
"""

from __future__ import annotations

import re
from typing import Any, Final, get_args

import msgspec

from schemas.records import DeadLetterReason, ItemEvent, Recommendation, UserEvent

DEFAULT_MAX_BYTES: Final = 65536
MAX_DEPTH: Final = 32

#: Every reason a dead letter can carry (records.DeadLetterReason); decoding gives all but ``model_error``.
REASONS: Final = frozenset(get_args(DeadLetterReason))
DECODE_REASONS: Final = REASONS - {"model_error"}
_DETAIL_MAX = 300

_user_decoder: Final = msgspec.json.Decoder(UserEvent)
_item_decoder: Final = msgspec.json.Decoder(ItemEvent)
_recommendation_decoder: Final = msgspec.json.Decoder(Recommendation)
_encoder: Final = msgspec.json.Encoder()

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class DecodeError(ValueError):
    """A payload was refused; ``reason`` is one of :data:`DECODE_REASONS`, ``detail`` is for humans."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in DECODE_REASONS:
            raise ValueError(f"unknown decode reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:_DETAIL_MAX]

    def __reduce__(self) -> tuple[type["DecodeError"], tuple[str, str]]:
        return (DecodeError, (self.reason, self.detail))  # picklable despite the two-argument constructor


def decode_user_event(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> UserEvent:
    """Decode one ``interactions`` payload into an Interaction, Impression, UserAttributes or UserDeletion."""
    return _decode(_user_decoder, raw, max_bytes)


def decode_item_event(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> ItemEvent:
    """Decode one ``items`` payload."""
    return _decode(_item_decoder, raw, max_bytes)


def decode_recommendation(raw: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES) -> Recommendation:
    """Decode one ``recommendations`` payload (for consumers, tests and the demo)."""
    return _decode(_recommendation_decoder, raw, max_bytes)


def encode(record: msgspec.Struct) -> bytes:
    """Encode any record as compact JSON (``kind`` and ``v`` included).

    msgspec writes a non-finite float as ``null``, which every decoder here refuses: callers producing scores
    must keep them finite.
    """
    return _encoder.encode(record)


def _decode(decoder: msgspec.json.Decoder, raw: bytes | None, max_bytes: int) -> Any:
    if raw is None:
        raise DecodeError("invalid", "message has no value (tombstone)")
    if len(raw) > max_bytes:
        raise DecodeError("too_large", f"{len(raw)} bytes > limit of {max_bytes}")
    if not raw.isascii():
        _check_utf8(raw)
    if (
        raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
    ):  # the bracket count bounds the depth: usually no more to do
        _check_depth(raw)
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise DecodeError(_validation_reason(str(exc)), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("not_json", str(exc)) from None
    except UnicodeDecodeError as exc:  # pragma: no cover - _check_utf8 catches these first
        raise DecodeError("not_utf8", str(exc)) from None
    except RecursionError:  # pragma: no cover - _check_depth refuses such payloads first
        raise DecodeError("too_deep", "nesting exceeds the interpreter's recursion limit") from None


def _check_utf8(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("not_utf8", str(exc)) from None


def _check_depth(raw: bytes) -> None:
    """Refuse nesting deeper than MAX_DEPTH without recursion (only called for payloads with many brackets).

    Strings are blanked out, only brackets are kept, and innermost ``[]``/``{}`` pairs are peeled one level
    per pass (each pass a C-speed regex); at most MAX_DEPTH passes.
    """
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        peeled = _EMPTY_PAIR.sub(b"", brackets)
        if not peeled:
            return
        if peeled == brackets:
            raise DecodeError("not_json", "unbalanced brackets")
        brackets = peeled
    raise DecodeError("too_deep", f"nesting deeper than {MAX_DEPTH} levels")


def _validation_reason(message: str) -> str:
    """Map a msgspec ValidationError message (``<what> - at `$.path```) to one of REASONS."""
    what, _, where = message.partition(" - at `")
    path = where.rstrip("`")
    if path == "$.v":
        return "unsupported_version"
    if path == "$.kind" and what.startswith("Invalid value"):
        return "unknown_kind"
    if what.startswith("Invalid enum value"):
        return "invalid"  # before the tests below: the message quotes the producer's text, which may hold " >= "
    if what.startswith("Object missing required field"):
        return "missing_field"
    if what == "Number out of range" or " of length " in what or " >= " in what or " <= " in what:
        return "out_of_range"
    if what.startswith("Expected `"):
        return "wrong_type"
    return "invalid"
