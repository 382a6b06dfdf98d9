"""The throughput levers of stream/faust_compat/: what they do, and the Faust internals they rely on.

Each lever replaces a Faust step with a batched copy of it. If faust-streaming changes the step that was copied,
the copy may silently miss what the new version does (an ack, a sensor, a rebalance check): the source pins below
then fail, and the copy must be reviewed against the new code before its hash is updated.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import defaultdict
from contextlib import suppress
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.sensors import Monitor
from faust.sensors.prometheus import PrometheusMonitor
from faust.streams import Stream
from faust.transport.consumer import Consumer
from faust.types import TP, ConsumerMessage, Message
from prometheus_client import CollectorRegistry, generate_latest

from stream import faust_compat
from stream.metrics import Metrics, consumer_lag, install_app_metrics

# Faust code each lever copies or replaces (sha256 of the source, first 12 hex digits; faust-streaming 0.15.3).
PINNED = {
    "Consumer._drain_messages": (Consumer._drain_messages, "44a2500309e8"),  # use_batch_delivery copies it
    "Consumer.track_message": (Consumer.track_message, "217d7f1399a4"),  # take_batches calls it per event
    "Stream._py_aiter": (Stream._py_aiter, "3a48ee257a65"),  # take_batches does its per-event steps
    "Stream.take_events": (Stream.take_events, "607d48aead11"),  # take_batches keeps its contract
    "Stream.ack": (Stream.ack, "32d7171a89b0"),
    "Schema.compile": (faust.Schema.compile, "d46eec5ce319"),  # RawSchema.compile replaces it
    "Monitor.on_message_in": (Monitor.on_message_in, "b2a9a9045b2f"),  # the lean hooks replace these
    "Monitor.on_stream_event_in": (Monitor.on_stream_event_in, "df6d2e5f6397"),
    "Monitor.on_stream_event_out": (Monitor.on_stream_event_out, "2d2277a6dbda"),
    "Monitor.on_message_out": (Monitor.on_message_out, "7c4054247cde"),
    "PrometheusMonitor.on_message_in": (PrometheusMonitor.on_message_in, "ca24793cbc41"),
    "PrometheusMonitor.on_stream_event_in": (PrometheusMonitor.on_stream_event_in, "f59240943367"),
    "PrometheusMonitor.on_stream_event_out": (PrometheusMonitor.on_stream_event_out, "8dce2fcf2016"),
    "PrometheusMonitor.on_message_out": (PrometheusMonitor.on_message_out, "347089e00334"),
    "PrometheusMonitor.track_tp_end_offset": (PrometheusMonitor.track_tp_end_offset, "85f7fca946f5"),
    "PrometheusMonitor.on_table_get": (PrometheusMonitor.on_table_get, "cc6b84a3bb0a"),
}
CYTHON_ITERATOR = Path(faust.__file__).parent / "_cython" / "streams.pyx"  # what Stream._c_aiter runs per event
CYTHON_ITERATOR_SHA = "0041622f4a25"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_faust_code_a_lever_copies_is_the_one_it_was_copied_from(name: str):
    fun, pinned = PINNED[name]
    assert _sha(inspect.getsource(fun)) == pinned, (
        f"faust-streaming changed {name}: review the lever in stream/faust_compat/ against it, then update "
        f"its hash here")


def test_the_compiled_stream_iterator_is_the_one_take_batches_mirrors():
    assert _sha(CYTHON_ITERATOR.read_text()) == CYTHON_ITERATOR_SHA, (
        "faust-streaming changed its compiled stream iterator (faust/_cython/streams.pyx): review take_batches")


# --- take_batches ------------------------------------------------------------------------------------------------
def _app() -> faust.App:
    return faust.App("levers-unit", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
                     autodiscover=False)


def _event(app: faust.App, channel: Any, offset: int, generation: int | None = None) -> Any:
    """A consumed message's event, as the conductor hands it to the agent's channel."""
    message = ConsumerMessage("in", 0, offset, 0.0, 0, None, f"k{offset}".encode(), b"v", None,
                              generation_id=app.consumer_generation_id if generation is None else generation)
    return app.create_event(message.key, message.value, message.headers, message)


async def _take(app: faust.App, offsets_gen: list[tuple[int, int | None]], max_: int, within: float,
                expect: int) -> tuple[list[list[int]], list[Any], Any]:
    """Events at ``offsets_gen`` (offset, generation: None for the current one) through take_batches until
    ``expect`` were yielded (0: until the channel is empty); the batches' offsets, the events, the consumer."""
    topic = app.topic("in", schema=faust_compat.RawSchema())
    app.topics.acking_topics.add("in")
    channel = aiter(topic)  # an iterating channel: the stream takes from this one's queue
    stream = app.stream(channel)
    events = [_event(app, channel, offset, gen) for offset, gen in offsets_gen]
    for event in events:
        channel.queue.put_nowait(event)
    batches: list[list[int]] = []
    held: list[bool] = []
    takes = faust_compat.take_batches(stream, max_, within)
    if expect:
        async for batch in takes:
            batches.append([e.message.offset for e in batch])
            held.append(all(e.message in app.consumer.unacked and not e.message.acked for e in batch))
            if sum(map(len, batches)) >= expect:
                break
    else:
        task = asyncio.ensure_future(anext(takes))
        while not channel.queue.empty():
            await asyncio.sleep(0)  # one event-loop turn: the generator drains the queue
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    await takes.aclose()
    assert all(held), "a yielded event is tracked (pending ack) and not acked while the agent holds it"
    return batches, events, app.consumer


def test_take_batches_yields_full_batches_then_the_rest_within_the_window_and_acks_after_the_body():
    app = _app()
    app.flow_control.resume()
    batches, events, consumer = asyncio.run(_take(app, [(i, None) for i in range(7)], max_=3, within=0.01,
                                                  expect=7))
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(e.message.acked for e in events), "each batch is acked once the agent's body returned"
    assert not consumer.unacked


def test_events_of_an_old_generation_or_taken_while_flow_is_suspended_are_skipped_untracked_and_unacked():
    app = _app()
    app.flow_control.resume()
    stale = app.consumer_generation_id - 1
    batches, events, consumer = asyncio.run(_take(app, [(0, None), (1, stale), (2, None)], max_=10, within=0.01,
                                                  expect=2))
    assert batches == [[0, 2]]
    assert not events[1].message.tracked and not events[1].message.acked
    assert events[1].message not in consumer.unacked

    app = _app()  # flow suspended (a rebalance under way): nothing is taken
    assert not app.flow_control.is_active()
    batches, events, consumer = asyncio.run(_take(app, [(0, None), (1, None)], max_=10, within=0.01,
                                                  expect=0))
    assert batches == [] and not any(e.message.tracked or e.message.acked for e in events)


def test_events_taken_but_not_yet_yielded_when_the_agent_stops_are_not_acked():
    """Acking them would let the final commit skip events that never reached state (the shutdown guarantee)."""

    async def run() -> tuple[list[Any], Any]:
        app = _app()
        app.flow_control.resume()
        app.topics.acking_topics.add("in")
        channel = aiter(app.topic("in", schema=faust_compat.RawSchema()))
        stream = app.stream(channel)
        events = [_event(app, channel, offset) for offset in range(3)]
        for event in events:
            channel.queue.put_nowait(event)
        takes = faust_compat.take_batches(stream, 10, 30.0)  # a long window: the batch is still being filled
        task = asyncio.ensure_future(anext(takes))
        while not all(e.message.tracked for e in events):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return events, app.consumer

    events, consumer = asyncio.run(run())
    assert all(e.message.tracked and not e.message.acked for e in events)
    assert all(e.message in consumer.unacked for e in events)


def test_an_event_held_by_the_pending_get_is_taken_before_the_events_queued_after_it():
    """A batch yielded on its window leaves a get pending; what it takes arrives first (a swap made the later
    event apply first and the earlier one count as a redelivered duplicate: lost, seen in bench/scaling.py)."""

    async def run() -> tuple[list[int], list[int]]:
        app = _app()
        app.flow_control.resume()
        app.topics.acking_topics.add("in")
        channel = aiter(app.topic("in", schema=faust_compat.RawSchema()))
        stream = app.stream(channel)
        events = [_event(app, channel, offset) for offset in range(4)]
        takes = faust_compat.take_batches(stream, 10, 0.01)
        channel.queue.put_nowait(events[0])
        first = await anext(takes)  # yielded when its window closed, with a get left waiting
        for event in events[1:]:
            channel.queue.put_nowait(event)
        while channel.queue.qsize() == 3:
            await asyncio.sleep(0)  # one event-loop turn: the waiting get takes event 1
        second = await anext(takes)
        await takes.aclose()
        return [e.message.offset for e in first], [e.message.offset for e in second]

    assert asyncio.run(run()) == ([0], [1, 2, 3])


# --- batch delivery -------------------------------------------------------------------------------------------
class FakeConsumer:
    """What ``_drain_batches`` uses of a Faust consumer, recording what it delivers."""

    consumer_stopped_errors = (RuntimeError,)

    def __init__(self, batches: list[list[tuple[TP, Any]]], commit_every: int | None = None,
                 suspend_at: int | None = None) -> None:
        self._batches = batches
        self._stopped = asyncio.Event()
        self.suspend_flow = asyncio.Event()
        self.delivered: list[int] = []
        self.gaps: list[tuple[TP, int, int]] = []
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)  # as Faust's
        self._commit_every, self._n_acked, self.commits = commit_every, 0, 0
        self._suspend_at = suspend_at
        self.should_stop = False
        self.app = self.transport = self
        self.topics = self
        self.diag = self
        self.log = self

    # the parts of app, topics, diag, log it uses
    def acks_enabled_for(self, topic: str) -> bool:
        return True

    def set_flag(self, flag: str) -> None: ...

    def unset_flag(self, flag: str) -> None: ...

    def info(self, *args: Any) -> None: ...

    def exception(self, *args: Any) -> None: ...

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def getmany(self, timeout: float) -> Any:
        if not self._batches:
            self._stopped.set()
            return
        for item in self._batches.pop(0):
            yield item

    async def callback(self, message: Any) -> None:
        if self._suspend_at is not None and message.offset == self._suspend_at:
            self.suspend_flow.set()
            await asyncio.Event().wait()  # blocks, as a delivery does while flow is suspended
        self.delivered.append(message.offset)
        self._n_acked += 1

    async def commit(self) -> None:
        self.commits += 1

    async def _add_gap(self, tp: TP, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def wait_first(self, *coros: Any) -> None:
        futures = [asyncio.ensure_future(c if inspect.isawaitable(c) else c.wait()) for c in coros]
        try:
            done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                future.result()  # mode's wait_first propagates a failed delivery
        finally:
            for future in futures:
                future.cancel()


def _msgs(tp: TP, offsets: list[int]) -> list[tuple[TP, Any]]:
    return [(tp, Message(tp.topic, tp.partition, o, 0.0, 0, None, b"k", b"v", None)) for o in offsets]


def _drain(consumer: FakeConsumer) -> None:
    async def run() -> None:
        consumer._stopped = asyncio.Event()
        await faust_compat.batches._drain_batches(consumer, type("F", (), {"_stopped": asyncio.Event()})())

    asyncio.run(run())


def test_batch_delivery_delivers_every_message_in_order_and_keeps_read_offsets_and_gaps():
    tp = TP("in", 0)
    consumer = FakeConsumer([_msgs(tp, [0, 1, 2]), _msgs(tp, [1, 5, 6])], commit_every=4)
    _drain(consumer)
    assert consumer.delivered == [0, 1, 2, 5, 6], "an offset below the last one read is dropped, as Faust drops it"
    assert consumer._read_offset[tp] == 6
    assert consumer.gaps == [(tp, 3, 5)]
    assert consumer.commits == 0, "commits come before a batch once broker_commit_every acks are pending"
    consumer = FakeConsumer([_msgs(tp, [0, 1, 2, 3, 4]), _msgs(tp, [5])], commit_every=4)
    _drain(consumer)
    assert consumer.commits == 1


def test_a_rebalance_cancels_the_rest_of_the_batch_where_the_delivery_blocked():
    tp = TP("in", 0)
    consumer = FakeConsumer([_msgs(tp, [0, 1, 2, 3])], suspend_at=2)
    _drain(consumer)
    assert consumer.delivered == [0, 1]
    assert consumer._read_offset[tp] == 1, "the undelivered messages are not marked read"


def test_batch_delivery_replaces_the_drain_loop_of_the_apps_consumer():
    app = _app()
    faust_compat.use_real_highwaters(app, {})
    faust_compat.use_batch_delivery(app)
    assert issubclass(app.transport.Consumer, Consumer)
    assert app.transport.Consumer._drain_messages is not Consumer._drain_messages
    assert inspect.signature(Consumer._drain_messages).parameters.keys() == {"self", "fetcher"}


# --- raw events -----------------------------------------------------------------------------------------------
def test_raw_schema_makes_the_same_event_as_fausts_raw_topic():
    app = _app()
    message = Message("in", 3, 9, 1.5, 0, [("h", b"1")], b"user-1", b"\x81\xa1a\x01", None)
    ours = asyncio.run(app.topic("in", schema=faust_compat.RawSchema()).decode(message))
    theirs = asyncio.run(app.topic("in", key_serializer="raw", value_serializer="raw").decode(message))
    assert type(ours) is type(theirs)
    assert (ours.key, ours.value, ours.headers, ours.message) == (theirs.key, theirs.value, theirs.headers,
                                                                   theirs.message)


# --- lean sensors ---------------------------------------------------------------------------------------------
def test_lean_sensors_keep_the_figures_metarec_reads_and_export_them_on_sync():
    app = _app()
    metrics = Metrics(CollectorRegistry())
    install_app_metrics(app, metrics, ["in"])
    faust_compat.use_lean_sensors(app)
    monitor = app.monitor
    assert isinstance(monitor, PrometheusMonitor) and type(monitor).__name__ == "LeanPrometheusMonitor"
    tp = TP("in", 1)
    message = Message("in", 1, 0, 0.0, 0, None, b"k", b"v", None)
    for offset in range(5):
        monitor.on_message_in(tp, offset, message)
        assert monitor.on_stream_event_in(tp, offset, None, None) is None
    monitor.on_message_out(tp, 4, message)
    monitor.track_tp_end_offset(tp, 9)
    table = app.Table("users")
    monitor.on_table_get(table, b"k")
    monitor.on_table_set(table, b"k", b"v")
    faust_compat.sync_prometheus(monitor)
    faust_compat.sync_prometheus(monitor)  # counters grow by what was counted since the last copy, not again

    text = generate_latest(metrics.registry).decode()
    for line in ("faust_messages_received_total 5.0", 'faust_messages_received_per_topic_total{topic="in"} 5.0',
                 'faust_topic_partition_end_offset{partition="1",topic="in"} 9.0', "faust_active_messages 4.0",
                 'faust_table_operations_total{operation="keys_retrieved",table="table.users"} 1.0',
                 'faust_table_operations_total{operation="keys_updated",table="table.users"} 1.0'):
        assert line in text, line

    class Assigned:
        def assignment(self) -> set[TP]:
            return {tp}

        def highwater(self, tp: TP) -> int:
            return 9

    assert consumer_lag(Assigned(), monitor, ["in"]) == {("in", 1): 4}, "the lag reads the lean read offsets"


def test_lean_sensors_on_a_rebalance_forget_the_partitions_as_the_prometheus_monitor_does():
    app = _app()
    install_app_metrics(app, Metrics(CollectorRegistry()), ["in"])
    faust_compat.use_lean_sensors(app)
    app.monitor.on_message_in(TP("in", 0), 3, Message("in", 0, 3, 0.0, 0, None, b"k", b"v", None))
    app.monitor.on_rebalance_start(app)
    assert not app.monitor.tp_read_offsets


def test_lean_sensors_on_fausts_own_monitor_add_no_timer():
    app = _app()
    tasks = len(app._app_tasks)
    faust_compat.use_lean_sensors(app)
    assert type(app.monitor).__name__ == "LeanMonitor" and len(app._app_tasks) == tasks
    app.monitor.on_message_in(TP("in", 0), 3, Message("in", 0, 3, 0.0, 0, None, b"k", b"v", None))
    assert app.monitor.tp_read_offsets == {TP("in", 0): 3} and app.monitor.messages_received_total == 1


def test_take_batches_ends_when_the_worker_stops_its_channel():
    """Faust throws StopAsyncIteration into the agent's channel on stop; its own iterator ends on it, quietly."""

    async def run() -> list[list[int]]:
        app = _app()
        app.flow_control.resume()
        channel = aiter(app.topic("in", schema=faust_compat.RawSchema()))
        channel.queue.put_nowait(_event(app, channel, 0))
        batches = []
        async for batch in faust_compat.take_batches(app.stream(channel), 10, 0.01):
            batches.append([e.message.offset for e in batch])
            await channel.throw(StopAsyncIteration())
        return batches

    assert asyncio.run(run()) == [[0]]
