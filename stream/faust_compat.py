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

6. Throughput levers: Faust's per-event steps done per batch (:func:`use_batch_delivery`, :func:`take_batches`,
   :class:`RawSchema`) and sensors that only count per event (:func:`use_lean_sensors`); each measured by
   bench/faust_levers.py (bench/results/faust-ceiling.json), each Faust function it copies pinned by
   tests/unit/stream/test_faust_levers.py.

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
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP, EventT

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


# --- 6. throughput levers (issue 15): Faust's per-event steps done per batch, its bookkeeping kept -----------
_YIELD_EVERY = 100  # messages delivered between two turns of the event loop, as Faust's own drain does


def use_batch_delivery(app: faust.App) -> None:
    """Hand each fetched batch to the conductor under one ``wait_first``, not one per message.

    Faust's ``Consumer._drain_messages`` awaits ``wait_first(callback(message), suspend_flow.wait())`` per message:
    four tasks and an ``asyncio.wait`` per event. The callback only blocks while flow is suspended (a rebalance), so
    one guard per batch keeps what the guard is for: a rebalance cancels the delivery where it is, and the rest,
    never tracked, is fetched again from the committed offset. Gaps, read offsets and ``broker_commit_every`` are
    kept as Faust keeps them (the commit check once per batch, outside the guard, as in Faust).
    """
    base: type = app.transport.Consumer

    class BatchDeliveryConsumer(base):  # type: ignore[misc, valid-type]
        async def _drain_messages(self, fetcher: Any) -> None:
            await _drain_batches(self, fetcher)

    app.transport.Consumer = BatchDeliveryConsumer


async def _drain_batches(consumer: Any, fetcher: Any) -> None:
    """``Consumer._drain_messages`` of faust-streaming 0.15, with one guard per fetched batch."""
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            consumer.diag.set_flag(CONSUMER_FETCHING)
            records = consumer.getmany(timeout=1.0)
            await consumer.sleep(0)
            first = None if consumer.should_stop else await anext(records, None)  # the fetch, unguarded
            if first is not None:
                if consumer._commit_every is not None and consumer._n_acked >= consumer._commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                await consumer.wait_first(_deliver(consumer, first, records), consumer.suspend_flow.wait())
            consumer.diag.unset_flag(CONSUMER_FETCHING)
    except (*consumer.consumer_stopped_errors, asyncio.CancelledError):
        if consumer.transport.app.should_stop:
            consumer.log.info("Consumer shutting down.")
            return
        raise
    except Exception:
        consumer.log.exception("Drain messages raised")
        raise
    finally:
        consumer.diag.unset_flag(CONSUMER_FETCHING)


async def _deliver(consumer: Any, first: tuple[TP, Any], records: Any) -> None:
    """Deliver one ``getmany`` batch (``first``, then the rest of ``records``) as Faust's drain loop body does."""
    callback = consumer.callback
    read_offset = consumer._read_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    since_yield = 0
    try:
        async for tp, message in _chain(first, records):
            since_yield += 1
            if since_yield > _YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is None or offset >= r_offset:
                if offset - (r_offset or 0) > 1 and r_offset and acks_enabled_for(message.topic):
                    await consumer._add_gap(tp, r_offset + 1, offset)
                await callback(message)
                read_offset[tp] = offset
    finally:
        await records.aclose()


async def _chain(first: Any, rest: Any) -> Any:
    yield first
    async for item in rest:
        yield item


async def take_batches(stream: Any, max_: int, within: float) -> Any:
    """``stream.take_events(max_, within)`` without iterating the stream event by event.

    ``take_events`` moves each event into its buffer through the stream's iterator: an event-loop turn, a queue
    get, a processor and two sensor calls per event. Here the agent's channel queue is drained in bulk, and each
    event gets what that iterator gives it: one of an older consumer generation, or taken while flow is suspended
    (a rebalance), is skipped as Faust skips it; the others are tracked (``Consumer.track_message``: commits and
    rebalances wait for them) and reported to the stream sensor. A batch is yielded when full or ``within`` s after
    its first event, and acked after the agent's body returns, as ``take_events`` does; events taken but not yet
    yielded when the agent stops are not acked, so they are read again.
    """
    channel = aiter(stream.channel)  # registers the topic with the conductor, as take_events does
    queue = channel.queue
    app = stream.app
    # Faust empties every channel queue whenever flow resumes, also at the resume that follows the seek to the
    # committed offsets after a (re)assignment: events delivered in between, already marked read, would be dropped
    # and never fetched again (a commit stall; seen in tests/integration/test_guarantees_crash.py). The stream's own
    # iterator takes events one loop turn after they arrive, which keeps that window small; a bulk taker leaves them
    # queued longer. So this queue is not emptied on resume: stale events are skipped when taken (see _accept).
    app.flow_control._queues.discard(queue)
    loop = asyncio.get_running_loop()
    started = await stream.maybe_start()
    getter: asyncio.Future | None = None
    events: list[Any] = []
    try:
        while not stream.should_stop:
            deadline: float | None = None
            while len(events) < max_:
                if not queue.empty():
                    _accept(stream, app, queue.get_nowait(), events)
                    continue
                if events:
                    deadline = deadline if deadline is not None else loop.time() + within
                    if deadline <= loop.time():
                        break
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                await asyncio.wait((getter,), timeout=None if deadline is None else deadline - loop.time())
                if not getter.done():
                    break
                done, getter = getter, None
                _accept(stream, app, done.result(), events)
            if not events:
                continue
            batch, events = events, []
            stream.events_total += len(batch)
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
    except StopAsyncIteration:  # thrown into the channel when the worker stops: the end, as for Faust's iterator
        return
    finally:  # events taken but never yielded stay unacked, as take_events leaves its buffer: never committed
        if getter is not None:
            getter.cancel()
        if started:  # as the stream's own iterator ends: an agent restarted on a rebalance starts it again
            await stream.stop()
            stream.service_reset()


def _accept(stream: Any, app: Any, value: Any, events: list[Any]) -> None:
    """What the stream's iterator does with one channel value before the agent sees it (streams.py)."""
    if not isinstance(value, EventT):
        raise TypeError(f"take_batches reads topic channels only, got {type(value).__name__}")
    message = value.message
    if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
        return  # neither tracked nor acked (as faust's compiled iterator leaves it): fetched again after the rebalance
    if message.topic in app.topics.acking_topics and not message.tracked:
        message.tracked = True
        app.consumer.track_message(message)
    stream._on_stream_event_in(message.tp, message.offset, stream, value)
    events.append(value)


class RawSchema(faust.Schema):
    """Keys and values as the raw bytes they arrived as, each message made an event without Faust's codecs.

    A raw topic's own schema decodes each key and value through the serializer registry (codec look-up,
    ``want_bytes``, a model "reconstruct" check) and reads ``app.conf.Event`` per message. Same bytes, same events.
    """

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, *, on_key_decode_error: Any = None, on_value_decode_error: Any = None,
                default_propagate: bool = False) -> Any:
        event = app.conf.Event

        async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
            return event(app, message.key, message.value, message.headers, message)

        return decode


def use_lean_sensors(app: faust.App, sync_interval_s: float = 1.0) -> None:
    """Make the app's monitor (Faust's, or the Prometheus one of stream/metrics.py) cheap per event.

    Faust's monitor keeps per-event timings, and its Prometheus monitor updates six labelled metrics per event
    (each ``labels()`` a lock and a tuple of strings). The lean one only counts, in the attributes Faust's monitor
    has (messages in, per topic, read and end offsets for the consumer lag, active messages, table operations),
    and a timer copies those into the Prometheus metrics every ``sync_interval_s``; commits, rebalances and the
    producer are reported as before. ``faust_events_runtime_ms``, ``faust_total_active_events`` and
    ``faust_total_events_per_stream`` stay at zero. Call after ``stream.metrics.install_app_metrics``, before the
    app starts: the monitor keeps its state and changes class.
    """
    from faust.sensors.prometheus import PrometheusMonitor

    monitor = app.monitor
    monitor.__class__ = _lean_class(type(monitor))
    if isinstance(monitor, PrometheusMonitor):
        @app.timer(sync_interval_s)
        async def metarec_sync_faust_metrics() -> None:
            sync_prometheus(app.monitor)


_LEAN_CLASSES: dict[type, type] = {}


def _lean_class(cls: type) -> type:
    """``cls`` with the lean per-event hooks: a direct subclass, so an instance of ``cls`` can change class."""
    if getattr(cls, "_metarec_lean", False):
        return cls
    if cls not in _LEAN_CLASSES:
        from faust.sensors import Monitor

        hooks = {name: getattr(Monitor, name) for name in _MONITOR_HOOKS}  # the cheap ones, Prometheus' bypassed
        hooks.update(on_message_in=_message_in, on_stream_event_in=_stream_event_in,
                     on_stream_event_out=_stream_event_out, on_message_out=_message_out)
        _LEAN_CLASSES[cls] = type(f"Lean{cls.__name__}", (cls,), {"_metarec_lean": True, "__module__": __name__,
                                                                  **hooks})
    return _LEAN_CLASSES[cls]


_MONITOR_HOOKS = ("track_tp_end_offset", "on_table_get", "on_table_set", "on_table_del")


def _message_in(self: Any, tp: TP, offset: int, message: Any) -> None:
    self.messages_received_total += 1
    self.messages_active += 1
    self.messages_received_by_topic[tp.topic] += 1
    self.tp_read_offsets[tp] = offset


def _stream_event_in(self: Any, tp: TP, offset: int, stream: Any, event: Any) -> None:
    self.events_total += 1  # and no per-event state: on_stream_event_out has nothing to time


def _stream_event_out(self: Any, tp: TP, offset: int, stream: Any, event: Any, state: Any = None) -> None:
    pass


def _message_out(self: Any, tp: TP, offset: int, message: Any) -> None:
    self.messages_active -= 1


def sync_prometheus(monitor: Any) -> None:
    """Copy a lean Prometheus monitor's counts into its metrics (counters by their growth since the last copy)."""
    m = monitor._metrics
    synced: dict[Any, int] = monitor.__dict__.setdefault("_lean_synced", {})

    def grow(key: Any, counter: Any, total: int) -> None:
        delta = total - synced.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        synced[key] = total

    grow("received", m.messages_received, monitor.messages_received_total)
    grow("events", m.total_events, monitor.events_total)
    for topic, total in list(monitor.messages_received_by_topic.items()):
        grow(("topic", topic), m.messages_received_per_topics.labels(topic=topic), total)
    m.active_messages.set(monitor.messages_active)
    for tp, offset in list(monitor.tp_read_offsets.items()):
        m.messages_received_per_topics_partition.labels(topic=tp.topic, partition=tp.partition).set(offset)
    for tp, offset in list(monitor.tp_end_offsets.items()):
        m.topic_partition_end_offset.labels(topic=tp.topic, partition=tp.partition).set(offset)
    for name, state in list(monitor.tables.items()):
        for operation in (monitor.KEYS_RETRIEVED, monitor.KEYS_UPDATED, monitor.KEYS_DELETED):
            grow(("table", name, operation), m.table_operations.labels(table=f"table.{name}", operation=operation),
                 getattr(state, operation))
