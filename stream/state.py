"""Per-user state and the pure functions that change it.

The Faust table stores one ``UserState`` per user as compact msgpack bytes. Everything here is pure: the agent
reads a state, calls these functions, and writes the result back, so all the logic is testable without Kafka.

Effectively-once into state: a state remembers the ids of its most recent events (bounded), and an event whose
id it has seen is not counted again. Redelivery after a crash or rebalance is the only way an id repeats, and it
repeats within the window of events not yet committed, which is far smaller than the remembered window.

``seen`` keeps the user's items in first-arrival order: it is the item statistics' view of the user's history
(they pair each new item with the items the user had before it, ``LearnedUser.history_before``), and the
worker keeps no other copy of it. So a re-seen item keeps its place, and when full the oldest arrivals go.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import msgspec

from models.core.targets import EVENT_TYPE_CODES, EVENT_TYPES
from schemas.records import Interaction, UserAttributes

EVENT_TYPE_NAMES: tuple[str, ...] = EVENT_TYPES  # by the code a SupportEvent stores (one table, in models)


class SupportEvent(msgspec.Struct, array_like=True, frozen=True):
    """One remembered interaction: what the model adapts on."""

    item_id: str
    type_code: int
    value: float | None
    ts: float


class UserState(msgspec.Struct, array_like=True):
    """Everything metarec keeps about one user (msgpack, positional fields: append new fields at the end)."""

    support: list[SupportEvent] = msgspec.field(default_factory=list)  # oldest first, bounded
    seen: list[str] = msgspec.field(default_factory=list)  # distinct items, first arrival first, bounded
    recent_ids: list[str] = msgspec.field(default_factory=list)  # ids of the latest events, bounded
    interactions: int = 0  # interactions counted into state (duplicates excluded)
    first_ts: float = 0.0
    last_ts: float = 0.0
    last_event_id: str = ""
    head: bytes = b""  # adapted head parameters, float32
    model_version: str = ""
    last_recs: list[str] = msgspec.field(default_factory=list)  # the last list we sent
    attributes: dict[str, str | float | bool] = msgspec.field(default_factory=dict)
    # per source "topic:partition", the offset of the last event applied from it: a user's events come from one
    # partition in offset order, so anything at or below it is a redelivery, however long ago it was applied
    offsets: dict[str, int] = msgspec.field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """Bounds that keep every state small whatever a user does."""

    support_size: int = 50
    seen_max: int = 2000
    recent_ids: int = 256


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserState)


def encode_state(state: UserState) -> bytes:
    return _encoder.encode(state)


def decode_state(raw: bytes | None) -> UserState:
    """A stored state, or a fresh one for a user we have never seen."""
    return UserState() if not raw else _decoder.decode(raw)


def is_redelivery(state: UserState, source: str, offset: int, ts: float) -> bool:
    """True if the event at ``offset`` of ``source`` was already applied (exact, unlike the id window).

    An applied event is never newer than ``last_ts`` (the newest applied), so the time test never lets a true
    redelivery through; it keeps a topic that was deleted and recreated (offsets from 0 again, as on every
    start of the memory-only embedded broker) from having its new events taken for old ones.
    """
    return 0 <= offset <= state.offsets.get(source, -1) and ts <= state.last_ts


def mark_applied(state: UserState, source: str, offset: int) -> None:
    if offset > state.offsets.get(source, -1):
        state.offsets[source] = offset


def is_duplicate(state: UserState, event_id: str) -> bool:
    return event_id in state.recent_ids


def _remember_id(state: UserState, event_id: str, limits: Limits) -> None:
    state.recent_ids.append(event_id)
    if len(state.recent_ids) > limits.recent_ids:
        del state.recent_ids[: len(state.recent_ids) - limits.recent_ids]


class Applied(IntEnum):
    """What :func:`apply_interaction` did; falsy when it changed nothing."""

    DUPLICATE = 0  # already counted: no change
    KNOWN_ITEM = 1  # counted; the item was already in ``seen``
    NEW_ITEM = 2  # counted; the item joined the end of ``seen``


def apply_interaction(state: UserState, event: Interaction, limits: Limits) -> Applied:
    """Count ``event`` into ``state`` in place; ``Applied.DUPLICATE`` (no change) if already counted."""
    if is_duplicate(state, event.event_id):
        return Applied.DUPLICATE
    _remember_id(state, event.event_id, limits)
    state.support.append(SupportEvent(event.item_id, EVENT_TYPE_CODES[event.type], event.value, event.ts))
    if len(state.support) > limits.support_size:
        del state.support[: len(state.support) - limits.support_size]
    applied = Applied.KNOWN_ITEM
    if event.item_id not in state.seen:  # first arrival order: a re-seen item keeps its place
        applied = Applied.NEW_ITEM
        state.seen.append(event.item_id)
        if len(state.seen) > limits.seen_max:
            del state.seen[: len(state.seen) - limits.seen_max]  # the oldest arrivals go
    if state.interactions == 0:
        state.first_ts = event.ts
    state.interactions += 1
    state.last_ts = max(state.last_ts, event.ts)
    state.last_event_id = event.event_id
    return applied


def apply_attributes(state: UserState, event: UserAttributes, limits: Limits) -> bool:
    """Replace the user's attributes as a whole; False if the event was already applied."""
    if is_duplicate(state, event.event_id):
        return False
    _remember_id(state, event.event_id, limits)
    state.attributes = dict(event.attributes)
    return True


def history_bucket(interactions_before: int) -> str:
    """The history-length bucket used by the evaluation and the online metrics."""
    if interactions_before == 0:
        return "0"
    if interactions_before < 5:
        return "1-4"
    if interactions_before < 10:
        return "5-9"
    if interactions_before < 50:
        return "10-49"
    return "50+"
