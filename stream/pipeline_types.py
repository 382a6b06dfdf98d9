"""What a batch is made of on its way through stream/pipeline.py: the consumed messages, the rules they are
judged by, the plan made of them before the model answers and the settlement after it.

Plain records, no logic beyond a few sums: stream/pipeline.py's pure functions build them, the handler
carries them out, the metrics read them. Kept apart so that module holds only the batch's two steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from models.core.targets import EventWeights
from models.serving.recommender import AdaptResult
from models.serving.requests import AdaptRequest, LearnedUser
from schemas.records import Interaction, UserEvent
from stream.state import Limits, UserState

if TYPE_CHECKING:
    from stream.settings import Settings


class RawMessage(NamedTuple):
    """One consumed message, as the pipeline needs it.

    A named tuple, not a frozen dataclass: one is built per consumed event, and a tuple builds ~5x faster.
    """

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float  # Kafka message timestamp, seconds


@dataclass(frozen=True)
class DeadLetter:
    message: RawMessage
    reason: str
    detail: str


@dataclass(frozen=True)
class Rules:
    """What a valid event must satisfy beyond its schema, and the bounds of every state."""

    limits: Limits = Limits()
    max_event_bytes: int = 65536
    max_future_skew_s: float = 86400.0
    weights: EventWeights | None = None  # the operator's event weights (None: the defaults of models/core)
    # impressions (defaults as Settings', chosen by bench/impressions.py)
    impression_window_s: float = 0.0  # shown this long ago and not taken: a negative
    negatives_max: int = 32  # shown-and-not-taken negatives per request, at most
    demote_after: int = 0  # shown (skipped) this often without a take: excluded (0: never)
    by_skips: bool = True  # count skips (shown above a take) rather than showings

    @classmethod
    def of(cls, settings: Settings) -> Rules:
        """The rules a worker's settings say (the handler and the read API build requests alike)."""
        return cls(
            limits=Limits(settings.support_size, settings.seen_max, settings.recent_event_ids, settings.shown_max),
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            weights=settings.weights,
            impression_window_s=settings.impression_window_s,
            negatives_max=settings.impression_negatives,
            demote_after=settings.impression_demote_after,
            by_skips=settings.impression_skips,
        )


@dataclass
class Decoded:
    """A batch's valid events in message order, its dead letters, and whose states it needs."""

    events: list[tuple[RawMessage, UserEvent]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    users: dict[str, int] = field(default_factory=dict)  # user id -> partition of their first message


@dataclass
class UserWork:
    """The outcome of a batch for one user."""

    user_id: str
    partition: int  # of the user's last message: where their state is written
    state: UserState
    trigger: Interaction | None = None  # the latest interaction (also if it was a redelivered duplicate)
    first: Interaction | None = None  # the first interaction since the batch began or its last deletion
    trigger_timestamp: float = 0.0  # Kafka timestamp of the trigger's message
    deleted: bool = False  # a deletion happened in this batch (state restarts empty after it)
    applied: int = 0  # interactions newly counted into state
    impressions: int = 0  # impressions newly counted into state
    duplicates: int = 0
    hits: list[tuple[str, bool]] = field(default_factory=list)  # (history bucket, hit) per new interaction
    # (item, ts, rating or None) of each newly counted interaction, in order: what the item statistics learn
    learned: list[tuple[str, float, float | None]] = field(default_factory=list)
    history_before: tuple[str, ...] | None = None  # ``state.seen`` before the first of them (None: no event)
    fresh: int = 0  # items that first arrived in this batch (since a deletion in it): the tail of ``seen``
    counted: list[RawMessage] = field(default_factory=list)  # the messages of the newly counted interactions


@dataclass
class BatchPlan:
    """Everything the handler carries out before the model answers."""

    dead: list[DeadLetter] = field(default_factory=list)
    users: dict[str, UserWork] = field(default_factory=dict)
    wanted: list[UserWork] = field(default_factory=list)  # users to rank, in the order of ``requests``
    requests: list[AdaptRequest] = field(default_factory=list)
    learned: list[LearnedUser] = field(default_factory=list)  # for the item statistics, after the ranking
    forget: list[str] = field(default_factory=list)  # users deleted in this batch: forget before ``learned``

    @property
    def processed(self) -> int:
        return sum(w.applied + w.impressions for w in self.users.values())

    @property
    def duplicates(self) -> int:
        return sum(w.duplicates for w in self.users.values())


class Answer(Protocol):
    """What the model worker answers per request (``stream.model_worker.Served``)."""

    @property
    def result(self) -> AdaptResult: ...

    @property
    def version(self) -> str: ...


class StateWrite(NamedTuple):
    partition: int
    key: bytes
    value: bytes | None  # None: delete the key (and tombstone its changelog)


@dataclass
class Observations:
    """What the metrics record of a settled batch, by the model version that served each list."""

    served: dict[str, tuple[list[UserState], list[AdaptResult]]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # event timestamp to list, seconds, per list
    deletions: int = 0


@dataclass
class Settlement:
    """Everything the handler carries out once the model answered, before the batch is acked."""

    writes: list[StateWrite] = field(default_factory=list)
    tombstones: list[bytes] = field(default_factory=list)  # keys whose standing list is withdrawn (first)
    lists: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, encoded Recommendation)
    observations: Observations = field(default_factory=Observations)
