"""Replaying an event log onto the ``interactions`` topic, as a real producer would.

Events are keyed by user id (the worker's state is partitioned by it) and sent in timestamp order, optionally
paced to an offered rate. The producer is confluent-kafka: the same client producers in production use.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Iterator

import numpy as np
from confluent_kafka import Producer

from models.data.events import EVENT_TYPES, EventLog
from schemas.decode import encode
from schemas.records import Interaction

log = logging.getLogger(__name__)


def interactions(log_: EventLog, id_prefix: str = "e", ts_offset: float = 0.0) -> Iterator[Interaction]:
    """The log's events as records; event ids are ``<prefix>-<position>``, so a replay is idempotent."""
    users, items, ts, values, types = log_.users, log_.items, log_.ts, log_.values, log_.types
    for i in range(len(log_)):
        value = float(values[i])
        yield Interaction(
            event_id=f"{id_prefix}-{i}",
            user_id=log_.user_ids[users[i]],
            item_id=log_.item_ids[items[i]],
            type=EVENT_TYPES[types[i]],  # type: ignore[arg-type]
            ts=float(ts[i]) + ts_offset,
            value=None if np.isnan(value) else value,
        )


def producer_config(kafka_config: dict) -> dict:
    return {**kafka_config, "linger.ms": 5, "batch.num.messages": 10000, "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": False}


def replay(
    kafka_config: dict,
    topic: str,
    records: Iterable[Interaction],
    *,
    rate: float | None = None,
    limit: int | None = None,
    on_sent: Callable[[Interaction, float], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Produce ``records`` keyed by user; pace to ``rate`` events/s when given. Returns how many were sent."""
    producer = Producer(producer_config(kafka_config))
    started = time.perf_counter()
    sent = 0
    for record in records:
        if (limit is not None and sent >= limit) or should_stop():
            break
        if rate:
            _pace(started, sent, rate)
        producer.produce(topic, key=record.user_id.encode(), value=encode(record))
        if on_sent is not None:
            on_sent(record, time.time())
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} events were not delivered to {topic}")
    log.info("replayed %d events to %s", sent, topic)
    return sent


def _pace(started: float, sent: int, rate: float) -> None:
    """Hold the offered load at ``rate``: wait until event number ``sent`` is due."""
    due = started + sent / rate
    delay = due - time.perf_counter()
    if delay > 0:
        time.sleep(delay)  # pacing an offered load, not synchronisation
