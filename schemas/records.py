"""The records that travel through metarec's topics, as strict msgspec structs.

Every bound lives in the type (``msgspec.Meta``), so decoding enforces it in C and the JSON Schema export
(:mod:`schemas.export`) documents it for producers in other languages. The decoders that apply these types,
and map their failures to a small set of reasons, are in :mod:`schemas.decode`.

Topics and their records:

* ``interactions`` (keyed by ``user_id``): :data:`UserEvent`, a union tagged on ``kind`` —
  :class:`Interaction`, :class:`UserAttributes`, :class:`UserDeletion`.
* ``items`` (keyed by ``item_id``): :class:`ItemEvent`.
* ``recommendations`` (keyed by ``user_id``): :class:`Recommendation`.
* ``dead-letters``: the original key and value bytes, the reason in the ``HEADER_*`` Kafka headers below.

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
    v: Version = 1


class ScoredItem(msgspec.Struct, frozen=True, gc=False):
    """One recommended item and the model's score for it (higher is better)."""

    item_id: ItemId
    score: float


class Recommendation(_Record, tag="recommendation"):
    """Top-K items for a user, produced once the event ``event_id`` (at ``event_ts``) was applied."""

    user_id: UserId
    items: Annotated[list[ScoredItem], msgspec.Meta(max_length=RECOMMENDATION_ITEMS_MAX)]
    model_version: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    event_id: EventId
    event_ts: Timestamp
    produced_ts: Timestamp
    v: Version = 1


UserEvent = Union[Interaction, UserAttributes, UserDeletion]

# --- dead letters: original key and value bytes are kept; why they were refused travels in headers ----------
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
