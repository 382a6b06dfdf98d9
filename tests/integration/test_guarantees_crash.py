"""Crash: ``kill -9`` at seeded random points during a replay, restarting each time, loses and doubles nothing.

The final state of every user (in the worker's RocksDB and in the table's changelog) must equal a computation
from scratch over the same events, and every user's latest recommendation must be for their last event.

The seed is ``CRASH_SEED`` from the environment (default below), so a loop over seeds is a shell loop:
``for s in $(seq 20); do CRASH_SEED=$s pytest tests/integration/test_guarantees_crash.py -k kill_9; done``.
A wait that times out says where the group stood (tests/integration/group_report.py).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest

from models.data.synthetic import generate
from schemas.decode import encode
from stream.app import EXIT_BATCH_FAILED
from stream.broker import free_port
from stream.replay import interactions
from tests.integration.group_report import group_report
from tests.integration.kafka_helpers import produce
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    assert_states_equal,
    changelog_states,
    committed_offsets,
    end_offsets,
    events_read,
    last_recommendations,
    read_to_end,
    read_user_states,
    reference_states,
    wait_until,
)

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
KILLS = 5
SEED = int(os.environ.get("CRASH_SEED", "20261123"))


def replay_events(n: int, seed: int) -> list:
    """``n`` interactions of 100 synthetic users (200 each on average), in time order."""
    log = generate(seed=seed, n_users=100, n_items=200, mean_events=250).sorted_by_time()
    events = list(interactions(log, id_prefix="crash"))[:n]
    assert len(events) == n, "the synthetic world is too small for this test"
    return events


@pytest.mark.timeout(900)
def test_kill_9_at_random_points_loses_and_doubles_nothing(broker, topic_prefix, tmp_path, checkpoint):
    # Batches of up to 50 ms of events (the default is 5 ms): more is in flight, uncommitted, at each kill.
    spec = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state",
                      extra_env={"METAREC_TAKE_WITHIN_S": "0.05"}).create_topics()
    settings = spec.settings()
    events = replay_events(N_EVENTS, seed=SEED % 1000)
    produce(broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in events])
    rng = random.Random(SEED)
    for i in range(KILLS):
        worker = WorkerProcess(spec, tmp_path / f"worker-{i}.log")
        kill_after = rng.randint(1, 1000)  # events read by this incarnation (duplicates included)
        try:
            wait_until(lambda: events_read(worker.metrics_port) >= kill_after, 180,
                       f"incarnation {i} to read {kill_after} events (seed {SEED})", alive=[worker],
                       progress=lambda: group_report(broker.bootstrap, settings.app_id, settings.interactions_topic,
                                                     [worker]))
        finally:
            worker.stop(signal.SIGKILL)
    ends = end_offsets(read_to_end(broker.bootstrap, settings.interactions_topic))

    def done() -> dict[int, int]:
        return committed_offsets(broker.bootstrap, settings.app_id, settings.interactions_topic, settings.partitions)

    worker = WorkerProcess(spec, tmp_path / "worker-final.log")
    try:  # done when the last incarnation has committed the whole topic
        wait_until(lambda: done() == ends, 420, f"the replay to be committed up to {ends} (seed {SEED})",
                   alive=[worker], progress=lambda: group_report(broker.bootstrap, settings.app_id,
                                                                 settings.interactions_topic, [worker]))
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]

    expected = reference_states(events)
    assert_states_equal(read_user_states(spec.data_dir), expected, "RocksDB after the last restart")
    assert_states_equal(changelog_states(broker.bootstrap, settings.app_id), expected, "the table's changelog")
    latest = last_recommendations(broker.bootstrap, settings.recommendations_topic)
    last_ids = {e.user_id: e.event_id for e in events}
    stale = {u: (latest[u].event_id if latest.get(u) else None, e) for u, e in last_ids.items()
             if latest.get(u) is None or latest[u].event_id != e}
    assert not stale, f"{len(stale)} users' latest list is not for their last event: {list(stale.items())[:3]}"


FAILING_WORKER = """
import stream.handler
async def broken(self, flight):
    raise RuntimeError("planted failure")
stream.handler.BatchHandler.finish = broken
from stream.cli import main
main()
"""


@pytest.mark.timeout(180)
def test_a_batch_that_fails_is_never_committed(broker, topic_prefix, tmp_path, checkpoint):
    """A batch whose processing raises stops the worker at once (status 70) without committing its offsets.

    Raising out of the agent instead would let ``take_events`` ack the batch and the next commit skip it.
    """
    spec = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state").create_topics()
    settings = spec.settings()
    events = replay_events(200, seed=5)
    produce(broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in events])
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as out:
        proc = subprocess.run([sys.executable, "-c", FAILING_WORKER, "worker"], env=spec.env(free_port()),
                              stdout=out, stderr=subprocess.STDOUT, timeout=150)
    text = log_path.read_text(errors="replace")
    assert proc.returncode == EXIT_BATCH_FAILED, text[-3000:]
    assert "exiting without committing it" in text and "planted failure" in text
    done = committed_offsets(broker.bootstrap, settings.app_id, settings.interactions_topic, settings.partitions)
    assert done == {p: 0 for p in range(settings.partitions)}, f"offsets were committed: {done}"
