"""The one place metarec reaches into Faust's internals (this package), and why.

1. Faust tables pick the RocksDB partition and the changelog partition of a write from the *current event*, a
   context variable that the stream sets while an agent iterates event by event; inside a batching agent
   (``Stream.take_events``) it is unset or stale. So the worker does not write through ``table[key]``: the
   users table is read and written partition by partition (point 4), through :func:`partition_db`.

2. Faust's table recovery reads a changelog partition up to the high watermark that a ListOffsets request
   reports, then stops. The embedded broker (Tansu) reports the base offset of the partition's last record
   batch plus one there, not the end: when that batch held several records, recovery would stop early and the
   newest states in the tail would be lost on a restart or a takeover. A Fetch response carries the true high
   watermark on every broker, so :func:`use_real_highwaters` gives the app a consumer whose ``highwaters``
   reads the last batch of each partition to the end of the partition (a few records; one on Apache Kafka,
   where the two agree) and reports where that is.

   Recovery also lost changelog records the consumer had fetched, on any broker (bench/soak.py lost events this
   way, issue 17). Faust "pauses" a partition by leaving it out of the set of active partitions it hands to
   aiokafka's ``Fetcher.fetched_records``; aiokafka goes on fetching it in the background. That set is Faust's
   live ``_active_partitions``, read on the consumer thread while the main loop changes it, and aiokafka takes
   an empty set for "every partition". When the active partitions' recovery ends (Faust pauses them: the set is
   empty) while a fetch is waiting for records, and the standby partitions were just sought but not resumed
   yet, aiokafka hands over the standby records it prefetched, moving their positions, and Faust drops them as
   not active. Nothing fetches them again: the standby's first records are missing (a hole of one fetch, up to
   1 MB per partition), the standby persists offsets past them as it applies the next ones, and a worker that
   later takes the partition over restores only from there and serves its users from states without those
   writes, overwriting newer states with older ones. :func:`fetch_only_active_partitions` hands aiokafka a copy
   of the active set taken when the fetch is asked for, and asks nothing when it is empty.

   A smaller window of the same kind: each resume of the app's flow control
   clears every queue made with ``clear_on_resume``, the tables' changelog queue among them, and Faust's
   recovery resumes the flow again after a standby partition started fetching (``Recovery._restart_recovery``
   resumes the standbys, then ``on_recovery_completed`` resumes the flow once more). The clear drops the standby
   records waiting in the queue; the consumer has moved past them and never fetches them again, and the standby
   takes the next record it sees as progress and persists its offset: the same hole. (Found by reading the code,
   shown by tests/unit/stream/test_faust_pins.py; the soak's traces did not catch it in the act.)
   :func:`keep_changelog_records` leaves the changelog queue alone on a resume of a flow that was not
   suspended; a revocation still clears it (it suspends the flow first, and the next assignment seeks every
   changelog partition back to what its store holds).

3. Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``, fixed. Apache Kafka answers a waiting
   Fetch as soon as data arrives, so the value is harmless there; the embedded broker holds an empty Fetch for
   the whole wait even when records arrive meanwhile, so an event waited ~0.4 s on average (up to 1.5 s) before
   the worker even saw it (bench/fetch_wait.py: p50 360 ms at 1500, 3.5 ms at 10). The same consumer class sets the
   wait from Settings (``fetch_max_wait_ms``).

4. The users store (stream/user_store.py) reads and writes the users table's RocksDB partitions directly
   (:func:`partition_db`), reports to Faust's table sensors (:func:`table_sensors`) and sends its changelog
   through the worker's librdkafka producer (stream/output.py), one persisted-offset write per partition and
   batch (:func:`persist_offset`). Faust's own ``table[key] = value`` costs ~0.4 ms of event-loop CPU per
   write with its send (an aiokafka send with its futures, and a RocksDB write of the persisted offset per
   message: bench/faust_ceiling.py ``table``). The bytes are the ones Faust would write (the table's keys and
   values are raw bytes), so Faust's recovery, standbys and rebalancing work on them unchanged.

5. The commit watch (stream/commit_watch.py) reads the consumer's offset bookkeeping
   (:func:`commit_bookkeeping`, :func:`unacked_offsets`) for its report of a stalled partition.

6. Faust commits a partition up to the first offset it has not seen acked (``Consumer._new_offset``), walking
   its acked offsets from the committed one. An offset the broker never had (the embedded broker leaves such
   gaps) is acked by nobody: without a gap record for it, a missing offset right after the committed one is
   stepped over silently and two or more stall the partition's commit until a restart. The worker knows better:
   it finishes batches in order, so it records per partition how far everything is done
   (stream/finished_offsets.py), and :func:`commit_finished_offsets` makes the consumer commit exactly that.

7. The read API (stream/read_api.py) routes a request to the worker that owns the user's partition, as
   Faust's ``@app.table_route`` does, but from the partition itself (:func:`owner_url`): ``table_route``
   finds it by hashing the key with Faust's own producer's partitioner (murmur2), while producers of
   ``interactions`` may use another (stream/partitioning.py), and it needs that producer's metadata of the
   changelog topic, which metarec's producer (stream/output.py) never asks Faust for. The owner comes from the
   same place Faust's router reads (the partition assignor's table metadata, ``app.router.table_metadata``),
   and the request is forwarded with Faust's HTTP client (:func:`forward`), as ``Router.route_req`` does (or
   with a session of the web thread's own loop, when the web server runs in a thread: ``web_in_thread``).

8. Throughput levers: Faust's per-event steps done per batch (:func:`use_batch_delivery`, :func:`take_batches`,
   :class:`RawSchema`) and sensors that only count per event (:func:`use_lean_sensors`); each measured by
   bench/faust_levers.py (bench/results/faust-ceiling.json), each Faust function it copies pinned by
   tests/unit/stream/test_faust_levers.py.

Each use is pinned by tests/unit/stream/test_faust_pins.py (and test_faust_levers.py), which fail when a faust-streaming upgrade changes
what it relies on.
"""

from stream.faust_compat.batches import RawSchema, take_batches, use_batch_delivery
from stream.faust_compat.commits import commit_bookkeeping, commit_finished_offsets, unacked_offsets
from stream.faust_compat.consumer import (
    END_PROBE_TIMEOUT_S,
    fetch_only_active_partitions,
    keep_changelog_records,
    real_end_offsets,
    use_real_highwaters,
)
from stream.faust_compat.sensors import sync_prometheus, use_lean_sensors
from stream.faust_compat.tables import changelog_topic_name, partition_db, persist_offset, table_sensors
from stream.faust_compat.web import forward, is_this_worker, on_web_cleanup, owner_url

__all__ = [
    "END_PROBE_TIMEOUT_S", "RawSchema", "changelog_topic_name", "commit_bookkeeping", "commit_finished_offsets",
    "fetch_only_active_partitions", "forward", "is_this_worker", "keep_changelog_records", "on_web_cleanup",
    "owner_url", "partition_db", "persist_offset", "real_end_offsets", "sync_prometheus", "table_sensors",
    "take_batches", "unacked_offsets", "use_batch_delivery", "use_lean_sensors", "use_real_highwaters",
]
