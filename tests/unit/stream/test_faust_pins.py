"""Pins on the Faust internals metarec relies on (stream/faust_compat.py is the only module touching them).

Each test fails when a faust-streaming (or aiokafka) upgrade renames, removes or reshapes one of them, so an
upgrade is a red test here rather than a silent wrong answer in production. No broker: the objects are built
by Faust itself and never connect.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any, Callable, Iterator
from weakref import WeakSet

import aiokafka
import faust
import faust.streams
import pytest
from aiokafka.consumer.fetcher import Fetcher
from faust.sensors.base import SensorDelegate
from faust.stores.rocksdb import Store as RocksStore
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent

from stream import faust_compat
from stream.finished_offsets import FinishedOffsets


def params(fn: Callable) -> list[str]:
    return list(inspect.signature(fn).parameters)


@pytest.fixture
def app(tmp_path) -> Iterator[faust.App]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield faust.App("pins", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path),
                    web_enabled=False, autodiscover=False)
    asyncio.set_event_loop(None)
    loop.close()


# --- the users table (stream/user_store.py via faust_compat, point 4) ---------------------------------------
def test_a_table_partition_s_rocksdb_is_reachable_and_shared_with_faust(app):
    assert params(RocksStore._db_for_partition) == ["self", "partition"]
    table = app.Table("users", key_type=bytes, value_type=bytes, partitions=2)
    assert isinstance(table.data, RocksStore)
    db = faust_compat.partition_db(table, 1)
    for method in ("get", "put", "delete"):
        assert callable(getattr(db, method))
    db.put(b"k", b"v")
    assert table.data._db_for_partition(1).get(b"k") == b"v", "the same database Faust's recovery writes"


def test_the_persisted_offset_is_what_faust_s_recovery_reads(app):
    assert params(RocksStore.set_persisted_offset) == ["self", "tp", "offset"]
    table = app.Table("users", key_type=bytes, value_type=bytes, partitions=2)
    topic = faust_compat.changelog_topic_name(table)
    assert topic == "pins-users-changelog"
    faust_compat.persist_offset(table, topic, 1, 41)
    assert table.data.persisted_offset(TP(topic, 1)) == 41


def test_table_sensors_take_the_table_and_key(app):
    table = app.Table("users", key_type=bytes, value_type=bytes, partitions=2)
    sensors = faust_compat.table_sensors(table)
    assert isinstance(sensors, SensorDelegate)
    assert params(SensorDelegate.on_table_get) == ["self", "table", "key"]
    assert params(SensorDelegate.on_table_set) == ["self", "table", "key", "value"]
    assert params(SensorDelegate.on_table_del) == ["self", "table", "key"]


# --- the commit bookkeeping (stream/commit_watch.py via faust_compat, point 5) ------------------------------
def test_faust_commits_from_the_fields_the_commit_watch_reads():
    source = inspect.getsource(FaustConsumer._new_offset)
    assert "self._acked[tp]" in source and "self._gap[tp]" in source
    init = inspect.getsource(FaustConsumer.__init__)
    for name in ("_acked", "_gap", "_read_offset", "_committed_offset", "_unacked_messages"):
        assert f"self.{name}" in init, name


def test_the_commit_bookkeeping_reads_a_real_consumer_without_changing_it(app):
    consumer: Any = app.consumer
    assert isinstance(consumer, FaustConsumer)
    for name in ("_acked", "_gap", "_read_offset", "_committed_offset"):
        assert isinstance(getattr(consumer, name), defaultdict), name
    assert isinstance(consumer._unacked_messages, WeakSet)
    tp, quiet = TP("t", 0), TP("t", 1)
    consumer._acked[tp].extend([12, 11])
    consumer._gap[tp].addi(8, 10)
    consumer._read_offset[tp] = 12
    consumer._committed_offset[tp] = 7
    assert faust_compat.commit_bookkeeping(consumer, tp) == (7, 12, [12, 11], [(8, 10)])
    assert faust_compat.commit_bookkeeping(consumer, quiet) == (None, None, [], [])
    assert faust_compat.unacked_offsets(consumer, quiet) == []
    for name in ("_acked", "_gap", "_read_offset", "_committed_offset"):
        assert quiet not in getattr(consumer, name), f"reading created an entry in {name}"
    assert isinstance(consumer._gap[tp], IntervalTree)


# --- the commit rule (faust_compat point 6) -----------------------------------------------------------------
def test_faust_s_own_commit_rule_stalls_behind_two_missing_offsets_and_steps_over_one(app):
    """What faust-streaming 0.15.3 does, and why metarec does not commit by it (issue 17).

    Committed 251 (the next offset to read). Offsets 251 and 252 never acked (the broker has no such messages,
    or they never reached the streams) and no gap record covering them: no new offset, however often it is
    asked. Only 251 missing: the commit steps over it without a word.
    """
    consumer: Any = app.consumer
    stalled, skipped = TP("t", 3), TP("t", 2)
    consumer._committed_offset[stalled] = 251
    consumer._acked[stalled].extend([253, 254, 255])
    for _ in range(3):
        assert consumer._new_offset(stalled) is None
    assert consumer._acked[stalled] == [253, 254, 255], "nothing is consumed: it stays stuck"
    consumer._committed_offset[skipped] = 251
    consumer._acked[skipped].extend([252, 253])
    assert consumer._new_offset(skipped) == 254, "251 was never acked, yet it is committed past"


def test_the_commit_path_asks_the_methods_metarec_replaces():
    assert params(FaustConsumer._new_offset) == ["self", "tp"]
    assert params(FaustConsumer._filter_tps_with_pending_acks) == ["self", "topics"]
    assert params(FaustConsumer.on_partitions_revoked) == ["self", "revoked"]
    assert "self._filter_tps_with_pending_acks(topics)" in inspect.getsource(FaustConsumer.force_commit)
    source = inspect.getsource(FaustConsumer._filter_committable_offsets)
    assert "self._new_offset(tp)" in source and "self._should_commit(tp, offset)" in source
    revoke = inspect.getsource(FaustConsumer.on_partitions_revoked)
    assert revoke.index("self._committed_offset.pop") < revoke.index("self._on_partitions_revoked"), (
        "the app's revoke handler (which waits for the streams and commits) runs after the bookkeeping is "
        "dropped, so a revoked partition's finished offsets are still committed")


def test_commits_follow_the_finished_offsets_whatever_faust_acked(app):
    finished = FinishedOffsets(["t"])
    faust_compat.commit_finished_offsets(app, finished)
    consumer: Any = app.consumer
    stalled, skipped, other = TP("t", 3), TP("t", 2), TP("other", 0)
    sent: list[dict] = []

    async def commit(offsets):
        sent.append(dict(offsets))
        return True

    async def flush():
        return None

    consumer._commit = commit
    consumer.assignment = lambda: {stalled, skipped, other}
    consumer.app.producer.flush = flush
    consumer._committed_offset[stalled] = 251
    consumer._acked[stalled].extend([253, 254, 255])  # Faust alone would stall here
    consumer._committed_offset[skipped] = 251
    consumer._acked[skipped].extend([252, 253])  # and step over 251 here
    consumer._committed_offset[other] = 10
    consumer._acked[other].extend([10, 11])  # not ours: Faust's rule
    finished.finish({stalled: 255, skipped: 250})

    assert asyncio.run(consumer.commit()) is True
    assert sent == [{stalled: 256, other: 12}], "251 of partition 2 is not finished: it stays uncommitted"
    assert consumer._acked[stalled] == [] and not consumer._acked_index[stalled]
    finished.finish({skipped: 253})
    sent.clear()
    asyncio.run(consumer.commit())
    assert sent == [{skipped: 254}]
    asyncio.run(consumer.commit())
    assert sent == [{skipped: 254}], "nothing new finished: nothing sent"


def test_a_revoked_partition_is_forgotten_after_faust_let_go_of_it(app):
    finished = FinishedOffsets(["t"])
    faust_compat.commit_finished_offsets(app, finished)
    consumer: Any = app.consumer
    kept, revoked = TP("t", 0), TP("t", 1)
    finished.finish({kept: 5, revoked: 9})
    seen: list[int | None] = []

    async def on_revoked(tps):  # the app's handler: it commits while the partition is still ours
        seen.append(finished.next_offset(revoked))

    consumer._on_partitions_revoked = on_revoked
    asyncio.run(consumer.on_partitions_revoked({revoked}))
    assert seen == [10]
    assert finished.next_offset(revoked) is None and finished.next_offset(kept) == 6


# --- the consumer the app runs (faust_compat points 2 and 3) ------------------------------------------------
def test_the_consumer_class_and_its_thread_factory_can_be_replaced():
    assert params(faust_aiokafka.Consumer._new_consumer_thread) == ["self"]
    assert params(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer) == ["self", "transport"]
    assert params(faust_aiokafka.Consumer.highwaters) == ["self", "partitions"]
    assert "self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start), (
        "aiokafka must build its Fetcher from the attribute faust_compat sets")


# --- changelog records fetched during recovery (faust_compat point 2) ---------------------------------------
def test_faust_resumes_the_flow_again_after_the_standby_partitions_started_fetching():
    """The order that lost standby records in the soak (issue 17): standby partitions resumed, then the flow
    resumed once more when recovery completes; each resume clears the queues made with ``clear_on_resume``."""
    restart = inspect.getsource(Recovery._restart_recovery.fun)
    standbys = restart.index("T(consumer.resume_partitions)(standby_tps)")
    assert restart.index("T(self.app.flow_control.resume)()", standbys) < restart.index(
        "self.on_recovery_completed", standbys)
    assert "self.app.flow_control.resume()" in inspect.getsource(Recovery.on_recovery_completed)
    assert "self.clear()" in inspect.getsource(FlowControlEvent.resume)


def test_faust_hands_aiokafka_its_live_active_set_and_drops_records_of_other_partitions(app):
    """The race that lost the standby's first records in the soak (issue 17, faust_compat point 2)."""
    consumer: Any = app.consumer
    assert consumer._get_active_partitions() is consumer._active_partitions, "the live set, not a copy"
    wait = inspect.getsource(FaustConsumer._wait_next_records)
    assert "active_partitions = self._get_active_partitions()" in wait
    assert "active_partitions=active_partitions" in wait
    assert "tp in active_partitions" in inspect.getsource(FaustConsumer.getmany), "others are dropped"
    assert "if partitions and tp not in partitions:" in inspect.getsource(Fetcher.fetched_records), (
        "aiokafka hands over every partition's records when the set is empty")
    restart = inspect.getsource(Recovery._restart_recovery.fun)
    done = restart.index("T(consumer.pause_partitions)(active_tps)")  # the active set empties here
    seek = restart.index("consumer, standby_tps, standby_offsets", done)  # standbys sought: aiokafka prefetches
    assert done < seek < restart.index("T(consumer.resume_partitions)(standby_tps)", seek)


def test_the_consumer_fetches_a_copy_of_the_active_partitions_and_nothing_when_none_are(app):
    faust_compat.fetch_only_active_partitions(app)
    consumer: Any = app.consumer
    asked: list[Any] = []

    class Thread:  # what the consumer thread was asked for (no broker here)
        async def getmany(self, active_partitions: Any, timeout: float) -> dict:
            asked.append(active_partitions)
            return {"records": active_partitions}

    consumer._thread = Thread()
    live = {TP("t", 0), TP("t", 1)}
    records = asyncio.run(consumer._getmany(live, 1.0))
    live.clear()  # paused on the main loop while the thread waits for records
    assert asked == [frozenset({TP("t", 0), TP("t", 1)})] and records["records"] == asked[0]
    assert asyncio.run(consumer._getmany(live, 1.0)) == {} and len(asked) == 1, "empty: nothing is fetched"
    asyncio.run(consumer._getmany(None, 1.0))
    assert asked[-1] is None, "a client-only app still reads every partition"


def _changelog_record(offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=TP("pins-users-changelog", 0), offset=offset))


def test_faust_alone_drops_fetched_changelog_records_when_a_flowing_app_resumes(app):
    queue = app.tables.changelog_queue
    assert queue in app.flow_control._queues, "the changelog queue is cleared on every resume"
    app.flow_control.resume()  # recovery started reading: the flow is active
    queue.put_nowait(_changelog_record(7))  # a standby record the consumer handed over
    app.flow_control.resume()  # on_recovery_completed
    assert queue.empty(), "Faust's behaviour: the record is gone and the consumer has moved past it"


def test_a_flowing_app_keeps_fetched_changelog_records_on_resume(app):
    faust_compat.keep_changelog_records(app)
    queue, flow = app.tables.changelog_queue, app.flow_control
    agent_queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)
    flow.resume()
    queue.put_nowait(_changelog_record(7))
    agent_queue.put_nowait("record fetched before the stream partitions were sought")
    flow.resume()
    assert [queue.get_nowait().message.offset] == [7], "kept for the standby to apply"
    assert agent_queue.empty(), "agents' queues are still cleared on every resume"
    assert flow.is_active()

    queue.put_nowait(_changelog_record(8))
    flow.suspend()  # a revocation: suspend, then clear
    flow.clear()
    assert queue.empty(), "a revocation drops them: the next assignment seeks back to what the store holds"
    queue.put_nowait(_changelog_record(9))
    flow.resume()  # the first resume after a suspension clears, as in Faust
    assert queue.empty() and flow.is_active()


# --- the current event (bench/faust_ceiling.py, Faust's own table path) -------------------------------------
def test_the_current_event_is_a_context_variable_holding_a_weak_reference():
    assert isinstance(faust.streams._current_event, ContextVar)
    assert "_current_event.get" in inspect.getsource(faust.streams.current_event)
