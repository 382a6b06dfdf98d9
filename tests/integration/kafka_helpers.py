"""Small Kafka client helpers the integration tests share: produce and flush, consume until a condition holds.

Both are bounded: they return (or raise) when their timeout passes, and wait only on Kafka itself
(flush, poll), never on a sleep.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from confluent_kafka import Consumer, KafkaError, Message, Producer

Key = Union[bytes, str, None]
Headers = Sequence[tuple[str, bytes]]
#: (key, value) or (key, value, headers)
Record = Union[tuple[Key, Union[bytes, None]], tuple[Key, Union[bytes, None], Headers]]
Until = Union[int, Callable[[list[Message]], bool]]


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Record],
    *,
    partition: int | None = None,
    timeout_s: float = 15.0,
    config: Mapping[str, Any] | None = None,
) -> int:
    """Produce ``records`` to ``topic`` and flush; raise if any is not acknowledged. Returns the count."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **(config or {})})
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    count = 0
    for record in records:
        key, value, headers = (*record, None) if len(record) == 2 else record  # type: ignore[misc]
        kwargs: dict[str, Any] = {
            "key": key,
            "value": value,
            "headers": list(headers or []),
            "on_delivery": on_delivery,
        }
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
        count += 1
    left = producer.flush(timeout_s)
    if left or errors:
        raise AssertionError(
            f"produce to {topic}: {left} undelivered after {timeout_s}s, errors: {errors[:3]}"
        )
    return count


def consume_until(
    bootstrap: str,
    topics: str | Sequence[str],
    until: Until,
    timeout_s: float = 30.0,
    *,
    config: Mapping[str, Any] | None = None,
) -> list[Message]:
    """Consume ``topics`` from the start, in a new group, until ``until`` holds or ``timeout_s`` passes.

    ``until`` is a message count or a predicate over all messages so far. Returns the messages consumed (the
    caller asserts on them, so a timeout shows what did arrive). Error events are skipped: a topic that does
    not exist yet reports one until it does.
    """
    done = (lambda msgs: len(msgs) >= until) if isinstance(until, int) else until
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            **(config or {}),
        }
    )
    consumer.subscribe([topics] if isinstance(topics, str) else list(topics))
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(messages) and (left := deadline - time.monotonic()) > 0:
            msg = consumer.poll(min(left, 0.5))
            if msg is not None and msg.error() is None:
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def headers_of(msg: Message) -> dict[str, bytes]:
    """A message's headers as a dict (the last value wins for a repeated name)."""
    return {name: value for name, value in (msg.headers() or [])}
