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

   Recovery also lost changelog records the consumer had fetched, on any broker (bench/soak.py lost events this
   way, issue 17). Faust "pauses" a partition by leaving it out of the set of active partitions it hands to
   aiokafka's ``Fetcher.fetched_records``; aiokafka goes on fetching it in the background. That set is Faust's
   live ``_active_partitions``, read on the consumer thread while the main loop changes it, and aiokafka takes
   an empty set for "every partition". When the active partitions' recovery ends (Faust pauses them: the set is
   empty) while a fetch is waiting for records, and the standby partitions were just sought but not resumed
   yet, aiokafka hands over the standby records it prefetched, moving their positions, and Faust drops them as
   not active. Nothing fetches them again: the standby's first records are missing (a hole of one fetch, up to
   1 MB per partition), the standby persists offsets past them as it applies the next ones, and a worker that
   later takes the partition over restores only from there and serves its users from states without those
   writes, overwriting newer states with older ones. :func:`fetch_only_active_partitions` hands aiokafka a copy
   of the active set taken when the fetch is asked for, and asks nothing when it is empty.

   A smaller window of the same kind: each resume of the app's flow control
   clears every queue made with ``clear_on_resume``, the tables' changelog queue among them, and Faust's
   recovery resumes the flow again after a standby partition started fetching (``Recovery._restart_recovery``
   resumes the standbys, then ``on_recovery_completed`` resumes the flow once more). The clear drops the standby
   records waiting in the queue; the consumer has moved past them and never fetches them again, and the standby
   takes the next record it sees as progress and persists its offset: the same hole. (Found by reading the code,
   shown by tests/unit/stream/test_faust_pins.py; the soak's traces did not catch it in the act.)
   :func:`keep_changelog_records` leaves the changelog queue alone on a resume of a flow that was not
   suspended; a revocation still clears it (it suspends the flow first, and the next assignment seeks every
   changelog partition back to what its store holds).

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
   (:func:`commit_bookkeeping`, :func:`unacked_offsets`) for its report of a stalled partition.

6. Faust commits a partition up to the first offset it has not seen acked (``Consumer._new_offset``), walking
   its acked offsets from the committed one. An offset the broker never had (the embedded broker leaves such
   gaps) is acked by nobody: without a gap record for it, a missing offset right after the committed one is
   stepped over silently and two or more stall the partition's commit until a restart. The worker knows better:
   it finishes batches in order, so it records per partition how far everything is done
   (stream/finished_offsets.py), and :func:`commit_finished_offsets` makes the consumer commit exactly that.

7. The read API (stream/read_api.py) routes a request to the worker that owns the user's partition, as
   Faust's ``@app.table_route`` does, but from the partition itself (:func:`owner_url`): ``table_route``
   finds it by hashing the key with Faust's own producer's partitioner (murmur2), while producers of
   ``interactions`` may use another (stream/partitioning.py), and it needs that producer's metadata of the
   changelog topic, which metarec's producer (stream/output.py) never asks Faust for. The owner comes from the
   same place Faust's router reads (the partition assignor's table metadata, ``app.router.table_metadata``),
   and the request is forwarded with Faust's HTTP client (:func:`forward`), as ``Router.route_req`` does (or
   with a session of the web thread's own loop, when the web server runs in a thread: ``web_in_thread``).

Each use is pinned by tests/unit/stream/test_faust_pins.py, which fails when a faust-streaming upgrade changes
what it relies on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, Iterator, Mapping

import faust
from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.types import TP
from yarl import URL

from stream.finished_offsets import FinishedOffsets

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


def fetch_only_active_partitions(app: faust.App) -> None:
    """Make ``app``'s consumer fetch records of the partitions active when it asks, and none when none are.

    Faust's ``Consumer._wait_next_records`` passes its live set of active partitions down to the consumer
    thread; a copy keeps records of partitions paused meanwhile, or never resumed, in aiokafka's buffer instead
    of handing them to Faust, which would drop them (point 2). A partition paused while its records are on the
    way is still dropped by Faust, but every such pause (a revocation, the end of a recovery) is followed by a
    seek before the partition is read again.
    """
    base: type = app.transport.Consumer

    class ActivePartitionsConsumer(base):  # type: ignore[misc, valid-type]
        async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
            if active_partitions is None:  # client-only apps read everything
                return await super()._getmany(None, timeout)
            active = frozenset(active_partitions)
            if not active:
                return {}
            return await super()._getmany(active, timeout)

    app.transport.Consumer = ActivePartitionsConsumer


def keep_changelog_records(app: faust.App) -> None:
    """Keep the tables' changelog queue when the app's flow is resumed while it is not suspended (point 2).

    Agents' queues are cleared on every resume as before: they can hold records fetched before the stream
    partitions were sought to their committed offsets, and Faust's ``on_recovery_completed`` relies on that.
    """
    flow = app.flow_control
    queue = app.tables.changelog_queue
    resume_flow, clear_queue = flow.resume, queue.clear
    flowing = False  # set while a resume of an unsuspended flow runs

    def resume() -> None:
        nonlocal flowing
        flowing = flow.is_active()
        try:
            resume_flow()
        finally:
            flowing = False

    def clear() -> None:
        if not flowing:
            clear_queue()

    flow.resume = resume  # instance attributes: only this app's flow control and queue change
    queue.clear = clear


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


# --- 6. commits from metarec's record of finished offsets --------------------------------------------------
def commit_finished_offsets(app: faust.App, finished: FinishedOffsets) -> None:
    """Make ``app``'s consumer commit each partition of ``finished.topics`` up to where the worker finished it.

    Faust's commit (``Consumer.force_commit``) asks ``_filter_tps_with_pending_acks`` which partitions to look
    at, ``_new_offset`` where each may be committed, keeps the offsets beyond the committed one
    (``_should_commit``) and sends those of assigned partitions. Here ``_new_offset`` answers from ``finished``
    for our topics (and trims Faust's acked list, which its own rule would have consumed), every partition in
    ``finished`` is looked at, and revoked partitions are forgotten once Faust has committed them on the way
    out. Other topics keep Faust's rule.
    """
    base: type = app.transport.Consumer

    class FinishedOffsetsConsumer(base):  # type: ignore[misc, valid-type]
        def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
            tps = set(super()._filter_tps_with_pending_acks(topics))
            for topic, partition in finished.partitions():
                tp = TP(topic, partition)
                if topics is None or tp in topics or topic in topics:
                    tps.add(tp)
            return iter(tps)

        def _new_offset(self, tp: TP) -> int | None:
            if tp.topic not in finished.topics:
                return super()._new_offset(tp)
            done = finished.next_offset(tp)
            if done is not None:
                _drop_acked_below(self, tp, done)
            return done

        async def on_partitions_revoked(self, revoked: set[TP]) -> None:
            await super().on_partitions_revoked(revoked)  # waits for the streams and commits, then lets go
            finished.forget(revoked)

    app.transport.Consumer = FinishedOffsetsConsumer


def _drop_acked_below(consumer: Any, tp: TP, offset: int) -> None:
    """Forget Faust's acked offsets and gap records of ``tp`` below ``offset`` (committed: nothing reads them)."""
    acked = consumer._acked.get(tp)
    if acked and min(acked) < offset:
        acked[:] = [o for o in acked if o >= offset]
        index = consumer._acked_index.get(tp)
        if index:
            index.intersection_update(acked)
    gaps = consumer._gap.get(tp)
    if gaps:
        gaps.chop(0, offset)


# --- 7. the read API: who owns a partition, and asking them ------------------------------------------------
def owner_url(app: Any, table: Any, partition: int) -> URL | None:
    """The canonical URL of the worker whose active partitions of ``table`` include ``partition`` (None while
    no assignment says: before the first rebalance completes)."""
    topic = changelog_topic_name(table)
    for url, topics in app.router.table_metadata(table.name).items():
        if partition in (topics.get(topic) or ()):
            return URL(url)
    return None


def is_this_worker(app: Any, url: URL) -> bool:
    """``url`` is this worker's canonical URL (compared as Faust's router compares: host and port)."""
    own = app.conf.canonical_url
    return (url.host, url.port) == (own.host, own.port)


def on_web_cleanup(app: Any, cleanup: Any) -> None:
    """Run ``cleanup`` (an ``async`` function of the aiohttp application) when the web server shuts down, in
    the web server's own loop (aiohttp's ``on_cleanup`` signal of Faust's aiohttp application)."""
    app.web.web_app.on_cleanup.append(cleanup)


async def forward(app: Any, url: URL, path_qs: str, headers: Mapping[str, str], timeout_s: float,
                  session: Any = None) -> tuple[int, bytes, str]:
    """GET ``path_qs`` from the worker at ``url``: (status, body, content type). With Faust's HTTP client,
    unless ``session`` is given (a web server on its own thread has its own event loop, and an aiohttp session
    serves only the loop it was made in)."""
    import aiohttp

    target = url.join(URL(path_qs, encoded=True))
    client = app.http_client if session is None else session
    async with client.get(target, headers=dict(headers),
                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
        return response.status, await response.read(), response.content_type
