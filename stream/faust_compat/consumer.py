"""The app's consumer: true high watermarks, the fetch wait, changelog records never dropped (points 2 and 3).

Why each reach into Faust is needed: the package docstring (stream/faust_compat/__init__.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

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
