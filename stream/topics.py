"""The app's topics, created explicitly with the partition counts it declares; a broker reachability probe.

Why explicit: a broker auto-creates a topic on first produce with *its* default partition count, and a Faust
table over a source topic whose partition count differs from its changelog refuses to start. So every topic
the app reads or writes is created here, before any worker or producer starts, and an existing topic with
another partition count is an error that names the fix.

librdkafka logs connection failures to stderr over and over; our admin clients send them to a private logger
instead, and the last one becomes the detail of :class:`BrokerUnreachable`, a one-line message the CLI prints.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from stream.settings import Settings

log = logging.getLogger(__name__)

_METADATA_POLL_S = 0.05


class BrokerUnreachable(RuntimeError):
    """No Kafka broker answered a metadata request in time; the message is one line, fit for the CLI."""


class TopicError(RuntimeError):
    """A topic could not be created, or exists with another partition count than declared."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic as the app declares it."""

    name: str
    partitions: int
    compacted: bool = False
    config: Mapping[str, str] = field(default_factory=dict)
    replication_factor: int = 1

    def topic_config(self) -> dict[str, str]:
        """Broker-side topic config: ``config`` plus ``cleanup.policy=compact`` when compacted."""
        conf = dict(self.config)
        if self.compacted:
            conf.setdefault("cleanup.policy", "compact")
        return conf


def app_topic_specs(settings: Settings, *, compaction: bool = True) -> list[TopicSpec]:
    """The four topics metarec uses: events in, recommendations out, refused events aside.

    ``recommendations`` is compacted (only each user's latest list matters). Tansu, the embedded broker,
    accepts and stores ``cleanup.policy=compact`` (checked in tests/integration/test_broker.py); whether it
    compacts is not something we rely on. ``compaction=False`` is for brokers that refuse the setting.
    """
    rf = settings.replication_factor
    return [
        TopicSpec(settings.interactions_topic, settings.partitions, replication_factor=rf),
        TopicSpec(settings.items_topic, settings.partitions, replication_factor=rf),
        TopicSpec(
            settings.recommendations_topic, settings.partitions, compacted=compaction, replication_factor=rf
        ),
        TopicSpec(settings.dead_letters_topic, 1, replication_factor=rf),
    ]


class _LastMessage(logging.Handler):
    """Remembers the last warning or error librdkafka logged, to explain a failure in one line."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def quiet_admin(kafka_config: Mapping[str, Any]) -> tuple[AdminClient, _LastMessage]:
    """An AdminClient whose librdkafka logs go to a private logger (not stderr), plus that logger's memory."""
    handler = _LastMessage()
    logger = logging.Logger(f"{__name__}.librdkafka")  # not registered: no propagation to the root logger
    logger.addHandler(handler)
    return AdminClient({**kafka_config, "logger": logger}), handler


def wait_for_broker(kafka_config: Mapping[str, Any], timeout: float = 10.0) -> None:
    """Return once a broker answers a metadata request; raise :class:`BrokerUnreachable` after ``timeout``."""
    _metadata(kafka_config, timeout)


def _metadata(kafka_config: Mapping[str, Any], timeout: float) -> ClusterMetadata:
    bootstrap = kafka_config.get("bootstrap.servers", "?")
    try:
        admin, last = quiet_admin(kafka_config)
    except (KafkaException, ValueError, TypeError) as exc:
        raise BrokerUnreachable(
            f"cannot reach Kafka at {bootstrap}: invalid client configuration: {exc}"
        ) from None
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0)  # delivers the queued librdkafka logs to our handler
        detail = _one_line(last.last) if last.last else exc.args[0].str()
        raise BrokerUnreachable(f"cannot reach Kafka at {bootstrap}: {detail}") from None


def _one_line(message: str) -> str:
    """librdkafka log lines start with ``FAIL [rdkafka#producer-1] [thrd:...]: ``; keep what follows."""
    return message.rsplit("]: ", 1)[-1].replace("\n", " ").strip()


def ensure_topics(
    kafka_config: Mapping[str, Any], specs: Iterable[TopicSpec], timeout: float = 15.0
) -> list[str]:
    """Create the missing topics, check the existing ones; returns the names created by this call.

    Raises :class:`BrokerUnreachable` if no broker answers, :class:`TopicError` on a partition mismatch or a
    refused creation. A topic created concurrently by someone else ("already exists") is fine if it matches.
    """
    specs = list(specs)
    deadline = time.monotonic() + timeout
    metadata = _metadata(kafka_config, timeout)
    missing = [s for s in specs if s.name not in metadata.topics or metadata.topics[s.name].error is not None]
    created = _create(kafka_config, missing, max(deadline - time.monotonic(), 1.0))
    _await_partitions(kafka_config, specs, deadline)
    return created


def _create(kafka_config: Mapping[str, Any], specs: list[TopicSpec], timeout: float) -> list[str]:
    if not specs:
        return []
    admin, _ = quiet_admin(kafka_config)
    new = [NewTopic(s.name, s.partitions, s.replication_factor, config=s.topic_config()) for s in specs]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(f"cannot create topic {name!r}: {err.str()}") from None
            log.info("topic %s was created concurrently", name)
            continue
        created.append(name)
        log.info("created topic %s", name)
    return created


def _await_partitions(kafka_config: Mapping[str, Any], specs: list[TopicSpec], deadline: float) -> None:
    """Poll metadata (bounded) until every topic shows up, then compare partition counts with the specs."""
    while True:
        metadata = _metadata(kafka_config, max(deadline - time.monotonic(), 0.5))
        absent = [s.name for s in specs if s.name not in metadata.topics or metadata.topics[s.name].error]
        if not absent:
            break
        if time.monotonic() >= deadline:
            raise TopicError(f"topics not visible in metadata after creation: {', '.join(absent)}")
        time.sleep(_METADATA_POLL_S)  # poll interval of a bounded wait for a condition, not a synchronisation
    for spec in specs:
        actual = len(metadata.topics[spec.name].partitions)
        if actual != spec.partitions:
            raise TopicError(
                f"topic {spec.name!r} exists with {actual} partitions but {spec.partitions} are declared; "
                "delete the topic or declare the same partition count"
            )
