"""A poison event: the model fails on one user's request. The worker dead-letters that user's events of the
batch (reason ``model_error``), serves everyone else, keeps running (no exit, no restart loop), commits to the
end, and the user's next event is served from a state without the poison."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.decode import encode
from schemas.records import HEADER_REASON, HEADER_SOURCE_OFFSET, Interaction
from stream.broker import free_port
from tests.integration.kafka_helpers import consume_until, headers_of, produce
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    await_recommendations,
    committed_offsets,
    end_offsets,
    read_to_end,
    read_user_states,
    wait_until,
)

pytestmark = pytest.mark.integration

POISON = "poison-item"
POISONED_WORKER = f"""
from models.serving.recommender import Recommender
recommend = Recommender.recommend
def poisoned(self, requests, k, **kw):
    if any({POISON!r} in r.history for r in requests):
        raise RuntimeError("planted: this model cannot rank {POISON}")
    return recommend(self, requests, k, **kw)
Recommender.recommend = poisoned
from stream.cli import main
main()
"""
TS = 1_700_000_000.0


class PoisonedWorker(WorkerProcess):
    """A worker whose model raises for any user who has the planted item."""

    def __init__(self, spec: WorkerSpec, log_path: Path) -> None:
        self.metrics_port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-c", POISONED_WORKER, "worker"],
                                     env=spec.env(self.metrics_port), stdout=self._log, stderr=subprocess.STDOUT)


def click(user: str, n: int, item: str) -> Interaction:
    return Interaction(event_id=f"{user}-{n}", user_id=user, item_id=item, type="click", ts=TS + n)


@pytest.mark.timeout(300)
def test_a_poison_event_is_dead_lettered_and_never_stops_the_worker(broker, topic_prefix, tmp_path, checkpoint):
    spec = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state").create_topics()
    settings = spec.settings()
    users = [f"user-{k}" for k in range(12)]
    events = [click(u, n, f"i{(k * 7 + n) % 50}") for n in range(5) for k, u in enumerate(users)]
    victim = [click("victim", 0, "i1"), click("victim", 1, POISON), click("victim", 2, "i2")]
    batch = events[:30] + victim + events[30:]
    worker = PoisonedWorker(spec, tmp_path / "worker.log")
    try:
        produce(broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in batch])
        await_recommendations(broker.bootstrap, settings.recommendations_topic,
                              {u: f"{u}-4" for u in users}, 120, alive=[worker])
        consume_until(broker.bootstrap, settings.dead_letters_topic,
                      lambda msgs: any(m.value() == encode(victim[1]) for m in msgs), timeout_s=60)
        after = time.time()
        follow_up = click("victim", 3, "i3")
        produce(broker.bootstrap, settings.interactions_topic, [(b"victim", encode(follow_up))])
        await_recommendations(broker.bootstrap, settings.recommendations_topic, {"victim": "victim-3"}, 60,
                              alive=[worker], since=after)
        ends = end_offsets(read_to_end(broker.bootstrap, settings.interactions_topic))
        wait_until(lambda: committed_offsets(broker.bootstrap, settings.app_id, settings.interactions_topic,
                                             settings.partitions) == {p: ends.get(p, 0) for p in range(4)},
                   60, "every offset to be committed, the poison's too", alive=[worker])
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]

    dead = read_to_end(broker.bootstrap, settings.dead_letters_topic)
    reasons = {headers_of(m)[HEADER_SOURCE_OFFSET]: headers_of(m)[HEADER_REASON].decode() for m in dead}
    dead_values = {m.value() for m in dead}
    assert set(reasons.values()) == {"model_error"} and encode(victim[1]) in dead_values
    state = read_user_states(spec.data_dir)["victim"]
    assert POISON not in state.seen and "victim-3" in state.recent_ids
    applied = set(state.recent_ids)
    dead_ids = {e.event_id for e in victim if encode(e) in dead_values}
    assert applied | dead_ids == {e.event_id for e in victim} | {"victim-3"} and not applied & dead_ids, (
        "each of the victim's events is either in their state or dead-lettered, never both, never neither")
    text = worker.log_text()
    assert "exiting without committing" not in text and "model error for user 'victim'" in text
