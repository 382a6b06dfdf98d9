"""The changelog end probe that makes table recovery read to the true end on the embedded broker."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError
from faust.types import TP

import stream.faust_compat as faust_compat

CHANGELOG = "app-users-changelog"


class Eof:
    """What confluent-kafka's poll returns when a partition reached the Fetch response's high watermark."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def error(self) -> Any:
        return KafkaError(KafkaError._PARTITION_EOF)

    def topic(self) -> str:
        return CHANGELOG

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def fake_consumer(true_ends: dict[int, int], assigned: list) -> type:
    class FakeConsumer:
        def __init__(self, config: dict[str, Any]) -> None:
            self.queue: list[Eof] = []

        def assign(self, tps: list) -> None:
            assigned.extend((tp.partition, tp.offset) for tp in tps)
            self.queue = [Eof(tp.partition, true_ends[tp.partition]) for tp in tps if tp.partition in true_ends]

        def poll(self, timeout: float) -> Eof | None:
            return self.queue.pop(0) if self.queue else None

        def close(self) -> None: ...
    return FakeConsumer


def test_reported_ends_are_replaced_by_the_fetched_ones(monkeypatch: pytest.MonkeyPatch):
    assigned: list = []
    monkeypatch.setattr(faust_compat.consumer, "Consumer", fake_consumer({0: 10, 1: 1}, assigned))
    reported = {TP(CHANGELOG, 0): 1, TP(CHANGELOG, 1): 1, TP(CHANGELOG, 2): 0, TP(CHANGELOG, 3): None}
    ends = faust_compat.real_end_offsets({}, reported, timeout_s=1.0)
    assert ends == {TP(CHANGELOG, 0): 10, TP(CHANGELOG, 1): 1, TP(CHANGELOG, 2): 0, TP(CHANGELOG, 3): None}
    assert sorted(assigned) == [(0, 0), (1, 0)], "only non-empty partitions are probed, from their last batch"


def test_a_partition_that_never_answers_keeps_its_reported_end(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(faust_compat.consumer, "Consumer", fake_consumer({0: 7}, []))
    reported = {TP(CHANGELOG, 0): 3, TP(CHANGELOG, 1): 5}
    assert faust_compat.real_end_offsets({}, reported, timeout_s=0.05) == {TP(CHANGELOG, 0): 7, TP(CHANGELOG, 1): 5}


def test_the_worker_consumer_waits_on_an_empty_fetch_only_as_long_as_the_settings_say():
    """Faust builds its aiokafka consumer with a fixed 1.5 s fetch wait, which the embedded broker always
    waits out: every event would sit there for up to 1.5 s before the worker saw it."""
    import asyncio

    import faust

    async def build() -> int:
        app = faust.App("fetch-wait", broker="kafka://127.0.0.1:1", web_enabled=False, autodiscover=False)
        faust_compat.use_real_highwaters(app, {}, fetch_max_wait_ms=7)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(build()) == 7
