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
from typing import Any, Callable, Iterator
from weakref import WeakSet

import aiokafka
import faust
import faust.streams
import pytest
from faust.sensors.base import SensorDelegate
from faust.stores.rocksdb import Store as RocksStore
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree

from stream import faust_compat


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


# --- the consumer the app runs (faust_compat points 2 and 3) ------------------------------------------------
def test_the_consumer_class_and_its_thread_factory_can_be_replaced():
    assert params(faust_aiokafka.Consumer._new_consumer_thread) == ["self"]
    assert params(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer) == ["self", "transport"]
    assert params(faust_aiokafka.Consumer.highwaters) == ["self", "partitions"]
    assert "self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start), (
        "aiokafka must build its Fetcher from the attribute faust_compat sets")


# --- the current event (bench/faust_ceiling.py, Faust's own table path) -------------------------------------
def test_the_current_event_is_a_context_variable_holding_a_weak_reference():
    assert isinstance(faust.streams._current_event, ContextVar)
    assert "_current_event.get" in inspect.getsource(faust.streams.current_event)
