"""Crash: ``kill -9`` at seeded random points during a replay, restarting each time, loses and doubles nothing.

The final state of every user (in the worker's RocksDB and in the table's changelog) must equal a computation
from scratch over the same events, and every user's latest recommendation must be for their last event.
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from models.data.synthetic import generate
from schemas.decode import encode
from stream.replay import interactions
from tests.integration.kafka_helpers import produce
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    assert_states_equal,
    await_recommendations,
    changelog_states,
    events_read,
    last_recommendations,
    read_user_states,
    reference_states,
    wait_until,
)

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
KILLS = 5
SEED = 20261123


def replay_events(n: int, seed: int) -> list:
    """``n`` interactions of 100 synthetic users (200 each on average), in time order."""
    log = generate(seed=seed, n_users=100, n_items=200, mean_events=250).sorted_by_time()
    events = list(interactions(log, id_prefix="crash"))[:n]
    assert len(events) == n, "the synthetic world is too small for this test"
    return events


@pytest.mark.timeout(600)
def test_kill_9_at_random_points_loses_and_doubles_nothing(broker, topic_prefix, tmp_path, checkpoint):
    spec = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state").create_topics()
    settings = spec.settings()
    events = replay_events(N_EVENTS, seed=SEED % 1000)
    produce(broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in events])
    rng = random.Random(SEED)
    for i in range(KILLS):
        worker = WorkerProcess(spec, tmp_path / f"worker-{i}.log")
        kill_after = rng.randint(1, 2000)  # events read by this incarnation (duplicates included)
        try:
            wait_until(lambda: events_read(worker.metrics_port) >= kill_after, 180,
                       f"incarnation {i} to read {kill_after} events", alive=[worker])
        finally:
            worker.stop(signal.SIGKILL)
    last_ids = {e.user_id: e.event_id for e in events}
    started = time.time()
    worker = WorkerProcess(spec, tmp_path / "worker-final.log")
    try:  # done when the last incarnation itself has served every user's last event (it re-reads some first)
        await_recommendations(broker.bootstrap, settings.recommendations_topic, last_ids, 240, alive=[worker],
                              since=started)
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]

    expected = reference_states(events)
    assert_states_equal(read_user_states(spec.data_dir), expected, "RocksDB after the last restart")
    assert_states_equal(changelog_states(broker.bootstrap, settings.app_id), expected, "the table's changelog")
    latest = last_recommendations(broker.bootstrap, settings.recommendations_topic)
    stale = {u: (latest[u].event_id if latest.get(u) else None, e) for u, e in last_ids.items()
             if latest.get(u) is None or latest[u].event_id != e}
    assert not stale, f"{len(stale)} users' latest list is not for their last event: {list(stale.items())[:3]}"
