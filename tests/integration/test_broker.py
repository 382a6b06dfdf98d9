"""The embedded broker starts, carries records both ways, and gets the topics and partitions we ask for."""

from __future__ import annotations

import socket
from typing import Iterator

import pytest
from confluent_kafka.admin import ConfigResource

from stream import broker as broker_module
from stream.broker import BrokerError, EmbeddedBroker
from stream.settings import Settings
from stream.topics import TopicError, TopicSpec, app_topic_specs, ensure_topics, quiet_admin, wait_for_broker
from tests.integration.kafka_helpers import consume_until, headers_of, produce

pytestmark = pytest.mark.integration


def partition_counts(bootstrap: str) -> dict[str, int]:
    admin, _ = quiet_admin({"bootstrap.servers": bootstrap})
    return {name: len(t.partitions) for name, t in admin.list_topics(timeout=10).topics.items()}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on (and never speaks Kafka)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_broker_answers_metadata(broker: EmbeddedBroker) -> None:
    assert broker.is_running()
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    wait_for_broker(broker.kafka_config(), timeout=5)


def test_round_trip_keeps_keys_values_headers_and_order(broker: EmbeddedBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}round-trip"
    ensure_topics(broker.kafka_config(), [TopicSpec(topic, 1)])
    records = [(f"u{i}".encode(), f"value-{i}".encode(), [("h", str(i).encode())]) for i in range(5)]
    assert produce(broker.bootstrap, topic, records) == 5

    got = consume_until(broker.bootstrap, topic, 5, timeout_s=30)

    assert [(m.key(), m.value(), headers_of(m)["h"]) for m in got] == [(k, v, h[0][1]) for k, v, h in records]
    assert [m.offset() for m in got] == list(range(5))


def test_ensure_topics_creates_the_partitions_asked_for(broker: EmbeddedBroker, topic_prefix: str) -> None:
    specs = [TopicSpec(f"{topic_prefix}three", 3), TopicSpec(f"{topic_prefix}one", 1)]

    created = ensure_topics(broker.kafka_config(), specs)

    assert sorted(created) == sorted(s.name for s in specs)
    counts = partition_counts(broker.bootstrap)
    assert (counts[specs[0].name], counts[specs[1].name]) == (3, 1)
    assert ensure_topics(broker.kafka_config(), specs) == []  # idempotent


def test_partition_mismatch_is_an_error_that_names_the_topic(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    name = f"{topic_prefix}fixed"
    ensure_topics(broker.kafka_config(), [TopicSpec(name, 2)])
    with pytest.raises(TopicError, match=f"{name}.*2 partitions but 4"):
        ensure_topics(broker.kafka_config(), [TopicSpec(name, 4)])


def test_app_topics_are_created_with_prefix_and_compaction(settings: Settings) -> None:
    settings = settings.replace(partitions=3)
    ensure_topics(settings.kafka_config(), app_topic_specs(settings))

    counts = partition_counts(settings.brokers)
    assert counts[settings.interactions_topic] == counts[settings.items_topic] == 3
    assert counts[settings.recommendations_topic] == 3
    assert counts[settings.dead_letters_topic] == 1
    admin, _ = quiet_admin(settings.kafka_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.recommendations_topic)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["cleanup.policy"].value == "compact"


def test_compacted_topic_carries_records(broker: EmbeddedBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}compacted"
    ensure_topics(broker.kafka_config(), [TopicSpec(topic, 1, compacted=True)])
    produce(broker.bootstrap, topic, [(b"u1", b"first"), (b"u1", b"second")])
    got = consume_until(broker.bootstrap, topic, lambda msgs: any(m.value() == b"second" for m in msgs), 30)
    assert got and got[-1].value() == b"second"


def test_a_broker_that_dies_on_a_taken_port_is_retried_elsewhere(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ports = iter([busy_port])
    real_free_port = broker_module.free_port
    monkeypatch.setattr(broker_module, "free_port", lambda host: next(ports, None) or real_free_port(host))

    with EmbeddedBroker(attempts=2) as second:
        assert second.port != busy_port
        wait_for_broker(second.kafka_config(), timeout=5)
    assert f"attempt 1/2 on port {busy_port} failed" in caplog.text


def test_a_fixed_taken_port_fails_with_a_one_line_error(busy_port: int) -> None:
    with pytest.raises(BrokerError) as info:
        EmbeddedBroker(port=busy_port, start_timeout_s=10).start()
    assert "\n" not in str(info.value)


def test_stop_ends_the_process_and_frees_the_port() -> None:
    embedded = EmbeddedBroker().start()
    port, log_path = embedded.port, embedded.log_path
    embedded.stop()
    assert not embedded.is_running()
    assert log_path is not None and not log_path.exists()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    embedded.stop()  # idempotent
