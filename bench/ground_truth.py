"""What the topics, the group and the workers' stores hold, read to their true end, and what they should hold,
computed from scratch: what the soak benchmark and the guarantee tests compare.

Reading "to the end" means until each partition reports EOF, which comes from the Fetch response's high
watermark: true on the embedded broker (its ListOffsets answer is not), so nothing is missed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from rocksdict import AccessType, Options, Rdict

from schemas.records import Interaction
from stream.state import Limits, UserState, apply_interaction, decode_state

FAUST_KEY_PREFIX = b"__faust"


# --- topics and the group --------------------------------------------------------------------------------
def read_to_end(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Message]:
    """Every message of ``topic``, read from the start until each partition reports EOF."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        assert meta.error is None, f"{topic}: {meta.error}"
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        pending, messages = set(meta.partitions), []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is None:
                messages.append(msg)
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(msg.partition())
        assert not pending, f"{topic}: partitions {sorted(pending)} never reached their end in {timeout_s}s"
        return messages
    finally:
        consumer.close()


def last_by_key(messages: Iterable[Message]) -> dict[str, bytes | None]:
    """The last value per key, in the topic's order (a key lives in one partition): what compaction keeps."""
    return {m.key().decode(): m.value() for m in messages}


def end_offsets(messages: Iterable[Message]) -> dict[int, int]:
    """The offset after each partition's last message, from a topic read with :func:`read_to_end`."""
    ends: dict[int, int] = {}
    for m in messages:
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return ends


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """A consumer group's committed offset per partition (0 where it committed nothing), without joining."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in offsets}


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-users-changelog"


def changelog_states(bootstrap: str, app_id: str) -> dict[str, UserState]:
    """Every user's state as the table's changelog holds it (not users whose last record is a tombstone)."""
    last = last_by_key(read_to_end(bootstrap, changelog_topic(app_id)))
    return {user: decode_state(value) for user, value in last.items() if value is not None}


# --- a stopped worker's store ------------------------------------------------------------------------------
def read_user_states(data_dir: Path) -> dict[str, UserState]:
    """Every user's state in a stopped worker's RocksDB table (all partitions under ``data_dir``)."""
    states: dict[str, UserState] = {}
    for db_path in sorted(data_dir.rglob("users-*.db")):
        db = Rdict(str(db_path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if bytes(key).startswith(FAUST_KEY_PREFIX):
                    continue  # Faust's own bookkeeping (the persisted changelog offset), not a user
                states[bytes(key).decode()] = decode_state(bytes(value))
        finally:
            db.close()
    return states


def persisted_changelog_offsets(data_dir: Path) -> dict[int, int]:
    """Per partition, the changelog offset a stopped worker's RocksDB says its table has read up to (Faust's
    ``__faust offset__`` key): below the changelog's last offset, the store missed the tail."""
    found: dict[int, int] = {}
    for db_path in sorted(data_dir.rglob("users-*.db")):
        db = Rdict(str(db_path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if bytes(key).startswith(FAUST_KEY_PREFIX) and b"offset" in bytes(key):
                    found[int(db_path.name.split("-")[-1].split(".")[0])] = int(bytes(value))
        finally:
            db.close()
    return dict(sorted(found.items()))


# --- from scratch -------------------------------------------------------------------------------------------
def reference_states(events: Iterable[Interaction], limits: Limits | None = None) -> dict[str, UserState]:
    """Each user's state computed from scratch: every event applied once, in order, by the same pure rules
    (with the default limits the worker runs with unless given others)."""
    limits = Limits() if limits is None else limits
    states: dict[str, UserState] = {}
    for event in events:
        apply_interaction(states.setdefault(event.user_id, UserState()), event, limits)
    return states


def state_view(state: UserState) -> tuple:
    """The parts of a state that events determine (not the model's head or last list)."""
    return (state.interactions, list(state.support), state.seen, state.recent_ids,
            state.last_event_id, state.first_ts, state.last_ts)


def differing_users(actual: dict[str, UserState], expected: dict[str, UserState]) -> list[str]:
    """Users of ``expected`` whose state in ``actual`` is missing or differs in what the events determine."""
    return [u for u in expected if u not in actual or state_view(actual[u]) != state_view(expected[u])]
