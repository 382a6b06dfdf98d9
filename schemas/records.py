"""The records that travel through metarec's topics, as strict msgspec structs.

Every bound lives in the type (``msgspec.Meta``), so decoding enforces it in C and the JSON Schema export
(:mod:`schemas.export`) documents it for producers in other languages. The decoders that apply these types,
and map their failures to a small set of reasons, are in :mod:`schemas.decode`.

Topics and their records:

* ``interactions`` (keyed by ``user_id``): :data:`UserEvent`, a union tagged on ``kind`` —
  :class:`Interaction`, :class:`Impression`, :class:`UserAttributes`, :class:`UserDeletion`.
* ``items`` (keyed by ``item_id``): :class:`ItemEvent`.
* ``recommendations`` (keyed by ``user_id``): :class:`Recommendation`.
* ``dead-letters``: the original key and value bytes; why and where from in Kafka headers
  (:class:`DeadLetterHeaders`, reasons :data:`DeadLetterReason`).

Unknown fields are ignored so producers can add fields before consumers know them; an unknown schema
version ``v`` is refused, because a new version may change what a known field means.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec

SCHEMA_VERSION = 1

#: Seconds since the epoch of 1990-01-01T00:00:00Z and 2100-01-01T00:00:00Z: a ``ts`` outside them is a unit
#: mistake (milliseconds, say), not a real event.
TS_MIN = 631152000.0
TS_MAX = 4102444800.0
VALUE_ABS_MAX = 1e6
ATTRIBUTES_MAX = 64
CATEGORIES_MAX = 64
RECOMMENDATION_ITEMS_MAX = 1000
IMPRESSION_ITEMS_MAX = 1000

EventId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, description="Unique per event; dedup key.")
]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
ItemId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Timestamp = Annotated[
    float, msgspec.Meta(ge=TS_MIN, le=TS_MAX, description="Seconds since the Unix epoch (UTC), 1990..2100.")
]
Value = Annotated[float, msgspec.Meta(ge=-VALUE_ABS_MAX, le=VALUE_ABS_MAX)]
Version = Annotated[
    Literal[1], msgspec.Meta(description="Schema version; consumers refuse unknown versions.")
]
AttributeKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
AttributeValue = Union[Annotated[str, msgspec.Meta(max_length=1024)], float, bool]
Attributes = Annotated[dict[AttributeKey, AttributeValue], msgspec.Meta(max_length=ATTRIBUTES_MAX)]
Category = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
InteractionType = Literal["view", "click", "cart", "purchase", "rating", "play"]


class _Record(msgspec.Struct, frozen=True, gc=False, tag_field="kind"):
    """Shared struct options: immutable, no GC tracking (records hold no cycles), tagged on ``kind``."""


class Interaction(_Record, tag="interaction"):
    """A user did something with an item: the event the model learns from."""

    event_id: EventId
    user_id: UserId
    item_id: ItemId
    type: InteractionType
    ts: Timestamp
    value: Value | None = None
    v: Version = 1


class Impression(_Record, tag="impression"):
    """The items a list showed a user (``list_id`` names the list, e.g. a recommendation's ``event_id``).

    What is shown and not taken is evidence too: an item shown and not interacted with within
    ``METAREC_IMPRESSION_WINDOW_S`` becomes a negative in the user's adaptation, and one shown
    ``METAREC_IMPRESSION_DEMOTE_AFTER`` times without a take is no longer recommended to them.
    """

    event_id: EventId
    user_id: UserId
    list_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    items: Annotated[list[ItemId], msgspec.Meta(min_length=1, max_length=IMPRESSION_ITEMS_MAX)]
    ts: Timestamp
    v: Version = 1


class UserAttributes(_Record, tag="user"):
    """Side information about a user (country, plan, ...); replaces the user's attributes as a whole."""

    event_id: EventId
    user_id: UserId
    ts: Timestamp
    attributes: Attributes = msgspec.field(default_factory=dict)
    v: Version = 1


class UserDeletion(_Record, tag="delete"):
    """Forget this user: state is dropped and a tombstone is written downstream."""

    event_id: EventId
    user_id: UserId
    ts: Timestamp
    v: Version = 1


class ItemEvent(_Record, tag="item"):
    """An item was created or changed in the catalogue; the latest event per ``item_id`` wins."""

    event_id: EventId
    item_id: ItemId
    ts: Timestamp
    title: Annotated[str, msgspec.Meta(max_length=512)] = ""
    text: Annotated[str, msgspec.Meta(max_length=16384)] = ""
    categories: Annotated[list[Category], msgspec.Meta(max_length=CATEGORIES_MAX)] = msgspec.field(
        default_factory=list
    )
    attributes: Attributes = msgspec.field(default_factory=dict)
    # false: the item is never recommended (out of stock, withdrawn) until an event says true again; absent
    # (null): availability stays as it was (a new item starts available)
    available: bool | None = None
    v: Version = 1


class ScoredItem(msgspec.Struct, frozen=True, gc=False):
    """One recommended item and the model's score for it (higher is better)."""

    item_id: ItemId
    score: float


class Recommendation(_Record, tag="recommendation"):
    """Top-K items for a user, produced once the event ``event_id`` (at ``event_ts``) was applied.

    Output is at-least-once, and a re-sent or redelivered event gets a new list under the same ``event_id``:
    keep the list with the highest ``seq`` per user (on equal ``seq``, the later one on the topic).
    """

    user_id: UserId
    items: Annotated[list[ScoredItem], msgspec.Meta(max_length=RECOMMENDATION_ITEMS_MAX)]
    model_version: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    event_id: EventId
    event_ts: Timestamp
    produced_ts: Timestamp
    seq: Annotated[int, msgspec.Meta(ge=0, description=(
        "The lists sent to this user so far, this one included: it never goes back, also across restarts "
        "(kept in the user's changelogged state). Keep the highest per user; on equal seq (a worker that "
        "crashed while sending), the later on the topic. 0: no list sent on the topic (a read-API answer ranked "
        "on request) or one from a worker that predates seq."))] = 0
    first_event_id: Annotated[EventId | None, msgspec.Meta(description=(
        "The first of the user's events this list answers: the user's events from first_event_id to event_id, "
        "in the order they were produced, were applied in one batch (after a deletion in it, only those after "
        "it). null: event_id alone."))] = None
    v: Version = 1


UserEvent = Union[Interaction, Impression, UserAttributes, UserDeletion]

# --- dead letters: original key and value bytes are kept; why they were refused travels in headers ----------
DeadLetterReason = Literal[
    "too_large",
    "too_deep",
    "not_utf8",
    "not_json",
    "unknown_kind",
    "unsupported_version",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "invalid",
    "key_mismatch",  # the Kafka key is not the record's user_id / item_id (checked by the stream side)
    "model_error",  # the model failed on the user's request alone: the user's events of that batch (stream side)
]
HEADER_REASON = "metarec-reason"
HEADER_ERROR = "metarec-error"
HEADER_SOURCE_TOPIC = "metarec-source-topic"
HEADER_SOURCE_PARTITION = "metarec-source-partition"
HEADER_SOURCE_OFFSET = "metarec-source-offset"
DEAD_LETTER_HEADERS = (
    HEADER_REASON,
    HEADER_ERROR,
    HEADER_SOURCE_TOPIC,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_OFFSET,
)
DETAIL_MAX_CHARS = 1000  # the free-text error header is cut here: a header is not a log


def dead_letter_headers(reason: str, detail: str, topic: str, partition: int,
                        offset: int) -> list[tuple[str, bytes]]:
    """The headers of a dead letter: why it was refused and where it came from (all writers')."""
    return [
        (HEADER_REASON, reason.encode()),
        (HEADER_ERROR, detail[:DETAIL_MAX_CHARS].encode("utf-8", "replace")),
        (HEADER_SOURCE_TOPIC, topic.encode()),
        (HEADER_SOURCE_PARTITION, str(partition).encode()),
        (HEADER_SOURCE_OFFSET, str(offset).encode()),
    ]


class DeadLetterHeaders(msgspec.Struct, frozen=True, rename={
    "reason": HEADER_REASON,
    "error": HEADER_ERROR,
    "source_topic": HEADER_SOURCE_TOPIC,
    "source_partition": HEADER_SOURCE_PARTITION,
    "source_offset": HEADER_SOURCE_OFFSET,
}):
    """The Kafka headers of a record on ``dead-letters``, each a UTF-8 string; the record's key and value are the
    refused message's own bytes."""

    reason: DeadLetterReason
    error: Annotated[str, msgspec.Meta(max_length=DETAIL_MAX_CHARS, description="What was wrong, for a human.")]
    source_topic: str
    source_partition: Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
    source_offset: Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
