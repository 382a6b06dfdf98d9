"""What the agent does with a batch, in two stages that overlap: plan now, settle when the model has answered.

Faust's ``take_events`` stops filling its buffer while the agent holds a batch, so a handler that awaits the model
before returning leaves the consumer idle for the whole model call (measured: 20% of the event loop idle, batches
of ~100 events). Here the agent only *begins* a batch and returns; a finishing task, one batch at a time and
in order, waits for the model, settles the batch, flushes the producer and only then acks the batch's events.
What a batch means is decided by the pure functions of stream/pipeline.py; this module carries out what they
return:

- begin: ``decode`` -> load the users' states -> ``plan`` -> dead letters out, requests to the model worker,
  then the batch's forgets and learned records (enqueued behind its ranking: a batch is ranked before the item
  statistics learn it, and learned before the next batch is ranked);
- finish: the answers -> ``settle`` -> state writes, tombstones and lists to the producer -> flush -> persist
  the store's offsets -> ack.

Why that keeps the guarantees:

- **Offsets.** Each event's message gets an extra reference when the batch begins, so ``take_events``' own ack
  does not release it; the finisher's ack after the flush does. Faust commits only released offsets, and on a
  rebalance it waits until every consumed message is released (``stream_wait_empty``).
- **State.** A user in several in-flight batches continues from the state the earlier batch left in memory
  (``_inflight``), not from RocksDB, which has not been written yet. A state written to RocksDB may already hold a
  later in-flight batch's events: on a crash those are read again and recognised by their event ids, as any
  redelivery is.
- **Failure.** Any error in either stage exits the worker without committing (``fail_stop``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from schemas.records import dead_letter_headers
from stream.metrics import Metrics
from stream.model_worker import ModelWorker, Served
from stream.output import OutputProducer
from stream.pipeline import BatchPlan, DeadLetter, RawMessage, Rules, decode, plan, settle
from stream.settings import Settings
from stream.state import Limits, UserState, decode_state
from stream.user_store import UserStore

log = logging.getLogger(__name__)


@dataclass
class _Shared:
    """A user's state as the latest begun batch left it, and how many unfinished batches hold it."""

    state: UserState
    batches: int = 0


@dataclass
class Flight:
    """One begun batch: its events (to ack), its plan, the model's pending answer to the plan's requests."""

    events: Sequence[Any]
    plan: BatchPlan
    served: asyncio.Future | None = None


class BatchHandler:
    """Turns batches of consumed events into state writes, dead letters and recommendations, two stages deep.

    State goes through a :class:`stream.user_store.UserStore` (in the worker: RocksDB + changelog); lists and
    dead letters through our own librdkafka producer, flushed before a batch is acked (stream/output.py).
    """

    def __init__(self, settings: Settings, worker: ModelWorker, metrics: Metrics, store: UserStore,
                 output: OutputProducer, ack: Callable[[Any], Any], on_failure: Callable[[int], None]) -> None:
        self._worker = worker
        self._metrics = metrics
        self._store = store
        self._output = output
        self._ack = ack
        self._on_failure = on_failure
        self._recs_topic = settings.recommendations_topic
        self._dead_topic = settings.dead_letters_topic
        self._rules = Rules(
            limits=Limits(settings.support_size, settings.seen_max, settings.recent_event_ids),
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
        )
        self._inflight: dict[str, _Shared] = {}
        self._serial = settings.pipeline_depth < 1  # 0: finish each batch before taking the next
        self._queue: asyncio.Queue[Flight] = asyncio.Queue(maxsize=max(1, settings.pipeline_depth))
        self._finisher: asyncio.Task | None = None

    # --- stage 1: in the agent ------------------------------------------------------------------------------
    async def submit(self, events: Sequence[Any]) -> None:
        """Begin a batch and queue it for finishing; waits only when ``pipeline_depth`` batches are unfinished."""
        for event in events:
            event.message.incref()  # released by the finisher's ack, not by take_events'
        flight = self.begin(events)
        if self._serial:
            await self._finish_one(flight)
            return
        if self._finisher is None:
            self._finisher = asyncio.ensure_future(self._finish_all())
        await self._queue.put(flight)

    def begin(self, events: Sequence[Any]) -> Flight:
        messages = [
            RawMessage(e.key, e.value, e.message.topic, e.message.partition, e.message.offset,
                       e.message.timestamp)
            for e in events
        ]
        decoded = decode(messages, self._rules, time.time())
        states = {user_id: self._load(user_id, partition) for user_id, partition in decoded.users.items()}
        batch = plan(decoded, states, self._rules, self._worker.objective)
        for work in batch.users.values():
            shared = self._inflight.get(work.user_id)
            if shared is None:
                shared = self._inflight[work.user_id] = _Shared(work.state)
            shared.state = work.state  # a deletion in this batch replaced it
            shared.batches += 1
        for dead in batch.dead:
            self._send_dead_letter(dead)
        self._metrics.observe_plan(batch)
        flight = Flight(events, batch)
        if batch.requests:
            flight.served = self._worker.recommend(batch.requests)
        self._worker.forget(batch.forget)  # enqueued behind the ranking just submitted, in this order
        self._worker.learn(batch.learned)
        return flight

    def _load(self, user_id: str, partition: int) -> UserState:
        shared = self._inflight.get(user_id)
        if shared is not None:
            return shared.state
        return decode_state(self._store.get(partition, user_id.encode()))

    # --- stage 2: the finishing task ------------------------------------------------------------------------
    async def _finish_all(self) -> None:
        while True:
            flight = await self._queue.get()
            try:
                await self._finish_one(flight)
            finally:
                self._queue.task_done()

    async def _finish_one(self, flight: Flight) -> None:
        try:
            await self.finish(flight)
        except Exception:  # noqa: BLE001 - nothing of this batch was acked: stop before anything is
            self._on_failure(len(flight.events))
            raise

    async def drain(self) -> None:
        """Wait until every begun batch is finished and acked (on shutdown, so its offsets get committed)."""
        await self._queue.join()

    async def finish(self, flight: Flight) -> None:
        served: list[Served] = await flight.served if flight.served is not None else []
        done = settle(flight.plan, served, time.time())
        for key in done.tombstones:
            self._output.produce(self._recs_topic, key, None)  # forget the old list, before any new one
        for write in done.writes:
            if write.value is None:
                self._store.delete(write.partition, write.key)
            else:
                self._store.put(write.partition, write.key, write.value)
        for key, value in done.lists:
            self._output.produce(self._recs_topic, key, value)
        self._metrics.observe_settled(done.observations)
        await self._output.flush()  # every output of the batch acknowledged before its offsets are
        self._store.persist_offsets()
        self._release(flight.plan)
        for event in flight.events:
            await self._ack(event)

    def _release(self, batch: BatchPlan) -> None:
        for user_id in batch.users:
            shared = self._inflight[user_id]
            shared.batches -= 1
            if shared.batches == 0:
                del self._inflight[user_id]

    def _send_dead_letter(self, dead: DeadLetter) -> None:
        msg = dead.message
        headers = dead_letter_headers(dead.reason, dead.detail, msg.topic, msg.partition, msg.offset)
        self._output.produce(self._dead_topic, msg.key, msg.value, headers)
        self._metrics.dead_letters.labels(reason=dead.reason).inc()
