"""Kafka-side instruments for the throughput bench: a producer, a downstream clock, the passthrough.

The worker itself is started by :mod:`bench.worker_process` (shared with the integration tests). The
passthrough and the worker run as processes of their own, so each has its own interpreter lock, as in
production; the producer and the downstream consumer are threads of the bench (mostly inside librdkafka).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import resource
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

log = logging.getLogger(__name__)

PRODUCER_CONF = {
    "linger.ms": 1,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 2_000_000,
    "enable.idempotence": False,
}


def consumer_conf(bootstrap: str, group: str | None = None) -> dict:
    """A fresh group from the start. ``read_uncommitted``: nothing here is transactional, and librdkafka's
    default (``read_committed``) trusts the last stable offset, which the embedded broker reports poorly."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group or f"bench-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "fetch.wait.max.ms": 5,
        "isolation.level": "read_uncommitted",
    }


# --- producing ----------------------------------------------------------------------------------------------
def produce_all(
    bootstrap: str,
    topic: str,
    keys: Sequence[bytes],
    values: Sequence[bytes],
    rate: float | None = None,
    on_sent=None,
    on_delivery=None,
) -> float:
    """Produce every (key, value), paced to ``rate``/s if given; ``on_sent(i, t)`` gets each produce time,
    ``on_delivery(err, msg)`` each acknowledgement (where it landed: ``msg.partition(), msg.offset()``).

    Returns the seconds from the first produce to the last acknowledgement.
    """
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONF})
    started = time.perf_counter()
    for i, (key, value) in enumerate(zip(keys, values)):
        if rate:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing an offered load, not synchronisation
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)  # local queue full: wait for deliveries
        if on_sent is not None:
            on_sent(i, time.time())
        if i % 256 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} events not acknowledged by the broker")
    return time.perf_counter() - started


# --- the downstream clock -----------------------------------------------------------------------------------
class _RecHead(msgspec.Struct):
    """The two fields of a Recommendation the bench needs (msgspec skips the rest without building it)."""

    user_id: str
    event_id: str


_rec_decoder = msgspec.json.Decoder(_RecHead)


@dataclass
class Arrivals:
    """Recommendations as they arrive downstream: (arrival time, user id, trigger event id)."""

    times: list[float] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


class RecCollector(threading.Thread):
    """Consumes the recommendations topic from the start and timestamps every list on arrival.

    Partitions are assigned, not subscribed (no group join to wait for), and each partition's offsets are
    checked to be contiguous: a jump means records were skipped, and the collector seeks back to read them
    (in a long run a tail consumer on the embedded broker lost 37k of 180k lists, which a fresh consumer
    read later). ``gaps`` counts records read again; :meth:`rescue` re-issues the fetch positions when
    nothing arrived for a while although lists are still missing.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="rec-collector", daemon=True)
        self.arrivals = Arrivals()
        self.topic = topic
        self._consumer = Consumer(consumer_conf(bootstrap))
        partitions = self._consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self._next = {p: 0 for p in partitions}
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._halt = threading.Event()
        self._rescue = threading.Event()
        self._changed = threading.Condition()
        self.tombstones = self.gaps = self.rescues = 0

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                if self._rescue.is_set():
                    self._rescue.clear()
                    self._seek_back(set(self._next))
                batch = self._consumer.consume(1000, 0.05)
                now = time.time()
                if self._take(batch, now):
                    with self._changed:
                        self._changed.notify_all()
        finally:
            self._consumer.close()

    def _take(self, batch: list, now: float) -> bool:
        got, rewind = False, set()
        for msg in batch:
            if msg.error() is not None or msg.partition() in rewind:
                continue
            part, offset = msg.partition(), msg.offset()
            if offset < self._next[part]:
                continue  # read again after a seek back
            if offset > self._next[part]:
                self.gaps += offset - self._next[part]
                rewind.add(part)
                continue
            self._next[part] = offset + 1
            value = msg.value()
            if value is None:
                self.tombstones += 1
                continue
            head = _rec_decoder.decode(value)
            self.arrivals.times.append(now)
            self.arrivals.users.append(head.user_id)
            self.arrivals.events.append(head.event_id)
            got = True
        if rewind:
            self._seek_back(rewind)
        return got

    def _seek_back(self, partitions: set[int]) -> None:
        for part in partitions:
            self._consumer.seek(TopicPartition(self.topic, part, self._next[part]))
        log.warning(
            "collector: re-reading partitions %s from %s",
            sorted(partitions),
            {p: self._next[p] for p in sorted(partitions)},
        )

    def rescue(self) -> None:
        self.rescues += 1
        self._rescue.set()

    def wait_for(self, event_ids: set[str], timeout_s: float) -> tuple[float | None, int]:
        """Block until a recommendation triggered by each of ``event_ids`` arrived (or ``timeout_s`` passed).

        Returns the last such arrival time and how many never arrived.
        """
        pending = set(event_ids)
        seen = 0
        last = None
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        with self._changed:
            while True:
                events, times = self.arrivals.events, self.arrivals.times
                n = len(events)
                for i in range(seen, n):
                    if events[i] in pending:
                        pending.discard(events[i])
                        last = times[i]
                if n > seen:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > 30.0:
                    self.rescue()  # lists are missing and nothing came for 30 s: fetch again
                    quiet_since = time.monotonic()
                seen = n
                left = deadline - time.monotonic()
                if not pending or left <= 0:
                    break
                self._changed.wait(min(left, 0.5))
        if pending:
            log.warning("%d recommendations never arrived within %gs", len(pending), timeout_s)
        return last, len(pending)

    def wait_any(self, timeout_s: float) -> bool:
        """Block until at least one recommendation has arrived (or ``timeout_s`` passed)."""
        with self._changed:
            if not self.arrivals.times:
                self._changed.wait(timeout_s)
        return bool(self.arrivals.times)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


# --- the passthrough ceiling --------------------------------------------------------------------------------
def _passthrough_main(bootstrap: str, source: str, sink: str, expected: int, out: mp.Queue) -> None:
    consumer = Consumer(consumer_conf(bootstrap))
    consumer.subscribe([source])
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONF})
    count, first = 0, None
    deadline = time.monotonic() + 600
    while count < expected and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.2):
            if msg.error() is not None:
                continue
            if first is None:
                first = time.perf_counter()
            producer.produce(sink, key=msg.key(), value=msg.value())
            count += 1
        producer.poll(0)
    producer.flush(60)
    done = time.perf_counter()
    consumer.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"events": count, "seconds": done - (first or done), "cpu_s": usage.ru_utime + usage.ru_stime})


def passthrough(bootstrap: str, source: str, sink: str, expected: int) -> dict:
    """A raw confluent-kafka consume -> produce copy of ``source`` to ``sink`` in a fresh process."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_passthrough_main, args=(bootstrap, source, sink, expected, out), daemon=True)
    proc.start()
    result = out.get(timeout=660)
    proc.join(30)
    result["events_per_s"] = round(result["events"] / result["seconds"], 1) if result["seconds"] else None
    result["events_per_cpu_s"] = round(result["events"] / result["cpu_s"], 1) if result["cpu_s"] else None
    return result


# --- a worker's figures ------------------------------------------------------------------------------------
def batch_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Mean micro-batch size and adaptation time between two scrapes."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("metarec_adaptation_batch_size_count")
    return {
        "model_batches": batches,
        "mean_users_per_model_batch": round(delta("metarec_adaptation_batch_size_sum") / batches, 1)
        if batches
        else None,
        "mean_model_batch_ms": round(1e3 * delta("metarec_adaptation_seconds_sum") / batches, 2)
        if batches
        else None,
        "model_seconds": round(delta("metarec_adaptation_seconds_sum"), 2),
    }


def faust_ceiling(
    bootstrap: str, topic: str, sink: str, expected: int, mode: str, partitions: int, workdir: Path
) -> dict:
    """Run :mod:`bench.faust_ceiling` on ``topic`` in a fresh process; its figures, or why it failed."""
    out = workdir / f"ceiling-{mode}.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.faust_ceiling",
        "--brokers",
        bootstrap,
        "--topic",
        topic,
        "--sink",
        sink,
        "--expected",
        str(expected),
        "--mode",
        mode,
        "--partitions",
        str(partitions),
        "--out",
        str(out),
    ]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=900, cwd=Path(__file__).resolve().parent.parent
        )
    except subprocess.TimeoutExpired:
        return {"mode": mode, "error": "timed out"}
    if not out.exists():
        return {"mode": mode, "error": (done.stderr or done.stdout)[-500:]}
    return json.loads(out.read_text())


def topic_end(bootstrap: str, topic: str) -> int:
    """Sum of the topic's partitions' high watermarks (the embedded broker may under-report a last batch)."""
    consumer = Consumer(consumer_conf(bootstrap))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions
        )
    finally:
        consumer.close()
