"""The user stores keep one contract: the worker's (a real Faust RocksDB table, its changelog sent by our
producer) and the in-memory one the handler's tests use. No broker: the changelog producer records."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Iterator

import faust
import pytest
from faust.types import TP

from stream import faust_compat
from stream.user_store import MemoryUserStore, RocksUserStore, UserStore


@dataclass
class ChangelogRecorder:
    """The part of OutputProducer a store uses: produce, and the offsets acknowledged since the last call."""

    sent: list[tuple[str, bytes | None, bytes | None, int | None, bool]] = field(default_factory=list)
    acked: dict[tuple[str, int], int] = field(default_factory=dict)

    def produce(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None,
                partition: int | None = None, track: bool = False) -> None:
        self.sent.append((topic, key, value, partition, track))
        self.acked[(topic, partition)] = len(self.sent) - 1  # as if the broker acked it at this offset

    def take_acked(self) -> dict[tuple[str, int], int]:
        acked, self.acked = self.acked, {}
        return acked


@pytest.fixture
def faust_table(tmp_path) -> Iterator[Any]:
    """A real Faust users table on RocksDB, as stream/app.py declares it; nothing connects."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = faust.App("store-test", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path),
                    web_enabled=False, autodiscover=False)
    yield app.Table("users", key_type=bytes, value_type=bytes, partitions=4)
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(params=["memory", "rocksdb"])
def store(request) -> UserStore:
    if request.param == "memory":
        return MemoryUserStore()
    return RocksUserStore(request.getfixturevalue("faust_table"), ChangelogRecorder())


def test_a_store_keeps_values_per_partition_and_key(store):
    assert store.get(1, b"u") is None
    store.put(1, b"u", b"state-1")
    store.put(2, b"u", b"other")
    assert store.get(1, b"u") == b"state-1" and store.get(2, b"u") == b"other"
    store.put(1, b"u", b"state-2")
    assert store.get(1, b"u") == b"state-2"
    store.delete(1, b"u")
    assert store.get(1, b"u") is None and store.get(2, b"u") == b"other"
    store.delete(3, b"never")  # deleting what is not there is fine
    store.persist_offsets()


def test_the_rocksdb_store_writes_faust_s_partitions_and_changelog(faust_table):
    """Faust's recovery reads the changelog into these same partition databases: bytes must match, writes and
    deletes must reach the changelog's partition, and the persisted offset is what recovery starts from."""
    output = ChangelogRecorder()
    store = RocksUserStore(faust_table, output)
    store.put(3, b"u", b"v")
    store.delete(3, b"w")
    assert faust_compat.partition_db(faust_table, 3).get(b"u") == b"v"
    topic = "store-test-users-changelog"
    assert store.changelog_topic == topic
    assert output.sent == [(topic, b"u", b"v", 3, True), (topic, b"w", None, 3, True)]
    store.persist_offsets()
    assert faust_table.data.persisted_offset(TP(topic, 3)) == 1
    assert output.acked == {}, "each acked offset is persisted once"


def test_the_memory_store_counts_what_was_made_durable():
    store = MemoryUserStore()
    store.put(0, b"a", b"1")
    store.delete(0, b"b")
    assert store.unpersisted == 2 and store.persisted == 0
    store.persist_offsets()
    assert store.unpersisted == 0 and store.persisted == 1
