"""Which partition of ``interactions`` a user's events land in: what the read API needs to find their state.

A worker keeps a user's state in the partition their events arrived on, so it never has to know how producers
chose it. The read API does: a request for a user must reach the worker that owns that partition. Producers
choose by hashing the key (the user id's UTF-8 bytes), and clients differ in the hash:

- ``consistent``: CRC-32 of the key modulo the partition count, librdkafka's default partitioner
  (``consistent_random`` for non-empty keys): confluent-kafka, kcat, metarec's own producers;
- ``murmur2``: the Java client's default (positive murmur2 modulo the count), also kafka-python's and aiokafka's.

``METAREC_KEY_PARTITIONER`` says which one the producers use (librdkafka clients can be set to ``murmur2_random``
to match Java ones).
"""

from __future__ import annotations

import zlib

from aiokafka.partitioner import murmur2


def key_partition(key: bytes, partitions: int, partitioner: str = "consistent") -> int:
    """The partition a producer using ``partitioner`` sends a record keyed ``key`` to."""
    if partitions < 1:
        raise ValueError(f"need at least one partition, got {partitions}")
    if partitioner == "consistent":
        return zlib.crc32(key) % partitions
    if partitioner == "murmur2":
        return (murmur2(key) & 0x7FFFFFFF) % partitions
    raise ValueError(f"unknown partitioner {partitioner!r} (consistent or murmur2)")
