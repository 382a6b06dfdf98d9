"""A request the model fails on: its user's events are dead-lettered (model_error), the rest of the batch goes on,
and later unfinished batches are planned again without the poison."""

from __future__ import annotations

import asyncio

from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.serving.recommender import Recommender
from schemas.decode import encode
from schemas.records import Interaction
from stream.model_worker import ModelWorker
from stream.state import decode_state
from stream.user_store import MemoryUserStore
from tests.unit.stream.handler_fakes import (
    ITEMS,
    TS,
    FakeEvent,
    FakeMessage,
    RecordingOutput,
    event,
    make_handler,
)


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
