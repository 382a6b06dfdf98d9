"""The users table read and written partition by partition (point 4).

Why each reach into Faust is needed: the package docstring (stream/faust_compat/__init__.py)."""

from __future__ import annotations

from typing import Any

from faust.types import TP


# --- 4. the users table, partition by partition ------------------------------------------------------------
def partition_db(table: Any, partition: int) -> Any:
    """The RocksDB database (a ``rocksdict.Rdict``) of ``table``'s ``partition``.

    Looked up on every call: Faust closes and reopens partitions' databases on rebalances.
    """
    return table.data._db_for_partition(partition)


def table_sensors(table: Any) -> Any:
    """Faust's sensors, which report table reads and writes (``on_table_get/set/del(table, key, ...)``)."""
    return table.app.sensors


def changelog_topic_name(table: Any) -> str:
    return table.changelog_topic.get_topic_name()


def persist_offset(table: Any, topic: str, partition: int, offset: int) -> None:
    """Record that the local RocksDB holds the changelog up to ``offset``: where Faust's recovery starts."""
    table.data.set_persisted_offset(TP(topic, partition), offset)
