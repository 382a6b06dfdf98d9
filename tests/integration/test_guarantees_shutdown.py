"""Shutdown: SIGTERM mid-replay commits offsets and flushes state and output; nothing is half-written.

Right after the worker exits (status 0), the committed offsets and the state agree exactly: every user's state in
RocksDB and in the changelog is the from-scratch state over the events before the committed offsets, no more and
no less, and each of those users has a list for their last committed event. A restart then finishes the replay
without counting anything twice.
"""

from __future__ import annotations

import signal
import time

import pytest

from models.data.synthetic import generate
from schemas.decode import decode_user_event, encode
from stream.replay import interactions
from tests.integration.kafka_helpers import produce
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    assert_states_equal,
    await_recommendations,
    changelog_states,
    committed_offsets,
    events_read,
    last_recommendations,
    read_to_end,
    read_user_states,
    reference_states,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_sigterm_mid_replay_leaves_offsets_state_and_output_in_step(broker, topic_prefix, tmp_path,
                                                                     checkpoint):
    spec = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state").create_topics()
    settings = spec.settings()
    # Enough events that the worker cannot finish them between the signal and its stop: the batch path drains
    # what it has fetched (up to a few thousand) before it ends.
    log = generate(seed=31, n_users=240, n_items=200, mean_events=100).sorted_by_time()
    events = list(interactions(log, id_prefix="sd"))[:24000]
    produce(broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in events])
    stored = read_to_end(broker.bootstrap, settings.interactions_topic)  # where each event landed
    assert len(stored) == len(events)

    worker = WorkerProcess(spec, tmp_path / "worker-1.log")
    try:
        wait_until(lambda: events_read(worker.metrics_port) >= 1500, 120, "the replay to be under way",
                   alive=[worker])
    finally:
        code = worker.stop(signal.SIGTERM)
    assert code == 0, worker.log_text()[-3000:]

    done = committed_offsets(broker.bootstrap, settings.app_id, settings.interactions_topic, settings.partitions)
    prefix = [decode_user_event(m.value()) for m in sorted(stored, key=lambda m: (m.partition(), m.offset()))
              if m.offset() < done[m.partition()]]
    assert 0 < len(prefix) < len(events), f"stopped mid-replay: {len(prefix)} of {len(events)} committed"
    expected = reference_states(prefix)
    assert_states_equal(read_user_states(spec.data_dir), expected, "RocksDB after SIGTERM")
    assert_states_equal(changelog_states(broker.bootstrap, settings.app_id), expected, "changelog after SIGTERM")
    latest = last_recommendations(broker.bootstrap, settings.recommendations_topic)
    last = {e.user_id: e.event_id for e in prefix}
    missing = [u for u, e in last.items() if latest.get(u) is None or latest[u].event_id != e]
    assert not missing, f"{len(missing)} users lack a list for their last committed event"

    seen = {e.event_id for e in prefix}
    rest = {e.user_id: e.event_id for e in events if e.event_id not in seen}  # last events still to be read
    started = time.time()
    worker = WorkerProcess(spec, tmp_path / "worker-2.log")
    try:
        await_recommendations(broker.bootstrap, settings.recommendations_topic, rest, 180, alive=[worker],
                              since=started)
    finally:
        assert worker.stop(signal.SIGTERM) == 0, worker.log_text()[-3000:]
    assert_states_equal(read_user_states(spec.data_dir), reference_states(events), "RocksDB after the restart")
    latest = last_recommendations(broker.bootstrap, settings.recommendations_topic)
    last = {e.user_id: e.event_id for e in events}
    served = {u: latest[u].event_id for u in last if latest.get(u)}
    assert served == last, "each user's latest list is for their last event"
