"""The worker's own output producer: lists, dead letters and the users changelog through librdkafka.

Why not Faust's ``topic.send``: each send there is a handful of Python objects, futures and callbacks on the
event loop (with its table write, ~0.4 ms of CPU per key: bench/faust_ceiling.py, ``take`` vs ``table``), and
the worker sends one message per user per batch. librdkafka queues a message in microseconds and batches on its
own thread.

What keeps at-least-once: the finisher (stream/handler.py) acks a batch's events only after
:meth:`OutputProducer.flush`, which waits (off the event loop) until the broker acknowledged every message of the
batch and raises if any was refused or timed out. The batch then fail-stops (stream.app.fail_stop) and is read
again after the restart, exactly as when the worker is killed. Nothing is pending at shutdown for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping, Sequence

from confluent_kafka import KafkaError, Message, Producer

_LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.librdkafka")

Headers = Sequence[tuple[str, bytes]]


class DeliveryError(RuntimeError):
    """The broker refused, or never acknowledged, messages of a batch: the batch must not be committed."""


class OutputProducer:
    """Produce now, confirm per batch: ``produce`` queues, ``flush`` waits for every delivery report."""

    def __init__(self, kafka_config: Mapping[str, Any], flush_timeout_s: float = 30.0,
                 linger_ms: float = 1.0) -> None:
        self._producer = Producer({
            **kafka_config,
            "linger.ms": linger_ms,
            "acks": "all",
            "partitioner": "murmur2_random",  # the Java client's partitioner: keys land where Kafka tools expect
            "queue.buffering.max.messages": 1_000_000,
            "logger": _LIBRDKAFKA_LOG,
        })
        self._timeout_s = flush_timeout_s
        self._failed: list[str] = []
        self._acked: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset of tracked messages

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None = None,
                partition: int | None = None, track: bool = False) -> None:
        """Queue one message; a full local queue is drained (delivery reports served) and the call retried.

        ``track``: remember its offset once acknowledged (:meth:`take_acked`), e.g. for a changelog.
        """
        callback = self._delivered_tracked if track else self._delivered
        part = -1 if partition is None else partition  # -1: librdkafka's partitioner picks
        while True:
            try:
                self._producer.produce(topic, value, key, part, callback, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.1)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}: {err}")

    def _delivered_tracked(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivered(err, msg)
            return
        tp = (msg.topic(), msg.partition())
        self._acked[tp] = max(self._acked.get(tp, -1), msg.offset())

    def take_acked(self) -> dict[tuple[str, int], int]:
        """The last acknowledged offset per partition of tracked messages since the previous call."""
        acked, self._acked = self._acked, {}
        return acked

    async def flush(self) -> None:
        """Wait until every queued message is acknowledged; :class:`DeliveryError` if one was not."""
        if len(self._producer):  # messages queued or in flight
            left = await asyncio.to_thread(self._producer.flush, self._timeout_s)
            if left:
                raise DeliveryError(f"{left} messages not acknowledged within {self._timeout_s:.0f}s")
        if self._failed:
            failed, self._failed = self._failed, []
            raise DeliveryError(f"{len(failed)} messages refused, first: {failed[0]}")
