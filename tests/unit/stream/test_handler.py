"""The two-stage batch handler: later batches see earlier unfinished ones, nothing is acked before its flush,
and the model's item statistics learn a batch after ranking it.

Runs the real handler, model worker and metrics against the in-memory user store and a recording producer (the
Kafka side of both is covered by tests/integration).
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
from stream.user_store import MemoryUserStore

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


def test_a_later_batch_continues_from_an_unfinished_earlier_one(parts):
    store, output, acked, failures = MemoryUserStore(), RecordingOutput(), [], []
    handler = make_handler(parts, store, output, acked, failures)

    async def run():
        first = handler.begin([event("u", 0, 0), event("v", 1, 1)])
        second = handler.begin([event("u", 2, 2)])  # u's first batch is not finished: nothing stored yet
        assert store.get(0, b"u") is None
        await handler.finish(first)
        await handler.finish(second)

    asyncio.run(run())
    state = decode_state(store.get(0, b"u"))
    assert state.interactions == 2 and state.recent_ids == ["u-0", "u-2"]
    assert decode_state(store.get(0, b"v")).interactions == 1
    assert [t for t, _ in output.delivered].count("t-recommendations") == 3  # u twice, v once
    assert not handler._inflight  # released once both batches finished
    assert not failures


def test_events_are_acked_only_after_their_outputs_are_flushed(parts):
    store, output, acked, failures = MemoryUserStore(), RecordingOutput(fail=True), [], []
    handler = make_handler(parts, store, output, acked, failures)
    events = [event("u", 0, 0), event("w", 1, 1)]

    async def run():
        flight = handler.begin(events)
        with pytest.raises(DeliveryError):
            await handler.finish(flight)

    asyncio.run(run())
    assert acked == [] and store.persisted == 0
    assert handler.finished.next_offset(("in", 0)) is None, "nothing may be committed"
    output.fail = False

    async def again():
        await handler.submit(events)  # the pipelined path: incref now, ack after the finisher's flush
        await handler.drain()

    asyncio.run(again())
    assert acked == [0, 1] and store.persisted == 1
    assert handler.finished.next_offset(("in", 0)) == 2, "committable up to the batch's last offset"
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
    store, output = MemoryUserStore(), RecordingOutput()
    handler = make_handler(parts, store, output, [], [])

    async def run():
        await handler.finish(handler.begin([event("u", 0, 0), event("v", 1, 1), event("u", 2, 2)]))
        await handler.finish(handler.begin([event("u", 2, 2)]))  # a redelivery teaches nothing new
        await worker.settled()

    asyncio.run(run())
    assert worker.model.stats.events - before == 3


def test_the_worker_keeps_nothing_per_user_and_a_deleted_user_starts_over(parts):
    """The statistics learn each user's events from the records, which carry the user's history; after a
    deletion the user's next events arrive with an empty history, as a new user's would."""
    settings, worker, metrics = parts
    cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=4, max_support=8, n_context=12)
    learned: list = []

    class Spy(Recommender):
        def learn(self, records):
            learned.append([(r.user_id, r.history_before) for r in records])
            super().learn(records)

    worker.swap(Spy(MetaRec(cfg), ITEMS, version="v3"))
    handler = make_handler(parts, MemoryUserStore(), RecordingOutput(), [], [])
    gone = FakeEvent(b"u", encode(UserDeletion(event_id="d", user_id="u", ts=TS + 5)), FakeMessage("in", 0, 5, TS))

    async def run():
        await handler.finish(handler.begin([event("u", 0, 0), event("u", 1, 1)]))
        await handler.finish(handler.begin([event("u", 2, 2)]))
        await handler.finish(handler.begin([gone, event("u", 3, 6)]))
        await worker.settled()

    asyncio.run(run())
    assert learned == [[("u", ())], [("u", ("i0", "i1"))], [("u", ())]]
    assert worker.model.stats.book is None  # no per-user memory in the worker


def test_ratings_reach_the_item_means_and_other_events_do_not(parts):
    """A rating model's context reads the stream's item means: the worker passes each rating it learns."""
    settings, worker, metrics = parts
    cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=4, max_support=8, n_context=12)
    worker.swap(Recommender(MetaRec(cfg), ITEMS, version="v4"))
    handler = make_handler(parts, MemoryUserStore(), RecordingOutput(), [], [])

    def rated(user: str, n: int, offset: int, stars: float | None, kind: str = "rating") -> FakeEvent:
        rec = Interaction(event_id=f"{user}-{n}", user_id=user, item_id="i7", type=kind, value=stars, ts=TS + n)
        return FakeEvent(user.encode(), encode(rec), FakeMessage("in", 0, offset, TS + n))

    async def run():
        await handler.finish(handler.begin([rated("u", 0, 0, 4.0), rated("v", 1, 1, 2.0),
                                            rated("w", 2, 2, None, kind="click")]))
        await worker.settled()

    asyncio.run(run())
    stats = worker.model.stats
    assert stats.rating_count[7] == 2 and stats.rating_sum[7] == 6.0
    assert stats.counts[7] == 3  # the click is counted as an interaction, not as a rating


def test_a_batch_is_ranked_before_its_events_reach_the_item_statistics(parts):
    """Test, then train: the statistics a batch is ranked with hold the earlier batches, not its events."""
    settings, worker, metrics = parts
    cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=4, max_support=8, n_context=12)
    ranked_with: list[int] = []

    class Spy(Recommender):
        def recommend(self, requests, k, **kw):
            ranked_with.append(self.stats.events)
            return super().recommend(requests, k, **kw)

    worker.swap(Spy(MetaRec(cfg), ITEMS, version="v5"))
    start = worker.model.stats.events
    handler = make_handler(parts, MemoryUserStore(), RecordingOutput(), [], [])

    async def run():
        await handler.finish(handler.begin([event("u", 0, 0), event("v", 1, 1)]))
        await handler.finish(handler.begin([event("u", 2, 2)]))
        await worker.settled()

    asyncio.run(run())
    assert ranked_with == [start, start + 2]
    assert worker.model.stats.events == start + 3


def test_losses_and_lists_count_for_the_version_that_served_them(parts):
    """A swap between the model's answer and the batch's finish must not relabel what the old version did."""
    settings, worker, metrics = parts
    handler = make_handler(parts, MemoryUserStore(), RecordingOutput(), [], [])

    async def run():
        flight = handler.begin([event("u", 0, 0), event("v", 1, 1)])
        await flight.ranking.answers
        cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8)
        worker.swap(Recommender(MetaRec(cfg), ITEMS, version="v9"))
        await handler.finish(flight)

    asyncio.run(run())
    sample = metrics.registry.get_sample_value
    assert sample("metarec_adaptation_loss_count", {"stage": "before", "model_version": "v1"}) == 2
    assert sample("metarec_adaptation_loss_count", {"stage": "before", "model_version": "v9"}) is None
    assert sample("metarec_recommendations_total", {"model_version": "v1"}) == 2


def test_a_deletion_withdraws_the_list_and_the_state_and_bad_events_are_dead_lettered(parts):
    settings, worker, metrics = parts
    store, output = MemoryUserStore(), RecordingOutput()
    handler = make_handler(parts, store, output, [], [])
    deletion = UserDeletion(event_id="d", user_id="u", ts=TS + 5)
    gone = FakeEvent(b"u", encode(deletion), FakeMessage("in", 0, 5, TS))
    junk = FakeEvent(b"u", b"{not json", FakeMessage("in", 0, 6, TS))

    async def run():
        await handler.finish(handler.begin([event("u", 0, 0)]))
        assert store.get(0, b"u") is not None
        await handler.finish(handler.begin([gone, junk]))

    asyncio.run(run())
    marker = decode_state(store.get(0, b"u"))
    assert marker.deleted_ts == TS + 5 and not marker.support and not marker.seen and not marker.last_recs
    assert ("t-recommendations", b"u", None, None) in output.sent  # the tombstone
    (dead,) = [m for m in output.sent if m[0] == "t-dead-letters"]
    assert dead[1:3] == (b"u", b"{not json")
    headers = dict(dead[3])
    assert headers["metarec-reason"] == b"not_json" and headers["metarec-source-offset"] == b"6"
    assert headers["metarec-source-topic"] == b"in" and headers["metarec-source-partition"] == b"0"
    assert store.persisted == 2 and store.unpersisted == 0


class Poisoned(Recommender):
    """A model that cannot rank any user who has an item named ``poison...``, and records what it learns."""

    learned: list[tuple[str, tuple[str, ...], tuple[str, ...]]]

    def recommend(self, requests, k, **kw):
        if any(item.startswith("poison") for r in requests for item in r.history):
            raise RuntimeError("planted: the model cannot rank poison")
        return super().recommend(requests, k, **kw)

    def learn(self, records):
        self.learned.extend((r.user_id, r.history_before, tuple(e[0] for e in r.events)) for r in records)
        super().learn(records)


def poisoned(worker: ModelWorker) -> Poisoned:
    cfg = ModelConfig(n_items=len(ITEMS), dim=8, head_dim=8, n_negatives=4, max_support=8, n_context=12)
    model = Poisoned(MetaRec(cfg), ITEMS, version="v-poison")
    model.learned = []
    worker.swap(model)
    return model


def on_item(user: str, n: int, offset: int, item: str) -> FakeEvent:
    rec = Interaction(event_id=f"{user}-{n}", user_id=user, item_id=item, type="click", ts=TS + n)
    return FakeEvent(user.encode(), encode(rec), FakeMessage("in", 0, offset, TS + n))


def dead_letters(output: RecordingOutput) -> list[tuple[bytes, str, str]]:
    """(key, reason, source offset) of every dead letter sent."""
    return [(key, dict(headers)["metarec-reason"].decode(), dict(headers)["metarec-source-offset"].decode())
            for topic, key, _value, headers in output.sent if topic == "t-dead-letters"]


def lists_sent(output: RecordingOutput) -> dict[bytes, list]:
    from schemas.decode import decode_recommendation
    out: dict[bytes, list] = {}
    for topic, key, value, _headers in output.sent:
        if topic == "t-recommendations" and value is not None:
            out.setdefault(key, []).append(decode_recommendation(value))
    return out


def test_a_poison_event_dead_letters_its_user_s_events_and_the_rest_of_the_batch_goes_on(parts):
    """The model fails on one user's request: that user's events of the batch go to dead-letters with reason
    model_error and leave their state as it was, the other users are served, nobody exits, and the user's next
    event is processed normally (the poison is not in their state)."""
    _settings, worker, metrics = parts
    model = poisoned(worker)
    store, output, acked, failures = MemoryUserStore(), RecordingOutput(), [], []
    handler = make_handler(parts, store, output, acked, failures)

    async def run():
        await handler.finish(handler.begin([event("u", 0, 0), on_item("v", 1, 1, "poison"), event("v", 2, 2),
                                            event("w", 3, 3)]))
        await handler.finish(handler.begin([event("v", 5, 4)]))
        await worker.settled()

    asyncio.run(run())
    assert not failures, "a poison event never stops the worker"
    assert dead_letters(output) == [(b"v", "model_error", "1"), (b"v", "model_error", "2")]
    sample = metrics.registry.get_sample_value
    assert sample("metarec_dead_letters_total", {"reason": "model_error"}) == 2
    lists = lists_sent(output)
    assert [r.event_id for r in lists[b"u"]] == ["u-0"] and [r.event_id for r in lists[b"w"]] == ["w-3"]
    assert [(r.event_id, r.seq) for r in lists[b"v"]] == [("v-5", 1)], "no list for the failed batch"
    v = decode_state(store.get(0, b"v"))
    assert v.recent_ids == ["v-5"] and v.seen == ["i5"], "the failed events never reached the state"
    assert acked == [0, 1, 2, 3, 4] and handler.finished.next_offset(("in", 0)) == 5
    assert [(user, events) for user, _history, events in model.learned] == [
        ("u", ("i0",)), ("w", ("i3",)), ("v", ("i5",))], "the statistics never learn the dead-lettered events"


def test_a_later_unfinished_batch_of_the_user_is_planned_again_without_the_poison(parts):
    """Pipelined: the user's next batch began from the state that held the poison. It is planned again on the
    state without it and ranked again: its event is served and learned once, and the poison is nowhere."""
    _settings, worker, _metrics = parts
    model = poisoned(worker)
    store, output, acked, failures = MemoryUserStore(), RecordingOutput(), [], []
    handler = make_handler(parts, store, output, acked, failures)

    async def run():
        first = handler.begin([on_item("v", 0, 0, "poison"), event("u", 1, 1)])
        second = handler.begin([event("v", 2, 2)])  # begun before the first's answer is known
        third = handler.begin([event("v", 3, 3), event("u", 4, 4)])
        for flight in (first, second, third):
            await handler.finish(flight)
        await worker.settled()

    asyncio.run(run())
    assert not failures
    assert dead_letters(output) == [(b"v", "model_error", "0")]
    lists = lists_sent(output)
    assert [(r.event_id, r.first_event_id, r.seq) for r in lists[b"v"]] == [("v-2", "v-2", 1), ("v-3", "v-3", 2)]
    assert [r.event_id for r in lists[b"u"]] == ["u-1", "u-4"]
    v = decode_state(store.get(0, b"v"))
    assert v.seen == ["i2", "i3"] and v.recent_ids == ["v-2", "v-3"] and v.seq == 2
    learned_v = [(history, events) for user, history, events in model.learned if user == "v"]
    assert learned_v == [((), ("i2",)), (("i2",), ("i3",))], "each event once, with a history without poison"
    assert not handler._inflight and not handler._flights


def test_two_poison_batches_in_flight_leave_the_third_planned_on_neither(parts):
    """The user's first two unfinished batches each hold a poison item: the third is planned again twice, served
    from a state with neither, and its event is learned exactly once."""
    _settings, worker, _metrics = parts
    model = poisoned(worker)
    store, output, acked, failures = MemoryUserStore(), RecordingOutput(), [], []
    handler = make_handler(parts, store, output, acked, failures)

    async def run():
        flights = [handler.begin([on_item("v", 0, 0, "poison-1")]), handler.begin([on_item("v", 1, 1, "poison-2")]),
                   handler.begin([event("v", 3, 2)])]
        for flight in flights:
            await handler.finish(flight)
        await worker.settled()

    asyncio.run(run())
    assert not failures
    assert dead_letters(output) == [(b"v", "model_error", "0"), (b"v", "model_error", "1")]
    assert [(r.event_id, r.seq) for r in lists_sent(output)[b"v"]] == [("v-3", 1)]
    assert decode_state(store.get(0, b"v")).seen == ["i3"]
    assert [(user, events) for user, _history, events in model.learned] == [("v", ("i3",))]
