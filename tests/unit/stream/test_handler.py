"""The two-stage batch handler: later batches see earlier unfinished ones, and nothing is acked before its flush.

Runs the real handler, model worker and metrics against an in-memory table and a recording producer (the Kafka
side of both is covered by tests/integration).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry

from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.serving.recommender import Recommender
from schemas.decode import encode
from schemas.records import Interaction, UserDeletion
from stream.handler import BatchHandler
from stream.metrics import Metrics
from stream.model_worker import ModelWorker
from stream.output import DeliveryError, OutputProducer
from stream.settings import Settings
from stream.state import decode_state

ITEMS = [f"i{n}" for n in range(30)]
TS = 1_700_000_000.0


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    timestamp: float
    refs: int = 1

    def incref(self) -> None:
        self.refs += 1


@dataclass
class FakeEvent:
    key: bytes
    value: bytes
    message: FakeMessage


class MemoryTable:
    """UserTable's interface over a dict: what was stored, and which stores happened before a flush."""

    def __init__(self) -> None:
        self.data: dict[tuple[int, bytes], bytes] = {}
        self.persisted = 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get((partition, key))

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop((partition, key), None)
        else:
            self.data[(partition, key)] = value

    def persist_offsets(self) -> None:
        self.persisted += 1


@dataclass
class RecordingOutput:
    """Queues messages; a flush moves them to ``delivered`` (or fails, when told to)."""

    queued: list[tuple[str, bytes | None]] = field(default_factory=list)
    delivered: list[tuple[str, bytes | None]] = field(default_factory=list)
    fail: bool = False

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None,
                partition: int | None = None, track: bool = False) -> None:
        self.queued.append((topic, key))

    async def flush(self) -> None:
        await asyncio.sleep(0)  # a real flush yields to the loop while the broker answers
        if self.fail:
            raise DeliveryError("planted")
        self.delivered += self.queued
        self.queued = []


def event(user: str, n: int, offset: int) -> FakeEvent:
    rec = Interaction(event_id=f"{user}-{n}", user_id=user, item_id=ITEMS[n % len(ITEMS)], type="click",
                      ts=TS + n)
    return FakeEvent(user.encode(), encode(rec), FakeMessage("in", 0, offset, TS + n))


@pytest.fixture
def parts():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=4, max_support=8)
    settings = Settings(topic_prefix="t-", pipeline_depth=2)
    metrics = Metrics(CollectorRegistry())
    worker = ModelWorker(Recommender(MetaRec(cfg), ITEMS, version="v1"), settings, metrics).start()
    yield settings, worker, metrics
    worker.stop()
    torch.set_num_threads(threads)


def make_handler(parts, table, output, acked, failures):
    settings, worker, metrics = parts

    async def ack(ev: FakeEvent) -> None:
        ev.message.refs -= 1
        acked.append(ev.message.offset)

    return BatchHandler(settings, worker, metrics, table, output, ack, failures.append)


def test_a_later_batch_continues_from_an_unfinished_earlier_one(parts):
    table, output, acked, failures = MemoryTable(), RecordingOutput(), [], []
    handler = make_handler(parts, table, output, acked, failures)

    async def run():
        first = handler.begin([event("u", 0, 0), event("v", 1, 1)])
        second = handler.begin([event("u", 2, 2)])  # u's first batch is not finished: nothing stored yet
        assert table.get(0, b"u") is None
        await handler.finish(first)
        await handler.finish(second)

    asyncio.run(run())
    state = decode_state(table.get(0, b"u"))
    assert state.interactions == 2 and state.recent_ids == ["u-0", "u-2"]
    assert decode_state(table.get(0, b"v")).interactions == 1
    assert [t for t, _ in output.delivered].count("t-recommendations") == 3  # u twice, v once
    assert not handler._inflight  # released once both batches finished
    assert not failures


def test_events_are_acked_only_after_their_outputs_are_flushed(parts):
    table, output, acked, failures = MemoryTable(), RecordingOutput(fail=True), [], []
    handler = make_handler(parts, table, output, acked, failures)
    events = [event("u", 0, 0), event("w", 1, 1)]

    async def run():
        flight = handler.begin(events)
        with pytest.raises(DeliveryError):
            await handler.finish(flight)

    asyncio.run(run())
    assert acked == [] and table.persisted == 0
    output.fail = False

    async def again():
        await handler.submit(events)  # the pipelined path: incref now, ack after the finisher's flush
        await handler.drain()

    asyncio.run(again())
    assert acked == [0, 1] and table.persisted == 1
    assert all(e.message.refs == 1 for e in events)  # the extra reference was released, take_events' kept


def test_flush_reports_messages_the_broker_never_acknowledged():
    """librdkafka gives up on a message (nothing listens on the port): the flush must fail, not pass silently."""
    output = OutputProducer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 300}, flush_timeout_s=10)
    output.produce("t", b"k", b"v")
    with pytest.raises(DeliveryError, match="refused"):
        asyncio.run(output.flush())


def test_a_finished_batch_is_counted_into_the_item_statistics(parts):
    """Context features read item statistics: the worker must feed them what it learns, once per new event."""
    settings, worker, metrics = parts
    cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=4, max_support=8, n_context=12)
    worker.swap(Recommender(MetaRec(cfg), ITEMS, version="v2"))
    before = worker.model.stats.events
    table, output = MemoryTable(), RecordingOutput()
    handler = make_handler(parts, table, output, [], [])

    async def run():
        await handler.finish(handler.begin([event("u", 0, 0), event("v", 1, 1), event("u", 2, 2)]))
        await handler.finish(handler.begin([event("u", 2, 2)]))  # a redelivery teaches nothing new

    asyncio.run(run())
    assert worker.model.stats.events - before == 3


def test_a_deleted_user_is_dropped_from_the_item_statistics(parts):
    settings, worker, metrics = parts
    cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=4, max_support=8, n_context=12)
    worker.swap(Recommender(MetaRec(cfg), ITEMS, version="v3"))
    handler = make_handler(parts, MemoryTable(), RecordingOutput(), [], [])
    gone = FakeEvent(b"u", encode(UserDeletion(event_id="d", user_id="u", ts=TS + 5)), FakeMessage("in", 0, 5, TS))

    async def run():
        await handler.finish(handler.begin([event("u", 0, 0), event("u", 1, 1)]))
        assert "u" in worker.model.stats.history
        await handler.finish(handler.begin([gone]))

    asyncio.run(run())
    assert "u" not in worker.model.stats.history


def test_ratings_reach_the_item_means_and_other_events_do_not(parts):
    """A rating model's context reads the stream's item means: the worker passes each rating it learns."""
    settings, worker, metrics = parts
    cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=4, max_support=8, n_context=12)
    worker.swap(Recommender(MetaRec(cfg), ITEMS, version="v4"))
    handler = make_handler(parts, MemoryTable(), RecordingOutput(), [], [])

    def rated(user: str, n: int, offset: int, stars: float | None, kind: str = "rating") -> FakeEvent:
        rec = Interaction(event_id=f"{user}-{n}", user_id=user, item_id="i7", type=kind, value=stars, ts=TS + n)
        return FakeEvent(user.encode(), encode(rec), FakeMessage("in", 0, offset, TS + n))

    async def run():
        await handler.finish(handler.begin([rated("u", 0, 0, 4.0), rated("v", 1, 1, 2.0),
                                            rated("w", 2, 2, None, kind="click")]))

    asyncio.run(run())
    stats = worker.model.stats
    assert stats.rating_count[7] == 2 and stats.rating_sum[7] == 6.0
    assert stats.counts[7] == 3  # the click is counted as an interaction, not as a rating
