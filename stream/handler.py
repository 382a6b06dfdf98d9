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
  the store's offsets -> record how far each source partition is finished (what the worker commits) -> ack.

Why that keeps the guarantees:

- **Offsets.** Each event's message gets an extra reference when the batch begins, so ``take_events``' own ack
  does not release it; the finisher's ack after the flush does, and on a rebalance Faust waits until every
  consumed message is released (``stream_wait_empty``). Batches finish in order, so after a batch the
  finisher knows each of its partitions is done up to the batch's last offset there
  (stream/finished_offsets.py): the consumer commits that, never beyond it and never stuck behind an offset
  the broker does not have (stream/faust_compat.py, point 6).
- **State.** A user in several in-flight batches continues from the state the earlier batch left in memory
  (``_inflight``), not from RocksDB, which has not been written yet. A state written to RocksDB may already hold a
  later in-flight batch's events: on a crash those are read again and recognised by their event ids, as any
  redelivery is.
- **A request the model fails on** (the micro-batcher splits a failing batch down to it) is the user's, not the
  batch's: the user's interactions in the batch go to dead-letters with reason ``model_error``, the user is
  planned again without them on the state before the batch (``pipeline.replan``), and so is every later
  unfinished batch that began from the state that held them, with new requests; the rest of the batch goes on.
  So the next event of the user does not meet the same poison, and nothing restart-loops.
- **Failure.** Any other error in either stage (the store, the producer, the model worker stopping) exits the
  worker without committing (``fail_stop``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from schemas.records import dead_letter_headers
from stream.batcher import BatcherClosed
from stream.finished_offsets import FinishedOffsets, last_offsets
from stream.metrics import Metrics
from stream.model_worker import ModelWorker, Ranking
from stream.output import OutputProducer
from stream.pipeline import (
    BatchPlan,
    DeadLetter,
    Decoded,
    RawMessage,
    Rules,
    UserWork,
    decode,
    plan,
    replan,
    settle,
)
from stream.settings import Settings
from stream.state import UserState, copy_state, decode_state
from stream.user_store import UserStore

log = logging.getLogger(__name__)

MODEL_ERROR = "model_error"


@dataclass
class _Shared:
    """A user's state as the latest begun batch left it, and how many unfinished batches hold it."""

    state: UserState
    batches: int = 0


@dataclass
class Flight:
    """One begun batch: its events (to ack), its plan, the model's pending answers to the plan's requests."""

    events: Sequence[Any]
    decoded: Decoded
    plan: BatchPlan
    last: dict[tuple[str, int], int]  # the batch's highest offset per source partition
    # each user's state before the batch, should the model fail on them: the stored bytes, or a copy of the
    # state an unfinished batch left (read at most once)
    before: dict[str, bytes | UserState | None]
    ranking: Ranking | None = None
    # users planned again after an earlier batch of theirs failed: each new ranking, the last one answers
    again: dict[str, list[Ranking]] = field(default_factory=dict)


class BatchHandler:
    """Turns batches of consumed events into state writes, dead letters and recommendations, two stages deep.

    State goes through a :class:`stream.user_store.UserStore` (in the worker: RocksDB + changelog); lists and
    dead letters through our own librdkafka producer, flushed before a batch is acked (stream/output.py).
    """

    def __init__(self, settings: Settings, worker: ModelWorker, metrics: Metrics, store: UserStore,
                 output: OutputProducer, ack: Callable[[Any], Any], on_failure: Callable[[int], None],
                 finished: FinishedOffsets | None = None) -> None:
        self._worker = worker
        self._metrics = metrics
        self._store = store
        self._output = output
        self._ack = ack
        self._on_failure = on_failure
        self.finished = finished if finished is not None else FinishedOffsets([settings.interactions_topic])
        self._recs_topic = settings.recommendations_topic
        self._dead_topic = settings.dead_letters_topic
        self._rules = Rules.of(settings)
        self._inflight: dict[str, _Shared] = {}
        self._flights: deque[Flight] = deque()  # begun and not finished, oldest first
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
        before: dict[str, bytes | UserState | None] = {}
        states: dict[str, UserState] = {}
        for user_id, partition in decoded.users.items():
            shared = self._inflight.get(user_id)
            if shared is not None:  # continue from the unfinished batch: RocksDB does not have it yet
                states[user_id], before[user_id] = shared.state, copy_state(shared.state)
            else:
                before[user_id] = self._store.get(partition, user_id.encode())
                states[user_id] = decode_state(before[user_id])
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
        flight = Flight(events, decoded, batch, last_offsets((m.topic, m.partition, m.offset) for m in messages),
                        before)
        self._flights.append(flight)
        if batch.requests:
            flight.ranking = self._worker.recommend(batch.requests)
        self._worker.forget(batch.forget)  # enqueued behind the ranking just submitted, in this order
        self._worker.learn(batch.learned, after=flight.ranking)
        return flight

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
        answers = await self._answers(flight)
        failed = [(work, a) for work, a in zip(flight.plan.wanted, answers) if isinstance(a, BaseException)]
        for work, error in failed:
            self._fail(flight, work, error)
        done = settle(flight.plan, [a for a in answers if not isinstance(a, BaseException)], time.time())
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
        self._flights.remove(flight)  # the oldest: batches finish in the order they began
        self.finished.finish(flight.last)  # before the acks: a shutdown commits as soon as the last one is in
        for event in flight.events:
            await self._ack(event)

    async def _answers(self, flight: Flight) -> list[Any]:
        """The model's answer per wanted user: a ``Served``, or the exception of a request it failed on alone.

        Users planned again after an earlier failure take the answer of their new request. Anything else than a
        model error (the model worker stopped, the wait cancelled) is raised: that is no user's fault.
        """
        answers = list(await flight.ranking.answers) if flight.ranking is not None else []
        if flight.again:
            index = {work.user_id: i for i, work in enumerate(flight.plan.wanted)}
            for user_id, rankings in flight.again.items():
                (answers[index[user_id]],) = await rankings[-1].answers
        for answer in answers:
            if isinstance(answer, BaseException) and (
                    not isinstance(answer, Exception) or isinstance(answer, BatcherClosed)):
                raise answer
        return answers

    def _fail(self, flight: Flight, work: UserWork, error: BaseException) -> None:
        """The model failed on ``work``'s request alone: its interactions go to dead-letters, and the user is
        planned again without them, here and in every later unfinished batch (which began from them)."""
        user_id = work.user_id
        detail = f"the model failed on this user's request: {type(error).__name__}: {error}"
        log.warning("model error for user %r: %d events of theirs dead-lettered: %s", user_id[:64],
                    len(work.counted), detail)
        for msg in work.counted:
            self._send_dead_letter(DeadLetter(msg, MODEL_ERROR, detail))
        self._metrics.events.labels(result="dead_letter").inc(len(work.counted))  # also counted as processed
        before = flight.before.pop(user_id)
        state = before if isinstance(before, UserState) else decode_state(before)
        part = replan(flight.decoded, user_id, work.partition, state, self._rules, self._worker.objective,
                      interactions=False)
        state = _merge(flight.plan, part)
        later_flights = list(self._flights)[self._flights.index(flight) + 1:]
        for later in later_flights:
            if user_id not in later.plan.users:
                continue
            later.before[user_id] = copy_state(state)
            part = replan(later.decoded, user_id, later.plan.users[user_id].partition, state, self._rules,
                          self._worker.objective)
            state = _merge(later.plan, part)
            if part.requests:  # the request queued at begin asked about the state with the failed events
                earlier = [later.ranking, *later.again.get(user_id, [])]
                again = self._worker.recommend(part.requests)
                later.again.setdefault(user_id, []).append(again)
                self._worker.learn(part.learned, after=again, instead_of=[r for r in earlier if r is not None])
        self._inflight[user_id].state = state

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


def _merge(batch: BatchPlan, part: BatchPlan) -> UserState:
    """Put one user's part, planned again, in place of theirs in ``batch``; the user's state after it."""
    (work,) = part.users.values()
    old = batch.users[work.user_id]
    batch.users[work.user_id] = work
    for i, wanted in enumerate(batch.wanted):
        if wanted is old:
            if part.wanted:
                batch.wanted[i], batch.requests[i] = work, part.requests[0]
            else:
                del batch.wanted[i], batch.requests[i]
            break
    return work.state
