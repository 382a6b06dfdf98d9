"""Throughput levers: Faust's per-event steps done per fetched batch, its bookkeeping kept (point 8).

Why each reach into Faust is needed: the package docstring (stream/faust_compat/__init__.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP, EventT

# --- 8. throughput levers (issue 15): Faust's per-event steps done per batch, its bookkeeping kept -----------
_YIELD_EVERY = 100  # messages delivered between two turns of the event loop, as Faust's own drain does


def use_batch_delivery(app: faust.App) -> None:
    """Hand each fetched batch to the conductor under one ``wait_first``, not one per message.

    Faust's ``Consumer._drain_messages`` awaits ``wait_first(callback(message), suspend_flow.wait())`` per message:
    four tasks and an ``asyncio.wait`` per event. The callback only blocks while flow is suspended (a rebalance), so
    one guard per batch keeps what the guard is for: a rebalance cancels the delivery where it is, and the rest,
    never tracked, is fetched again from the committed offset. Gaps, read offsets and ``broker_commit_every`` are
    kept as Faust keeps them (the commit check once per batch, outside the guard, as in Faust).
    """
    base: type = app.transport.Consumer

    class BatchDeliveryConsumer(base):  # type: ignore[misc, valid-type]
        async def _drain_messages(self, fetcher: Any) -> None:
            await _drain_batches(self, fetcher)

    app.transport.Consumer = BatchDeliveryConsumer


async def _drain_batches(consumer: Any, fetcher: Any) -> None:
    """``Consumer._drain_messages`` of faust-streaming 0.15, with one guard per fetched batch."""
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            consumer.diag.set_flag(CONSUMER_FETCHING)
            records = consumer.getmany(timeout=1.0)
            await consumer.sleep(0)
            first = None if consumer.should_stop else await anext(records, None)  # the fetch, unguarded
            if first is not None:
                if consumer._commit_every is not None and consumer._n_acked >= consumer._commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                await consumer.wait_first(_deliver(consumer, first, records), consumer.suspend_flow.wait())
            consumer.diag.unset_flag(CONSUMER_FETCHING)
    except (*consumer.consumer_stopped_errors, asyncio.CancelledError):
        if consumer.transport.app.should_stop:
            consumer.log.info("Consumer shutting down.")
            return
        raise
    except Exception:
        consumer.log.exception("Drain messages raised")
        raise
    finally:
        consumer.diag.unset_flag(CONSUMER_FETCHING)


async def _deliver(consumer: Any, first: tuple[TP, Any], records: Any) -> None:
    """Deliver one ``getmany`` batch (``first``, then the rest of ``records``) as Faust's drain loop body does."""
    callback = consumer.callback
    read_offset = consumer._read_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    since_yield = 0
    try:
        async for tp, message in _chain(first, records):
            since_yield += 1
            if since_yield > _YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = read_offset[tp]
            if r_offset is None or offset >= r_offset:
                if offset - (r_offset or 0) > 1 and r_offset and acks_enabled_for(message.topic):
                    await consumer._add_gap(tp, r_offset + 1, offset)
                await callback(message)
                read_offset[tp] = offset
    finally:
        await records.aclose()


async def _chain(first: Any, rest: Any) -> Any:
    yield first
    async for item in rest:
        yield item


async def take_batches(stream: Any, max_: int, within: float) -> Any:
    """``stream.take_events(max_, within)`` without iterating the stream event by event.

    ``take_events`` moves each event into its buffer through the stream's iterator: an event-loop turn, a queue
    get, a processor and two sensor calls per event. Here the agent's channel queue is drained in bulk, and each
    event gets what that iterator gives it: one of an older consumer generation, or taken while flow is suspended
    (a rebalance), is skipped as Faust skips it; the others are tracked (``Consumer.track_message``: commits and
    rebalances wait for them) and reported to the stream sensor. A batch is yielded when full or ``within`` s after
    its first event, and acked after the agent's body returns, as ``take_events`` does; events taken but not yet
    yielded when the agent stops are not acked, so they are read again.
    """
    channel = aiter(stream.channel)  # registers the topic with the conductor, as take_events does
    queue = channel.queue
    app = stream.app
    # Faust empties every channel queue whenever flow resumes, also at the resume that follows the seek to the
    # committed offsets after a (re)assignment: events delivered in between, already marked read, would be dropped
    # and never fetched again (a commit stall; seen in tests/integration/test_guarantees_crash.py). The stream's own
    # iterator takes events one loop turn after they arrive, which keeps that window small; a bulk taker leaves them
    # queued longer. So this queue is not emptied on resume: stale events are skipped when taken (see _accept).
    app.flow_control._queues.discard(queue)
    loop = asyncio.get_running_loop()
    started = await stream.maybe_start()
    getter: asyncio.Future | None = None
    events: list[Any] = []
    try:
        while not stream.should_stop:
            deadline: float | None = None
            while len(events) < max_:
                if getter is not None and getter.done():  # it holds the oldest value: before anything queued
                    done, getter = getter, None
                    _accept(stream, app, done.result(), events)
                    continue
                if not queue.empty():
                    _accept(stream, app, queue.get_nowait(), events)
                    continue
                if events:
                    deadline = deadline if deadline is not None else loop.time() + within
                    if deadline <= loop.time():
                        break
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                await asyncio.wait((getter,), timeout=None if deadline is None else deadline - loop.time())
                if not getter.done():
                    break
                done, getter = getter, None
                _accept(stream, app, done.result(), events)
            if not events:
                continue
            batch, events = events, []
            stream.events_total += len(batch)
            try:
                yield batch
            finally:
                for event in batch:
                    await stream.ack(event)
    except StopAsyncIteration:  # thrown into the channel when the worker stops: the end, as for Faust's iterator
        return
    finally:  # events taken but never yielded stay unacked, as take_events leaves its buffer: never committed
        if getter is not None:
            getter.cancel()
        if started:  # as the stream's own iterator ends: an agent restarted on a rebalance starts it again
            await stream.stop()
            stream.service_reset()


def _accept(stream: Any, app: Any, value: Any, events: list[Any]) -> None:
    """What the stream's iterator does with one channel value before the agent sees it (streams.py)."""
    if not isinstance(value, EventT):
        raise TypeError(f"take_batches reads topic channels only, got {type(value).__name__}")
    message = value.message
    if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
        return  # neither tracked nor acked (as faust's compiled iterator leaves it): fetched again after the rebalance
    if message.topic in app.topics.acking_topics and not message.tracked:
        message.tracked = True
        app.consumer.track_message(message)
    stream._on_stream_event_in(message.tp, message.offset, stream, value)
    events.append(value)


class RawSchema(faust.Schema):
    """Keys and values as the raw bytes they arrived as, each message made an event without Faust's codecs.

    A raw topic's own schema decodes each key and value through the serializer registry (codec look-up,
    ``want_bytes``, a model "reconstruct" check) and reads ``app.conf.Event`` per message. Same bytes, same events.
    """

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, *, on_key_decode_error: Any = None, on_value_decode_error: Any = None,
                default_propagate: bool = False) -> Any:
        event = app.conf.Event

        async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:
            return event(app, message.key, message.value, message.headers, message)

        return decode
