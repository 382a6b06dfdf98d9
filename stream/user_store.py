"""Where user state lives between batches: one interface; RocksDB + changelog in the worker, memory in tests.

The handler (stream/handler.py) needs four things of a store: read a user's state bytes, write them, delete
them, and, once the batch's outputs are flushed, make the writes durable for recovery. Keys and values are the
raw bytes the pipeline encodes; a store never looks inside them. Every call names the source partition, since
state is partitioned like the ``interactions`` topic that feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from stream import faust_compat
from stream.output import OutputProducer


class UserStore(Protocol):
    """Per-user state bytes by partition and key."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...

    def delete(self, partition: int, key: bytes) -> None: ...

    def persist_offsets(self) -> None:
        """After the batch's outputs were flushed: record how far the durable copy of the writes reaches."""
        ...


class RocksUserStore:
    """The users Faust table: its RocksDB partitions read and written directly, its changelog sent by
    ``output``.


    Writes are durable once :meth:`OutputProducer.flush` returned; :meth:`persist_offsets` then records, per
    changelog partition, the offset the local RocksDB is up to, which is what Faust's recovery starts from.
    Why not ``table[key] = value``: stream/faust_compat.py, point 4.
    """

    def __init__(self, table: Any, output: OutputProducer) -> None:
        self._table = table
        self._output = output
        self.changelog_topic = faust_compat.changelog_topic_name(table)
        self._sensors = faust_compat.table_sensors(table)

    def get(self, partition: int, key: bytes) -> bytes | None:
        self._sensors.on_table_get(self._table, key)  # what Faust's own table reports (the dashboard's panel)
        return faust_compat.partition_db(self._table, partition).get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        """Write the key in the partition's RocksDB and queue its changelog record."""
        faust_compat.partition_db(self._table, partition).put(key, value)
        self._sensors.on_table_set(self._table, key, value)
        self._output.produce(self.changelog_topic, key, value, partition=partition, track=True)

    def delete(self, partition: int, key: bytes) -> None:
        """Delete the key from the partition's RocksDB and queue its changelog tombstone."""
        faust_compat.partition_db(self._table, partition).delete(key)
        self._sensors.on_table_del(self._table, key)
        self._output.produce(self.changelog_topic, key, None, partition=partition, track=True)

    def persist_offsets(self) -> None:
        """After a flush: remember the last acknowledged changelog offset of each partition written."""
        for (topic, partition), offset in self._output.take_acked().items():
            faust_compat.persist_offset(self._table, topic, partition, offset)


@dataclass
class MemoryUserStore:
    """A store in a dict, for tests: what is stored, and how often the writes were made durable."""

    data: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    persisted: int = 0  # persist_offsets calls
    unpersisted: int = 0  # writes and deletes since the last persist_offsets

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get((partition, key))

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.data[(partition, key)] = value
        self.unpersisted += 1

    def delete(self, partition: int, key: bytes) -> None:
        self.data.pop((partition, key), None)
        self.unpersisted += 1

    def persist_offsets(self) -> None:
        self.persisted += 1
        self.unpersisted = 0
