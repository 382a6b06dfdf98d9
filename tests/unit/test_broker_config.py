"""Broker and topic plumbing that needs no running broker: errors, specs, the reachability probe's message."""

from __future__ import annotations

import shutil
import socket

import pytest

from stream.broker import BrokerError, EmbeddedBroker, free_port, resolve_binary
from stream.settings import Settings
from stream.topics import BrokerUnreachable, TopicSpec, app_topic_specs, wait_for_broker


def test_missing_binary_is_a_one_line_broker_error() -> None:
    with pytest.raises(BrokerError, match="missing or not executable") as info:
        resolve_binary("/nonexistent/tansu")
    assert "\n" not in str(info.value)


def test_bootstrap_before_start_is_an_error() -> None:
    with pytest.raises(BrokerError, match="not running"):
        _ = EmbeddedBroker().bootstrap


def test_a_binary_that_exits_at_once_fails_after_the_attempts() -> None:
    false = shutil.which("false")
    if false is None:
        pytest.skip("no `false` executable")
    with pytest.raises(BrokerError, match=r"after 2 attempt\(s\): exited with code 1") as info:
        EmbeddedBroker(binary=false, attempts=2, start_timeout_s=5).start()
    assert "\n" not in str(info.value)


def test_unreachable_broker_gives_a_one_line_message_with_the_address() -> None:
    port = free_port()
    with pytest.raises(BrokerUnreachable) as info:
        wait_for_broker({"bootstrap.servers": f"127.0.0.1:{port}"}, timeout=0.5)
    message = str(info.value)
    assert message.startswith(f"cannot reach Kafka at 127.0.0.1:{port}: ")
    assert "\n" not in message and "rdkafka#" not in message


def test_free_port_can_be_bound() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_topic_config_adds_compaction_only_when_asked() -> None:
    assert TopicSpec("a", 1).topic_config() == {}
    assert TopicSpec("a", 1, compacted=True, config={"retention.ms": "1000"}).topic_config() == {
        "retention.ms": "1000",
        "cleanup.policy": "compact",
    }


def test_app_topic_specs_follow_settings() -> None:
    settings = Settings(topic_prefix="p-", partitions=6, replication_factor=3)
    specs = {s.name: s for s in app_topic_specs(settings)}
    assert set(specs) == {"p-interactions", "p-items", "p-recommendations", "p-dead-letters"}
    assert [specs[n].partitions for n in ("p-interactions", "p-items", "p-recommendations")] == [6, 6, 6]
    assert specs["p-dead-letters"].partitions == 1
    assert specs["p-recommendations"].compacted and not specs["p-interactions"].compacted
    assert all(s.replication_factor == 3 for s in specs.values())
    assert not any(s.compacted for s in app_topic_specs(settings, compaction=False))
