"""What the handler tests run against: fake Faust events, a recording producer, the model worker and a handler
wired to them (tests/unit/stream/test_handler*.py)."""

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
from schemas.records import Interaction
from stream.handler import BatchHandler
from stream.metrics import Metrics
from stream.model_worker import ModelWorker
from stream.output import DeliveryError
from stream.settings import Settings

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


@dataclass
class RecordingOutput:
    """Queues messages; a flush moves them to ``delivered`` (or fails, when told to)."""

    queued: list[tuple[str, bytes | None]] = field(default_factory=list)
    delivered: list[tuple[str, bytes | None]] = field(default_factory=list)
    sent: list[tuple[str, bytes | None, bytes | None, Any]] = field(default_factory=list)  # whole, in order
    fail: bool = False

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None,
                partition: int | None = None, track: bool = False) -> None:
        self.queued.append((topic, key))
        self.sent.append((topic, key, value, headers))

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


def make_handler(parts, store, output, acked, failures):
    settings, worker, metrics = parts

    async def ack(ev: FakeEvent) -> None:
        ev.message.refs -= 1
        acked.append(ev.message.offset)

    return BatchHandler(settings, worker, metrics, store, output, ack, failures.append)
