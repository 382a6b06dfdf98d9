"""Per-user state and the pure functions that change it.

The Faust table stores one ``UserState`` per user as compact msgpack bytes. Everything here is pure: the agent
reads a state, calls these functions, and writes the result back, so all the logic is testable without Kafka.

Effectively-once into state: a state remembers the ids of its most recent events (bounded), and an event whose
id it has seen is not counted again. Redelivery after a crash or rebalance is the only way an id repeats, and it
repeats within the window of events not yet committed, which is far smaller than the remembered window.

``seen`` keeps the user's items in first-arrival order: it is the item statistics' view of the user's history
(they pair each new item with the items the user had before it, ``LearnedUser.history_before``), and the
worker keeps no other copy of it. So a re-seen item keeps its place, and when full the oldest arrivals go.

``shown`` keeps what impressions showed the user and they did not take (bounded): an item shown longer than
the impression window ago becomes a negative of the user's adaptation, and one shown often enough without a
take is demoted (excluded from their lists). A deletion leaves a marker (``deleted_ts``, nothing else about
the user) so the read API answers 404 until the user comes back with a new event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import msgspec

from models.core.targets import EVENT_TYPE_CODES, EVENT_TYPES
from schemas.records import Impression, Interaction, UserAttributes

EVENT_TYPE_NAMES: tuple[str, ...] = EVENT_TYPES  # by the code a SupportEvent stores (one table, in models)


class SupportEvent(msgspec.Struct, array_like=True, frozen=True):
    """One remembered interaction: what the model adapts on."""

    item_id: str
    type_code: int
    value: float | None
    ts: float


class Shown(msgspec.Struct, array_like=True, frozen=True):
    """An item impressions showed the user and they have not taken since."""

    item_id: str
    first_ts: float  # event time of the first impression that showed it
    last_ts: float
    count: int  # impressions that showed it
    position: int = 0  # its place in the last impression that showed it (0: first)
    skips: int = 0  # times the user took an item shown below it in the same impression


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
    # --- the last list in full, for the read API (stream/read_api.py) ---
    last_scores: list[float] = msgspec.field(default_factory=list)  # the scores of ``last_recs``
    list_event_id: str = ""  # the interaction that triggered the last list
    list_event_ts: float = 0.0
    list_ts: float = 0.0  # when the last list was produced (seconds, wall clock)
    deleted_ts: float = 0.0  # > 0: a deletion marker (the user was deleted at this event time), nothing else
    shown: list[Shown] = msgspec.field(default_factory=list)  # shown and not taken, first shown first, bounded
    seq: int = 0  # lists sent to this user (Recommendation.seq): changelogged, so it never goes back


class StoredList(msgspec.Struct, array_like=True):
    """A stored ``UserState`` read for its last list only (the read API's hot path): the same positions, the
    heavy fields left undecoded (``msgspec.Raw``), fields after ``seq`` ignored. About 6x cheaper to
    decode than the whole state; tests/unit/stream/test_read_api.py keeps the positions in step."""

    support: msgspec.Raw = msgspec.Raw(b"")
    seen: msgspec.Raw = msgspec.Raw(b"")
    recent_ids: msgspec.Raw = msgspec.Raw(b"")
    interactions: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    last_event_id: str = ""
    head: msgspec.Raw = msgspec.Raw(b"")
    model_version: str = ""
    last_recs: list[str] = msgspec.field(default_factory=list)
    attributes: msgspec.Raw = msgspec.Raw(b"")
    offsets: msgspec.Raw = msgspec.Raw(b"")
    last_scores: list[float] = msgspec.field(default_factory=list)
    list_event_id: str = ""
    list_event_ts: float = 0.0
    list_ts: float = 0.0
    deleted_ts: float = 0.0
    shown: msgspec.Raw = msgspec.Raw(b"")
    seq: int = 0


@dataclass(frozen=True)
class Limits:
    """Bounds that keep every state small whatever a user does."""

    support_size: int = 50
    seen_max: int = 2000
    recent_ids: int = 256
    shown_max: int = 200


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserState)
_list_decoder = msgspec.msgpack.Decoder(StoredList)


def encode_state(state: UserState) -> bytes:
    return _encoder.encode(state)


def decode_state(raw: bytes | None) -> UserState:
    """A stored state, or a fresh one for a user we have never seen."""
    return UserState() if not raw else _decoder.decode(raw)


def decode_list(raw: bytes) -> StoredList:
    """A stored state's last list, trigger and deletion marker, without decoding the rest."""
    return _list_decoder.decode(raw)


_CONTAINERS = tuple(f.name for f in msgspec.structs.fields(UserState) if f.default_factory in (list, dict))


def copy_state(state: UserState) -> UserState:
    """A copy that in-place changes to ``state`` do not reach: its lists and dicts are copied (their items are
    immutable: frozen structs, strings, numbers), the rest is shared. What a user's state was before a batch, kept
    in case the model fails on the user and the batch must be undone (stream/handler.py)."""
    return msgspec.structs.replace(state, **{name: getattr(state, name).copy() for name in _CONTAINERS})


def is_redelivery(state: UserState, source: str, offset: int, ts: float) -> bool:
    """True if the event at ``offset`` of ``source`` was already applied (exact, unlike the id window).

    An applied event is never newer than ``last_ts`` (the newest applied) or a deletion marker's time, so the
    time test never lets a true redelivery through; it keeps a topic that was deleted and recreated (offsets
    from 0 again, as on every start of the memory-only embedded broker) from having its new events taken for
    old ones.
    """
    return 0 <= offset <= state.offsets.get(source, -1) and ts <= max(state.last_ts, state.deleted_ts)


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


def is_deleted(state: UserState | StoredList) -> bool:
    """The state is a deletion marker: the user was deleted and has not come back with a new event."""
    return state.deleted_ts > 0.0


def apply_impression(state: UserState, event: Impression, limits: Limits) -> bool:
    """Remember the items ``event`` showed (not those the user already has); False if already applied.

    A re-shown item keeps its first time and counts one more showing; when full, the longest-shown go.
    """
    if is_duplicate(state, event.event_id):
        return False
    _remember_id(state, event.event_id, limits)
    have = set(state.seen)
    where = {s.item_id: n for n, s in enumerate(state.shown)}
    for position, item_id in enumerate(dict.fromkeys(event.items)):  # distinct, in order
        if item_id in have:
            continue
        n = where.get(item_id)
        if n is None:
            where[item_id] = len(state.shown)
            state.shown.append(Shown(item_id, event.ts, event.ts, 1, position))
        else:
            old = state.shown[n]
            state.shown[n] = Shown(item_id, old.first_ts, max(old.last_ts, event.ts), old.count + 1, position,
                                   old.skips)
    if len(state.shown) > limits.shown_max:
        del state.shown[: len(state.shown) - limits.shown_max]
    return True


def take_shown(state: UserState, item_id: str) -> None:
    """The user took ``item_id``: it is no longer shown-and-not-taken, and the items the same impression
    showed above it were skipped (seen, and passed over for it)."""
    if not state.shown:
        return
    taken = next((s for s in state.shown if s.item_id == item_id), None)
    if taken is None:
        return
    state.shown = [
        msgspec.structs.replace(s, skips=s.skips + 1) if s.last_ts == taken.last_ts and s.position < taken.position
        else s
        for s in state.shown if s.item_id != item_id
    ]


def shown_negatives(state: UserState, now: float, window_s: float, most: int, skipped: bool = False) -> list[str]:
    """Items shown at least ``window_s`` before ``now`` (event time) and not taken (``skipped``: and passed
    over for a take below them at least once): the latest first."""
    out = []
    for s in reversed(state.shown):
        if now - s.first_ts >= window_s and (not skipped or s.skips):
            out.append(s.item_id)
            if len(out) >= most:
                break
    return out


def demoted(state: UserState, after: int, skips: bool = False) -> list[str]:
    """Items shown ``after`` times or more without a take (``skips``: skipped that often; ``after`` <= 0:
    none)."""
    if after <= 0:
        return []
    return [s.item_id for s in state.shown if (s.skips if skips else s.count) >= after]
