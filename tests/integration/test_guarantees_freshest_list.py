"""The freshest list wins: an event sent again (as a producer may after a crash) gets a new list under the same
``event_id`` and ``event_ts``, and that list's ``seq`` is higher than any list the user had, also when the
worker serving it restored the user's state from the changelog. Consumers keep the highest ``seq``."""

from __future__ import annotations

import time

import pytest

from schemas.decode import decode_recommendation, encode
from schemas.records import Interaction
from tests.integration.kafka_helpers import produce
from tests.integration.workers import WorkerProcess, WorkerSpec, await_recommendations, read_to_end

pytestmark = pytest.mark.integration

TS = 1_700_000_000.0


@pytest.mark.timeout(300)
def test_a_re_sent_event_gets_a_list_with_a_higher_seq_after_a_restart_from_the_changelog(
        broker, topic_prefix, tmp_path, checkpoint):
    spec = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state-1").create_topics()
    settings = spec.settings()
    users = [f"user-{k}" for k in range(8)]
    events = [Interaction(event_id=f"{u}-{n}", user_id=u, item_id=f"i{(k + n * 3) % 40}", type="click",
                          ts=TS + 10 * n + k) for n in range(4) for k, u in enumerate(users)]
    last = {e.user_id: e for e in events}
    worker = WorkerProcess(spec, tmp_path / "worker-1.log")
    try:
        produce(broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in events])
        await_recommendations(broker.bootstrap, settings.recommendations_topic,
                              {u: e.event_id for u, e in last.items()}, 120, alive=[worker])
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    before = [decode_recommendation(m.value()) for m in read_to_end(broker.bootstrap, settings.recommendations_topic)]
    highest = {u: max(r.seq for r in before if r.user_id == u) for u in users}
    assert all(s >= 1 for s in highest.values())

    # a new worker with empty local state: it restores every user from the changelog, seq included
    restored = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state-2")
    worker = WorkerProcess(restored, tmp_path / "worker-2.log")
    try:
        since = time.time()
        produce(broker.bootstrap, settings.interactions_topic, [(u.encode(), encode(e)) for u, e in last.items()])
        recs = await_recommendations(broker.bootstrap, settings.recommendations_topic,
                                     {u: e.event_id for u, e in last.items()}, 120, alive=[worker], since=since)
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    for user, event in last.items():
        old = [r for r in before if r.user_id == user and r.event_id == event.event_id]
        new = [r for r in recs if r.user_id == user and r.event_id == event.event_id and r.produced_ts >= since]
        assert old and new, user
        assert new[-1].event_ts == old[-1].event_ts == event.ts, "same event id, same event time: no help"
        assert new[-1].seq > highest[user], f"{user}: seq {new[-1].seq} after {highest[user]}"
        freshest = max((r for r in before + recs if r.user_id == user), key=lambda r: r.seq)
        assert freshest == new[-1], "keeping the highest seq keeps the list sent last"
