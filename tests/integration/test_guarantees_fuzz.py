"""Hostile input: over 10k generated messages, valid and hostile mixed, through one real worker.

Every hostile message must land in dead-letters with the reason its generator planted (matched by its source
partition and offset), no valid one may, every valid one must be counted into state and served, and the worker
must neither restart nor grow without bound: its process start time (its own ``process_start_time_seconds``)
is read after every chunk and must never change, it must never exit, and no agent may crash and restart inside
it. Hypothesis generates the chunks (see hostile_events.py); each chunk is checked before the next is sent, so a
failure names the chunk that caused it.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas.decode import DECODE_REASONS, decode_recommendation, encode
from schemas.records import HEADER_REASON, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, Interaction
from stream import versions
from stream.settings import Settings
from tests.integration.hostile_events import Hostile, hostile_messages, valid_interactions
from tests.integration.kafka_helpers import headers_of
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    assert_states_equal,
    read_user_states,
    reference_states,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.integration

CHUNK = 200
EXAMPLES = 52  # 52 x 200 = 10,400 messages
MIN_MESSAGES = 10_000
RSS_GROWTH_MAX_MB = 100.0  # after warm-up (measured: ~35 MB); 700 leaked 64-900 kB payloads would be ~300
USERS = ["user-0", "user-1", "\u00fc-ser", "\u7528\u6237", "\U0001f600-user", "u" * 256,
         *[f"user-{n}" for n in range(2, 26)]]


def started_at(port: int) -> float:
    """When the process serving ``port``'s metrics started, by its own account (it changes on any restart)."""
    return scrape(port)[("process_start_time_seconds", ())]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Rig:
    """One worker, a producer that learns where each message landed, and readers of both outputs."""

    def __init__(self, bootstrap: str, settings: Settings, worker: WorkerProcess) -> None:
        self.worker = worker
        self.topic = settings.interactions_topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.dead_reader = self._reader(bootstrap, settings.dead_letters_topic, 1)
        self.rec_reader = self._reader(bootstrap, settings.recommendations_topic, settings.partitions)
        self.dead: dict[tuple[int, int], str] = {}  # (source partition, offset) -> reason
        self.served: set[tuple[str, str]] = set()  # (user, triggering event id)
        self.valid: list[Interaction] = []
        self.valid_at: set[tuple[int, int]] = set()
        self.sent = 0

    @staticmethod
    def _reader(bootstrap: str, topic: str, partitions: int) -> Consumer:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fuzz-{topic}",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        return consumer

    def send(self, chunk: list[Interaction | Hostile]) -> list[tuple[int, int]]:
        where: dict[int, tuple[int, int]] = {}
        for i, item in enumerate(chunk):
            key, value = (item.user_id.encode(), encode(item)) if isinstance(item, Interaction) else (
                item.key, item.value)
            self.producer.produce(self.topic, key=key, value=value,
                                  on_delivery=lambda err, msg, i=i: where.__setitem__(i, _position(err, msg)))
            self.producer.poll(0)
        assert self.producer.flush(30) == 0
        self.sent += len(chunk)
        return [where[i] for i in range(len(chunk))]

    def close(self) -> None:
        self.dead_reader.close()
        self.rec_reader.close()
        del self.producer  # a producer has no close(); dropping the last reference destroys it

    def read(self) -> None:
        for msg in self.dead_reader.consume(1000, timeout=0.1):
            if msg.error() is None:
                h = headers_of(msg)
                source = (int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET]))
                self.dead[source] = h[HEADER_REASON].decode()
        for msg in self.rec_reader.consume(1000, timeout=0.1):
            if msg.error() is None and msg.value() is not None:
                rec = decode_recommendation(msg.value())
                self.served.add((rec.user_id, rec.event_id))

    def check(self, chunk: list[Interaction | Hostile], timeout_s: float = 90.0) -> None:
        where = self.send(chunk)
        bad = {at: item for at, item in zip(where, chunk) if isinstance(item, Hostile)}
        good = [item for item in chunk if isinstance(item, Interaction)]
        self.valid.extend(good)
        self.valid_at.update(at for at, item in zip(where, chunk) if isinstance(item, Interaction))
        last = {(e.user_id, e.event_id) for e in {e.user_id: e for e in good}.values()}
        deadline = time.monotonic() + timeout_s
        while set(bad) - set(self.dead) or last - self.served:
            assert self.worker.alive(), f"the worker died:\n{self.worker.log_text()[-4000:]}"
            assert time.monotonic() < deadline, (
                f"not dead-lettered: {[bad[a].why for a in set(bad) - set(self.dead)][:10]}; "
                f"not served: {sorted(last - self.served)[:5]}")
            self.read()
        assert not self.valid_at & set(self.dead), "a valid event was dead-lettered"
        wrong = [(h.why, h.reason, self.dead[at], h.value[:80] if h.value else None) for at, h in bad.items()
                 if self.dead[at] != h.reason]
        assert not wrong, f"{len(wrong)} dead letters with the wrong reason (what, planted, given, value): {wrong[:5]}"


def _position(err: KafkaError | None, msg: Message) -> tuple[int, int]:
    assert err is None, err
    return msg.partition(), msg.offset()


@pytest.mark.timeout(600)
def test_hostile_input_is_dead_lettered_and_valid_input_processed(broker, topic_prefix, tmp_path, checkpoint):
    spec = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state").create_topics()
    config = json.loads((versions.resolve(checkpoint) / "config.json").read_text())
    items, now, ids = config["item_ids"], time.time(), itertools.count()
    worker = WorkerProcess(spec, tmp_path / "worker.log")
    rig = Rig(broker.bootstrap, spec.settings(), worker)
    pid = worker.proc.pid
    wait_until(lambda: ("process_start_time_seconds", ()) in scrape(worker.metrics_port), 120,
               "the worker to serve its metrics", alive=[worker])
    starts = [started_at(worker.metrics_port)]
    pairs = st.tuples(valid_interactions(USERS, items, now, lambda: next(ids)), hostile_messages(USERS, now))
    chunks = st.lists(pairs, min_size=CHUNK // 2, max_size=CHUNK // 2).map(
        lambda ps: [m for pair in ps for m in pair])  # valid and hostile alternate, half and half
    rss: list[float] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(chunk=chunks)
    def one_chunk(chunk: list[Interaction | Hostile]) -> None:
        rig.check(chunk)
        rss.append(rss_mb(pid))
        starts.append(started_at(worker.metrics_port))

    try:
        one_chunk()
        assert worker.alive(), "the worker never exits"
        assert len(set(starts)) == 1, f"the worker restarted {len(set(starts)) - 1} times: started at {set(starts)}"
    finally:
        rig.close()
        assert worker.stop() == 0, worker.log_text()[-3000:]
    summary = {"sent": rig.sent, "valid": len(rig.valid), "rss_mb": rss, "reasons": sorted(set(rig.dead.values()))}
    (tmp_path / "fuzz-summary.json").write_text(json.dumps(summary))
    assert rig.sent >= MIN_MESSAGES, f"only {rig.sent} messages were generated"
    assert set(rig.dead.values()) == set(DECODE_REASONS), "the generator reaches every way of being refused"
    assert "Traceback" not in worker.log_text(), "no agent crashed and restarted inside the process either"
    assert max(rss) - rss[0] <= RSS_GROWTH_MAX_MB, f"RSS grew from {rss[0]:.0f} MB to {max(rss):.0f} MB"
    assert_states_equal(read_user_states(spec.data_dir), reference_states(rig.valid), "RocksDB")
