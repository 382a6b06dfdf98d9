"""Crash: ``kill -9`` at seeded random points during a replay, restarting each time, loses and doubles nothing.

The final state of every user (in the worker's RocksDB and in the table's changelog) must equal a computation
from scratch over the same events, every user's latest recommendation must be for their last event, and every
event must be answered by a list (at-least-once output). A batch sends one list per user, for the user's latest
event in it, and the list names the first of the user's events it answers (``first_event_id``): the user's events
from there to ``event_id``, in produced order, were in that batch. So "every event has its list" is exact: each
event lies in the range of some list on the topic, from whichever incarnation, or a list was lost.

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
from schemas.decode import decode_recommendation, encode
from schemas.records import Interaction, Recommendation
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
    """The first ``n`` interactions of 100 synthetic users (~300 each: every seed's world has more than 20k)."""
    log = generate(seed=seed, n_users=100, n_items=200, mean_events=300).sorted_by_time()
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
                       progress=lambda w=worker: group_report(broker.bootstrap, settings.app_id,
                                                              settings.interactions_topic, [w]))
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
    lists = read_to_end(broker.bootstrap, settings.recommendations_topic)
    unanswered = unanswered_events([decode_recommendation(m.value()) for m in lists if m.value() is not None],
                                   events)
    assert not unanswered, f"{len(unanswered)} events have no list, e.g. {unanswered[:5]}"
    latest: dict[str, Recommendation] = {}
    kept: dict[str, Recommendation] = {}  # what a consumer keeps by the README's rule: the highest seq, ties later
    for rec in (decode_recommendation(m.value()) for m in lists if m.value() is not None):
        latest[rec.user_id] = rec
        if rec.user_id not in kept or rec.seq >= kept[rec.user_id].seq:
            kept[rec.user_id] = rec
    last_ids = {e.user_id: e.event_id for e in events}
    stale = {u: (latest[u].event_id if latest.get(u) else None, e) for u, e in last_ids.items()
             if latest.get(u) is None or latest[u].event_id != e}
    assert not stale, f"{len(stale)} users' latest list is not for their last event: {list(stale.items())[:3]}"
    wrong = {u: (kept[u].event_id, kept[u].seq) for u, e in last_ids.items() if kept[u].event_id != e}
    assert not wrong, f"keeping the highest seq kept a list for an older event: {list(wrong.items())[:3]}"


def unanswered_events(lists: list[Recommendation], events: list[Interaction]) -> list[str]:
    """The events no list answers: a list answers its user's events from ``first_event_id`` to ``event_id``, in
    the order they were produced (fails on a list whose range is not such a run)."""
    order: dict[str, list[str]] = {}
    for e in events:
        order.setdefault(e.user_id, []).append(e.event_id)
    position = {event_id: i for ids in order.values() for i, event_id in enumerate(ids)}
    answered: set[str] = set()
    for rec in lists:
        first, last = position[rec.first_event_id or rec.event_id], position[rec.event_id]
        assert first <= last, f"list {rec.seq} of {rec.user_id} answers {rec.first_event_id}..{rec.event_id}"
        answered.update(order[rec.user_id][first:last + 1])
    return [e.event_id for e in events if e.event_id not in answered]


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
