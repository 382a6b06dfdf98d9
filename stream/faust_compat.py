"""The one place metarec reaches into Faust's internals, and why.

1. Faust tables pick the RocksDB partition and the changelog partition of a write from the *current event*, a
   context variable that the stream sets while an agent iterates event by event. ``Stream.take_events`` fills
   its buffer from a background task, so inside a batching agent that variable is unset (or stale). Batching is
   what makes the worker fast, so each table read and write runs inside the context of the event it belongs to
   (:func:`event_context`).

2. Faust's table recovery reads a changelog partition up to the high watermark that a ListOffsets request
   reports, then stops. The embedded broker (Tansu) reports the base offset of the partition's last record
   batch plus one there, not the end: when that batch held several records, recovery would stop early and the
   newest states in the tail would be lost on a restart or a takeover. A Fetch response carries the true high
   watermark on every broker, so :func:`use_real_highwaters` gives the app a consumer whose ``highwaters``
   reads the last batch of each partition to the end of the partition (a few records; one on Apache Kafka,
   where the two agree) and reports where that is.

3. Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``, fixed. Apache Kafka answers a waiting
   Fetch as soon as data arrives, so the value is harmless there; the embedded broker holds an empty Fetch for
   the whole wait even when records arrive meanwhile, so an event waited ~0.4 s on average (up to 1.5 s) before
   the worker even saw it (bench/fetch_wait.py: p50 360 ms at 1500, 3.5 ms at 10). The same consumer class sets the
   wait from Settings (``fetch_max_wait_ms``).

4. :class:`UserTable` reads and writes the users table's RocksDB partitions directly and sends its changelog
   through the worker's librdkafka producer (stream/output.py), one persisted-offset write per partition and
   batch. Faust's own ``table[key] = value`` costs ~0.4 ms of event-loop CPU per write with its send (an aiokafka send with
   its futures, and a RocksDB write of the persisted offset per message: bench/faust_ceiling.py ``table``).
   The bytes are the ones Faust would write (the table's keys and values are raw bytes), so Faust's recovery,
   standbys and rebalancing work on them unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import faust
from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.streams import _current_event
from faust.types import TP

from stream.output import OutputProducer

log = logging.getLogger(__name__)

END_PROBE_TIMEOUT_S = 30.0
_LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.librdkafka")


@contextmanager
def event_context(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event for the duration of the block."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def use_real_highwaters(app: faust.App, kafka_config: Mapping[str, Any],
                        timeout_s: float = END_PROBE_TIMEOUT_S, fetch_max_wait_ms: int | None = None) -> None:
    """Make ``app``'s consumer report each partition's true end, so table recovery reads every record.

    With ``fetch_max_wait_ms``, its aiokafka consumer also waits at most that long on an empty Fetch (point 3).
    """
    base: type = app.transport.Consumer

    class RealEndConsumer(base):  # type: ignore[misc, valid-type]
        async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
            reported = await super().highwaters(*partitions)
            return await asyncio.to_thread(real_end_offsets, kafka_config, reported, timeout_s)

        def _new_consumer_thread(self) -> Any:
            thread = super()._new_consumer_thread()
            if fetch_max_wait_ms is not None:
                _set_fetch_wait(thread, fetch_max_wait_ms)
            return thread

    app.transport.Consumer = RealEndConsumer


def _set_fetch_wait(thread: Any, fetch_max_wait_ms: int) -> None:
    """Wrap the consumer thread's factory: the aiokafka consumer it builds waits ``fetch_max_wait_ms``."""
    create = thread._create_worker_consumer

    def create_worker_consumer(transport: Any) -> Any:
        consumer = create(transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by AIOKafkaConsumer.start() to build its Fetcher
        return consumer

    thread._create_worker_consumer = create_worker_consumer


def real_end_offsets(
    kafka_config: Mapping[str, Any], reported: Mapping[TP, int | None], timeout_s: float = END_PROBE_TIMEOUT_S
) -> dict[TP, int | None]:
    """The offset after each partition's last record, found by fetching from the last batch reported on.

    ``reported`` is what ListOffsets(latest) said; the true end is at or after it. A partition is read from one
    before the reported end until the consumer reports partition EOF, whose offset comes from the Fetch
    response's high watermark. If the broker does not answer in ``timeout_s`` the reported ends are kept (and a
    warning logged): recovery is then exactly as good as Faust's own.
    """
    probe = {tp: end for tp, end in reported.items() if end is not None and end > 0}
    result: dict[TP, int | None] = dict(reported)
    if not probe:
        return result
    consumer = Consumer({
        **kafka_config,
        "group.id": f"metarec-end-probe-{uuid.uuid4().hex}",  # never joined: partitions are assigned by hand
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "logger": _LIBRDKAFKA_LOG,
    })
    try:
        consumer.assign([TopicPartition(tp.topic, tp.partition, end - 1) for tp, end in probe.items()])
        ends = _read_to_eof(consumer, set(probe), time.monotonic() + timeout_s)
    finally:
        consumer.close()
    missing = set(probe) - set(ends)
    if missing:
        log.warning("could not find the end of %d changelog partitions in %.0fs; using the reported ends",
                    len(missing), timeout_s)
    moved = {tp: (probe[tp], end) for tp, end in ends.items() if end != probe[tp]}
    if moved:
        log.info("changelog ends beyond the reported high watermark: %s",
                 ", ".join(f"{tp.topic}[{tp.partition}] {a}->{b}" for tp, (a, b) in sorted(moved.items())))
    result.update(ends)
    return result


def _read_to_eof(consumer: Consumer, pending: set[TP], deadline: float) -> dict[TP, int]:
    """Poll until every partition in ``pending`` reported EOF (or the deadline); the EOF offsets by partition."""
    ends: dict[TP, int] = {}
    while pending and (left := deadline - time.monotonic()) > 0:
        msg = consumer.poll(min(left, 1.0))
        if msg is None:
            continue
        err = msg.error()
        if err is not None and err.code() == KafkaError._PARTITION_EOF:
            tp = TP(msg.topic(), msg.partition())
            if tp in pending:
                pending.discard(tp)
                ends[tp] = msg.offset()
        elif err is not None:
            log.debug("end probe: %s", err)
    return ends


class UserTable:
    """A Faust table of raw bytes, read and written partition by partition, its changelog sent by ``output``.

    Writes are durable once :meth:`OutputProducer.flush` returned; :meth:`persist_offsets` then records, per
    changelog partition, the offset the local RocksDB is up to, which is what Faust's recovery starts from.
    """

    def __init__(self, table: Any, output: OutputProducer) -> None:
        self._table = table
        self._output = output
        self.changelog_topic: str = table.changelog_topic.get_topic_name()
        self._sensors = table.app.sensors

    def get(self, partition: int, key: bytes) -> bytes | None:
        self._sensors.on_table_get(self._table, key)  # what Faust's own table reports (the dashboard's panel)
        return self._table.data._db_for_partition(partition).get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write (``None``: delete) the key in the partition's RocksDB and queue its changelog record.

        The database is looked up on every call: Faust closes and reopens partitions' databases on rebalances.
        """
        db = self._table.data._db_for_partition(partition)
        if value is None:
            db.delete(key)
            self._sensors.on_table_del(self._table, key)
        else:
            db.put(key, value)
            self._sensors.on_table_set(self._table, key, value)
        self._output.produce(self.changelog_topic, key, value, partition=partition, track=True)

    def persist_offsets(self) -> None:
        """After a flush: remember the last acknowledged changelog offset of each partition written."""
        store = self._table.data
        for (topic, partition), offset in self._output.take_acked().items():
            store.set_persisted_offset(TP(topic, partition), offset)
