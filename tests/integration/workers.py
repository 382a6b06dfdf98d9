"""Starting real metarec worker processes for integration tests, and reading their RocksDB state afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rocksdict import AccessType, Options, Rdict

from schemas.decode import decode_recommendation
from schemas.records import Interaction, Recommendation
from stream.broker import free_port
from stream.settings import Settings
from stream.state import Limits, UserState, apply_interaction, decode_state
from stream.topics import app_topic_specs, ensure_topics

FAUST_KEY_PREFIX = b"__faust"


@dataclass
class WorkerSpec:
    """Everything that makes one worker (or a group of them) unique to a test."""

    bootstrap: str
    prefix: str
    checkpoint: Path
    data_dir: Path
    app_id: str = ""
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)

    def settings(self) -> Settings:
        """The settings the worker will read from :meth:`env` (for topic names and clients in the test)."""
        return Settings(brokers=self.bootstrap, topic_prefix=self.prefix,
                        app_id=self.app_id or f"{self.prefix}app", partitions=self.partitions,
                        checkpoint=str(self.checkpoint), data_dir=self.data_dir)

    def create_topics(self) -> "WorkerSpec":
        """Create the app's topics with its partition counts before any worker or producer starts."""
        settings = self.settings()
        ensure_topics(settings.kafka_config(), app_topic_specs(settings))
        return self

    def env(self, metrics_port: int) -> dict[str, str]:
        return {
            **os.environ,
            "METAREC_BROKERS": self.bootstrap,
            "METAREC_TOPIC_PREFIX": self.prefix,
            "METAREC_APP_ID": self.app_id or f"{self.prefix}app",
            "METAREC_PARTITIONS": str(self.partitions),
            "METAREC_CHECKPOINT": str(self.checkpoint),
            "METAREC_DATA_DIR": str(self.data_dir),
            "METAREC_METRICS_PORT": str(metrics_port),
            "METAREC_MODEL_POLL_S": "0.5",
            **self.extra_env,
        }


class WorkerProcess:
    """A ``python -m stream worker`` subprocess with its log in a file."""

    def __init__(self, spec: WorkerSpec, log_path: Path) -> None:
        self.metrics_port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"], env=spec.env(self.metrics_port),
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def read_user_states(data_dir: Path) -> dict[str, UserState]:
    """Every user's state in a stopped worker's RocksDB table (all partitions)."""
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


# --- what the guarantee tests share: waiting, metrics, reading topics to their true end, the reference state --
POLL_S = 0.2  # the poll interval of bounded waits: how often a condition is checked, never a synchronisation


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               alive: Sequence[WorkerProcess] = (), progress: Callable[[], object] | None = None) -> None:
    """Check ``condition`` until it holds; fail after ``timeout_s`` or as soon as a worker in ``alive`` died.

    ``progress`` (optional) says where things stood, in the timeout's message.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        for worker in alive:
            if not worker.alive():
                raise AssertionError(f"worker exited ({worker.proc.returncode}) while waiting for {what}:\n"
                                     f"{worker.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            where = f" ({progress()})" if progress is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{where}")
        time.sleep(POLL_S)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A worker's Prometheus samples as {(name, sorted labels): value}; empty while it is not serving yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def events_read(port: int) -> float:
    """Interactions this worker incarnation has read into state (new and duplicate), per its metrics."""
    samples = scrape(port)
    return sum(samples.get(("metarec_events_total", (("result", r),)), 0.0) for r in ("processed", "duplicate"))


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[Message]:
    """Every message of ``topic``, read from the start until each partition reports EOF.

    EOF comes from the Fetch response's high watermark, which is true on the embedded broker (its ListOffsets
    answer is not), so this sees the whole topic.
    """
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


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-users-changelog"


def changelog_states(bootstrap: str, app_id: str) -> dict[str, UserState]:
    """Every user's state as the table's changelog holds it (users whose last record is a tombstone omitted)."""
    last = last_by_key(read_to_end(bootstrap, changelog_topic(app_id)))
    return {user: decode_state(value) for user, value in last.items() if value is not None}


def reference_states(events: Iterable[Interaction], limits: Limits = Limits()) -> dict[str, UserState]:
    """Each user's state computed from scratch: every event applied once, in order, by the same pure rules."""
    states: dict[str, UserState] = {}
    for event in events:
        apply_interaction(states.setdefault(event.user_id, UserState()), event, limits)
    return states


def state_view(state: UserState) -> tuple:
    """The parts of a state that events determine (not the model's head or last list)."""
    return (state.interactions, list(state.support), state.seen, state.recent_ids,
            state.last_event_id, state.first_ts, state.last_ts)


def assert_states_equal(actual: dict[str, UserState], expected: dict[str, UserState], where: str) -> None:
    """Same users, and for each the same counts, support set, seen items and remembered ids."""
    assert set(actual) == set(expected), (
        f"{where}: users missing {sorted(set(expected) - set(actual))[:5]}, "
        f"unexpected {sorted(set(actual) - set(expected))[:5]}")
    wrong = [u for u in expected if state_view(actual[u]) != state_view(expected[u])]
    detail = [(u, actual[u].interactions, expected[u].interactions) for u in wrong[:5]]
    assert not wrong, f"{where}: {len(wrong)} users differ (user, counted, expected): {detail}"


def last_recommendations(bootstrap: str, topic: str) -> dict[str, Recommendation | None]:
    """Each user's latest recommendation on ``topic`` (None where the latest record is a tombstone)."""
    last = last_by_key(read_to_end(bootstrap, topic))
    return {user: None if value is None else decode_recommendation(value) for user, value in last.items()}


def await_recommendations(bootstrap: str, topic: str, wanted: dict[str, str], timeout_s: float,
                          alive: Sequence[WorkerProcess] = (), since: float = 0.0) -> list[Recommendation]:
    """Consume ``topic`` from the start until each user in ``wanted`` got a list for event ``wanted[user]``.

    Only lists produced at or after ``since`` (wall clock) count: after a crash, a list for a user's last event
    may come from an earlier incarnation while the new one is still re-reading older events. Fails (with what
    is still missing) after ``timeout_s``, or at once if a worker in ``alive`` exited. Returns every
    recommendation read, in order.
    """
    pending = dict(wanted)
    recs: list[Recommendation] = []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"await-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            for worker in alive:
                assert worker.alive(), f"worker exited ({worker.proc.returncode}):\n{worker.log_text()[-4000:]}"
            assert time.monotonic() < deadline, (
                f"after {timeout_s:.0f}s, {len(pending)} users still lack a list for their event, e.g. "
                f"{list(pending.items())[:3]}")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None or msg.value() is None:
                    continue
                rec = decode_recommendation(msg.value())
                recs.append(rec)
                if pending.get(rec.user_id) == rec.event_id and rec.produced_ts >= since:
                    del pending[rec.user_id]
    finally:
        consumer.close()
    return recs


def end_offsets(messages: Iterable[Message]) -> dict[int, int]:
    """The offset after each partition's last message, from a topic read with :func:`read_to_end`."""
    ends: dict[int, int] = {}
    for m in messages:
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return ends


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """A consumer group's committed offset per partition (0 where it committed nothing), without joining it."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in offsets}
