"""Takeover: two workers in one group; one is killed, the survivor restores its partitions and loses nothing.

Then the killed worker comes back with its stale RocksDB and takes partitions back: it must read the changelog
tail the survivor wrote meanwhile (on the embedded broker the tail is exactly what a high watermark taken from
ListOffsets hides; see stream/faust_compat.py). Then the survivor is killed in turn and the returned worker
takes everything over. Every user gets new events after each takeover, so each user's final state was built on
top of whatever each recovery restored: the changelog must equal a from-scratch computation.

While both workers share the partitions, half the users are idle: their latest state was written before the
worker that takes their partition over next started its standby replica of it, so that worker holds the state
only if its standby kept every record it fetched. Faust dropped a standby's first fetch when the recovery of
the active partitions ended with a fetch under way (stream/faust_compat.py, point 2), and the standby's next
records moved its persisted offset past the hole for good. That race is timing-bound: each of the two joins
below gives it a chance (without the fix, the joining worker's standby lost its first fetch in most runs).
"""

from __future__ import annotations

import signal

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
    reference_states,
    wait_until,
)

pytestmark = pytest.mark.integration

PHASES = 5
IDLE = {1: 1, 3: 0}  # phase -> the half of the users (index % 2) that sits it out


def phased_events(n_phases: int, seed: int, idle: dict[int, int] = IDLE) -> list[list]:
    """Synthetic interactions cut into ``n_phases`` consecutive parts, each with events for every user but the
    half ``idle`` names for that phase (their part of it moves to the next phase)."""
    log = generate(seed=seed, n_users=60, n_items=200, mean_events=100).sorted_by_time()
    events = list(interactions(log, id_prefix="tk"))
    by_user: dict[str, list] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    users = [u for u, evs in by_user.items() if len(evs) >= 2 * n_phases]
    phases: list[list] = [[] for _ in range(n_phases)]
    for k, u in enumerate(users):  # each user's history split into n consecutive chunks, one per phase
        evs = by_user[u]
        for i in range(n_phases):
            chunk = evs[i * len(evs) // n_phases:(i + 1) * len(evs) // n_phases]
            phases[i + 1 if idle.get(i) == k % 2 else i].extend(chunk)
    return [sorted(p, key=lambda e: e.ts) for p in phases]


def recoveries(worker: WorkerProcess) -> int:
    """How many times the worker finished a rebalance (Faust logs "Worker ready" after each recovery)."""
    return worker.log_text().count("Worker ready")


def await_rebalance(joining: WorkerProcess, staying: WorkerProcess, alive: list[WorkerProcess]) -> None:
    """Wait until ``joining`` has its first assignment and ``staying`` finished the rebalance it caused."""
    before = recoveries(staying)
    wait_until(lambda: recoveries(joining) >= 1 and recoveries(staying) > before, 120,
               "the group to rebalance onto both workers", alive=alive)


def last_ids(events: list) -> dict[str, str]:
    return {e.user_id: e.event_id for e in events}


@pytest.mark.timeout(600)
def test_survivor_takes_over_and_the_killed_worker_comes_back(broker, topic_prefix, tmp_path, checkpoint):
    spec_a = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "a").create_topics()
    spec_b = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "b")
    settings = spec_a.settings()
    phases = phased_events(PHASES, seed=17)
    sent: list = []

    def run_phase(i: int, alive: list[WorkerProcess]) -> None:
        records = [(e.user_id.encode(), encode(e)) for e in phases[i]]
        produce(broker.bootstrap, settings.interactions_topic, records)
        sent.extend(phases[i])
        await_recommendations(broker.bootstrap, settings.recommendations_topic, last_ids(phases[i]), 180,
                              alive=alive)

    a = WorkerProcess(spec_a, tmp_path / "a-1.log")
    b = None
    try:
        run_phase(0, [a])  # A alone
        b = WorkerProcess(spec_b, tmp_path / "b-1.log")
        await_rebalance(joining=b, staying=a, alive=[a, b])
        run_phase(1, [a, b])  # the partitions are shared (B restored A's state for its share); half idle
        assert events_read(b.metrics_port) > 0, "B never got partitions; there would be nothing to take over"
        a.stop(signal.SIGKILL)
        run_phase(2, [b])  # B alone: it took A's partitions over, the idle users' states from its standby
        a = WorkerProcess(spec_a, tmp_path / "a-2.log")
        await_rebalance(joining=a, staying=b, alive=[a, b])
        run_phase(3, [a, b])  # A is back with a stale RocksDB for the partitions it takes back; the other half idle
        assert events_read(a.metrics_port) > 0, "A never took partitions back"
        b.stop(signal.SIGKILL)
        run_phase(4, [a])  # A alone: it took B's partitions over, the idle users' states from its standby
    finally:
        codes = [w.stop() for w in (a, b) if w is not None]
    assert codes[0] == 0, a.log_text()[-2000:]
    assert_states_equal(changelog_states(broker.bootstrap, settings.app_id), reference_states(sent),
                        "the table's changelog")
