"""The one place metarec reaches into Faust's internals, and why.

1. Faust tables pick the RocksDB partition and the changelog partition of a write from the *current event*, a
   context variable that the stream sets while an agent iterates event by event; inside a batching agent
   (``Stream.take_events``) it is unset or stale. So the worker does not write through ``table[key]``: the
   users table is read and written partition by partition (point 4), through :func:`partition_db`.

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

4. The users store (stream/user_store.py) reads and writes the users table's RocksDB partitions directly
   (:func:`partition_db`), reports to Faust's table sensors (:func:`table_sensors`) and sends its changelog
   through the worker's librdkafka producer (stream/output.py), one persisted-offset write per partition and
   batch (:func:`persist_offset`). Faust's own ``table[key] = value`` costs ~0.4 ms of event-loop CPU per
   write with its send (an aiokafka send with its futures, and a RocksDB write of the persisted offset per
   message: bench/faust_ceiling.py ``table``). The bytes are the ones Faust would write (the table's keys and
   values are raw bytes), so Faust's recovery, standbys and rebalancing work on them unchanged.

5. The commit watch (stream/commit_watch.py) reads the consumer's offset bookkeeping
   (:func:`commit_bookkeeping`, :func:`unacked_offsets`) to tell a stalled commit from an idle partition.

Each use is pinned by tests/unit/stream/test_faust_pins.py, which fails when a faust-streaming upgrade changes
what it relies on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Mapping

import faust
from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.types import TP

log = logging.getLogger(__name__)

END_PROBE_TIMEOUT_S = 30.0
_LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.librdkafka")


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


# --- 4. the users table, partition by partition ------------------------------------------------------------
def partition_db(table: Any, partition: int) -> Any:
    """The RocksDB database (a ``rocksdict.Rdict``) of ``table``'s ``partition``.

    Looked up on every call: Faust closes and reopens partitions' databases on rebalances.
    """
    return table.data._db_for_partition(partition)


def table_sensors(table: Any) -> Any:
    """Faust's sensors, which report table reads and writes (``on_table_get/set/del(table, key, ...)``)."""
    return table.app.sensors


def changelog_topic_name(table: Any) -> str:
    return table.changelog_topic.get_topic_name()


def persist_offset(table: Any, topic: str, partition: int, offset: int) -> None:
    """Record that the local RocksDB holds the changelog up to ``offset``: where Faust's recovery starts."""
    table.data.set_persisted_offset(TP(topic, partition), offset)


# --- 5. the consumer's commit bookkeeping ------------------------------------------------------------------
def commit_bookkeeping(consumer: Any,
                       tp: Any) -> tuple[int | None, int | None, list[int], list[tuple[int, int]]]:
    """(committed offset, highest offset read, acked offsets waiting, offset gaps [begin, end)) of ``tp``.

    Faust commits a partition up to the first offset it has not seen acked (``Consumer._new_offset``). Its
    fields are defaultdicts: read with ``get`` so that looking does not create entries.
    """
    acked = consumer._acked.get(tp) or ()
    gap_tree = consumer._gap.get(tp)
    gaps = [(iv.begin, iv.end) for iv in gap_tree] if gap_tree else []
    return consumer._committed_offset.get(tp), consumer._read_offset.get(tp), list(acked), gaps


def unacked_offsets(consumer: Any, tp: Any) -> list[int]:
    """Offsets of ``tp`` handed to the streams and not acked yet (walks every message in flight)."""
    return [m.offset for m in list(consumer._unacked_messages) if m.tp == tp]
