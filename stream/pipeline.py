"""What one batch of raw ``interactions`` messages does, as pure functions: plan it, then settle it.

A batch visits this module twice, and the model answers in between (stream/handler.py carries it):

1. :func:`decode` the messages (dead letters out; which users the batch touches), then :func:`plan` the
   batch on those users' loaded states: the per-user work, the adaptation requests
   (models/serving/requests.py), what the model's item statistics learn (``LearnedUser``) and forget, and the
   dead letters;
2. :func:`settle` it with the model's answers: the state bytes to write (or delete), the lists and tombstones
   to send, and what the metrics observe.

Nothing here touches Kafka, Faust, a store, the clock or the model, so every rule is a unit test away. One
thing is deliberately not copied: :func:`plan` applies events to the states it is given, in place, and
:func:`settle` stores the adapted head and list in them. The handler shares one state object between the
in-flight batches of a user, so a later batch continues from where the earlier one left it before anything
reached the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, Mapping, NamedTuple, Protocol, Sequence

from models.core.targets import EventWeights, count_weight
from models.serving.recommender import AdaptResult
from models.serving.requests import AdaptRequest, LearnedUser, build_request, target
from schemas.decode import DecodeError, decode_user_event, encode
from schemas.records import (
    Impression,
    Interaction,
    Recommendation,
    ScoredItem,
    UserAttributes,
    UserDeletion,
    UserEvent,
)
from stream.state import (
    EVENT_TYPE_NAMES,
    Applied,
    Limits,
    UserState,
    apply_attributes,
    apply_impression,
    apply_interaction,
    demoted,
    encode_state,
    history_bucket,
    is_redelivery,
    mark_applied,
    shown_negatives,
    take_shown,
)

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
    def of(cls, settings: "Settings") -> "Rules":
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


# --- stage 1 ------------------------------------------------------------------------------------------------
def decode(messages: Iterable[RawMessage], rules: Rules, now: float) -> Decoded:
    """Decode and validate a batch in message order; refused messages become dead letters with a reason."""
    out = Decoded()
    for msg in messages:
        try:
            event = _decode(msg, rules, now)
        except DecodeError as err:
            out.dead.append(DeadLetter(msg, err.reason, err.detail))
            continue
        out.events.append((msg, event))
        out.users.setdefault(event.user_id, msg.partition)
    return out


def plan(decoded: Decoded, states: Mapping[str, UserState], rules: Rules, objective: str) -> BatchPlan:
    """Apply the decoded events to the users' ``states`` (one per user of ``decoded.users``, updated in place)
    and say what to ask the model, what it learns and forgets."""
    out = BatchPlan(dead=list(decoded.dead))
    for msg, event in decoded.events:
        work = out.users.get(event.user_id)
        if work is None:
            work = out.users[event.user_id] = UserWork(event.user_id, msg.partition, states[event.user_id])
        work.partition = msg.partition
        _apply(work, event, msg, rules)
    for work in out.users.values():
        _ask(out, work, objective, rules)
    return out


def replan(decoded: Decoded, user_id: str, partition: int, state: UserState, rules: Rules, objective: str,
           *, interactions: bool = True) -> BatchPlan:
    """One user's part of a planned batch, planned again on ``state`` (updated in place); no dead letters.

    For a user the model failed on: with ``interactions=False`` the batch's interactions are left out (its
    deletions, attribute changes and impressions still apply) and the user is written but asked nothing; a
    later batch begun on the state that held them is planned again on the state without them. The user is in
    the plan's ``users`` even when the batch left nothing of theirs, so their state is written all the same.
    """
    out = BatchPlan()
    work = out.users[user_id] = UserWork(user_id, partition, state)
    for msg, event in decoded.events:
        if event.user_id == user_id and (interactions or not isinstance(event, Interaction)):
            work.partition = msg.partition
            _apply(work, event, msg, rules)
    _ask(out, work, objective, rules)
    return out


def _ask(out: BatchPlan, work: UserWork, objective: str, rules: Rules) -> None:
    """What the model hears of a planned user: forget, learn, rank."""
    if work.deleted:
        out.forget.append(work.user_id)
    if work.learned:
        out.learned.append(LearnedUser(work.user_id, work.history_before or (), tuple(work.learned)))
    if work.trigger is not None:
        out.wanted.append(work)
        out.requests.append(adapt_request(work.user_id, work.state, objective, work.fresh, rules, work.trigger.ts))


def adapt_request(user_id: str, state: UserState, objective: str, fresh: int = 0, rules: Rules = Rules(),
                  now: float | None = None, exclude: Iterable[str] = ()) -> AdaptRequest:
    """What the model adapts on for a stored state: its support set (under the rules' event weights), its seen
    items in arrival order, and what impressions say: items shown ``rules.impression_window_s`` before ``now``
    (event time; default the user's latest) and not taken as negatives, items shown too often excluded.
    ``exclude``: more items to leave out (a read-API request's)."""
    support = [(s.item_id, EVENT_TYPE_NAMES[s.type_code], s.value, s.ts) for s in state.support]
    at = state.last_ts if now is None else now
    negatives = shown_negatives(state, at, rules.impression_window_s, rules.negatives_max,
                                rules.by_skips) if state.shown else ()
    left_out = [*demoted(state, rules.demote_after, rules.by_skips), *exclude] if state.shown else list(exclude)
    return build_request(user_id, support, objective, seen=state.seen, fresh=fresh, weights=rules.weights,
                         negatives=negatives, demoted=left_out)


def _decode(msg: RawMessage, rules: Rules, now: float) -> UserEvent:
    if msg.value is None:
        raise DecodeError("invalid", "message has no value (null payload)")
    event = decode_user_event(msg.value, max_bytes=rules.max_event_bytes)
    if msg.key is None:
        raise DecodeError("key_mismatch", "message has no key; key every event by its user_id")
    if msg.key != event.user_id.encode():
        raise DecodeError("key_mismatch", "message key differs from user_id; key every event by its user_id")
    if event.ts > now + rules.max_future_skew_s:
        raise DecodeError("out_of_range", f"ts {event.ts} is more than {rules.max_future_skew_s}s in the future")
    return event


@lru_cache(maxsize=4096)
def _source(topic: str, partition: int) -> str:
    """The state's key of a source partition, built once per partition rather than once per event."""
    return f"{topic}:{partition}"


def _apply(work: UserWork, event: UserEvent, msg: RawMessage, rules: Rules) -> None:
    """Apply one event to the user's state, unless its offset says it was applied before (a redelivery).

    The offset check is exact for events redelivered by Kafka after a crash; the event-id window in the state
    catches the same event produced twice (at two offsets).
    """
    source = _source(msg.topic, msg.partition)
    redelivered = is_redelivery(work.state, source, msg.offset, event.ts)
    if isinstance(event, UserDeletion):
        if not redelivered:
            work.state = UserState(offsets=work.state.offsets, deleted_ts=event.ts)  # a marker, nothing else
            mark_applied(work.state, source, msg.offset)
            work.learned.clear()  # nothing from before the deletion may reach the item statistics either
            work.counted.clear()
            work.history_before = ()  # the user starts over: the statistics forget them before learning
            work.fresh = 0
            work.deleted = True
            work.trigger = work.first = None
        return
    if isinstance(event, UserAttributes):
        if not redelivered and apply_attributes(work.state, event, rules.limits):
            work.state.deleted_ts = 0.0  # the user came back
            mark_applied(work.state, source, msg.offset)
        return
    if isinstance(event, Impression):
        if not redelivered and apply_impression(work.state, event, rules.limits):
            work.impressions += 1
            mark_applied(work.state, source, msg.offset)
        else:
            work.duplicates += 1
        return
    _apply_interaction(work, event, msg, redelivered, rules)
    mark_applied(work.state, source, msg.offset)


def _apply_interaction(work: UserWork, event: Interaction, msg: RawMessage, redelivered: bool,
                       rules: Rules) -> None:
    before = work.state.interactions
    last_recs = work.state.last_recs
    if work.history_before is None:
        work.history_before = tuple(work.state.seen)  # the user's items before this batch taught anything
    applied = Applied.DUPLICATE if redelivered else apply_interaction(work.state, event, rules.limits)
    if applied:
        work.applied += 1
        work.counted.append(msg)
        work.fresh += applied is Applied.NEW_ITEM
        work.state.deleted_ts = 0.0  # the user came back
        take_shown(work.state, event.item_id)
        rating = target(event.type, event.value, "rating")
        if rules.weights is None:
            work.learned.append((event.item_id, event.ts, rating))
        elif (weight := count_weight(event.type, rules.weights)) > 0:
            work.learned.append((event.item_id, event.ts, rating, weight))
        if last_recs:
            work.hits.append((history_bucket(before), event.item_id in last_recs))
    else:
        work.duplicates += 1
    work.trigger = event
    work.first = work.first or event
    work.trigger_timestamp = msg.timestamp


# --- stage 2 ------------------------------------------------------------------------------------------------
def settle(batch: BatchPlan, answers: Sequence[Answer], now: float) -> Settlement:
    """What to write and send for a planned batch, given the model's answers to ``batch.requests`` in order.

    A served user keeps the adapted head and the list just sent, with its scores and trigger (the next batch
    measures hits against it; the read API serves it), and counts it in ``seq``, which the list carries; a user
    deleted in this batch gets a tombstone on the lists topic, and only a deletion marker as state if nothing
    came after the deletion. Metrics are attributed to the version that served each list.
    """
    if len(answers) != len(batch.wanted):
        raise ValueError(f"{len(answers)} answers for {len(batch.wanted)} requests")
    out = Settlement()
    by_user = {work.user_id: answer for work, answer in zip(batch.wanted, answers)}
    for work in batch.users.values():
        key = work.user_id.encode()
        if work.deleted:
            out.tombstones.append(key)
            out.observations.deletions += 1
        answer = by_user.get(work.user_id)
        if answer is not None:
            work.state.seq += 1  # before the state is encoded: the state remembers the list it sends
        out.writes.append(StateWrite(work.partition, key, _state_after(work, answer, now)))
        if answer is not None:
            assert work.trigger is not None and work.first is not None  # only triggered users were asked about
            rec = recommendation(work.user_id, answer.result.items, answer.result.scores, answer.version,
                                 work.trigger, now, seq=work.state.seq, first=work.first)
            out.lists.append((key, encode(rec)))
            states, results = out.observations.served.setdefault(answer.version, ([], []))
            states.append(work.state)
            results.append(answer.result)
            out.observations.latencies.append(max(0.0, now - work.trigger_timestamp))
    return out


def _state_after(work: UserWork, answer: Answer | None, now: float) -> bytes | None:
    """A user's state bytes after the batch (a deleted user's: the deletion marker, unless they came back)."""
    if answer is not None:
        assert work.trigger is not None
        state = work.state
        state.head = answer.result.head.tobytes()
        state.model_version = answer.version
        state.last_recs = list(answer.result.items)
        state.last_scores = [_finite(s) for s in answer.result.scores]
        state.list_event_id, state.list_event_ts, state.list_ts = work.trigger.event_id, work.trigger.ts, now
    return encode_state(work.state)


def _finite(score: float) -> float:
    return float(score) if math.isfinite(score) else 0.0


def recommendation(
    user_id: str, items: Sequence[str], scores: Sequence[float], version: str, trigger: Interaction, now: float,
    *, seq: int = 0, first: Interaction | None = None,
) -> Recommendation:
    """The list for ``trigger``, the user's ``seq``-th, answering the user's events from ``first`` to it."""
    return Recommendation(
        user_id=user_id,
        items=[ScoredItem(item_id=i, score=_finite(s)) for i, s in zip(items, scores)],
        model_version=version,
        event_id=trigger.event_id,
        event_ts=trigger.ts,
        produced_ts=now,
        seq=seq,
        first_event_id=(first or trigger).event_id,
    )
