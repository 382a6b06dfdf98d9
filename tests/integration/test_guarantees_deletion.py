"""Deletion: a user-deletion event removes the user's state (table and changelog) and their last list.

Users in ``gone`` are deleted and never come back: their last recommendation is a tombstone, and their RocksDB
key and last changelog record hold only a deletion marker (nothing of the user but the fact, so the read API
can answer 404). Users in ``back`` are deleted and then act once more: their state holds only that event, and
their new list is exactly what the model gives for a state holding only that event (the same pure request the
worker builds, run in the test), so no part of the deleted history can have shaped it.
"""

from __future__ import annotations

import pytest

from models.data.synthetic import generate
from models.serving.recommender import Recommender
from schemas.decode import encode
from schemas.records import Interaction, UserDeletion
from stream import versions
from stream.pipeline import adapt_request
from stream.replay import interactions
from stream.state import UserState, decode_state, is_deleted
from tests.integration.kafka_helpers import produce
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    assert_states_equal,
    await_recommendations,
    changelog_topic,
    last_by_key,
    last_recommendations,
    read_to_end,
    read_user_states,
    reference_states,
    wait_until,
)

pytestmark = pytest.mark.integration

TS = 1_700_100_000.0


def histories(n_users: int, per_user: int) -> dict[str, list[Interaction]]:
    log = generate(seed=23, n_users=200, n_items=200, mean_events=20).sorted_by_time()
    by_user: dict[str, list[Interaction]] = {}
    for e in interactions(log, id_prefix="del"):
        by_user.setdefault(e.user_id, []).append(e)
    users = [u for u, evs in by_user.items() if len(evs) >= per_user][:n_users]
    assert len(users) == n_users
    return {u: by_user[u][:per_user] for u in users}


def is_marker(state: UserState) -> bool:
    """A deletion marker: the deletion's time and source offsets, nothing of what the user did."""
    return is_deleted(state) and state == UserState(deleted_ts=state.deleted_ts, offsets=state.offsets)


def tombstoned(bootstrap: str, topic: str, users: set[str]) -> bool:
    """Every one of ``users`` has a tombstone as their latest record on ``topic``."""
    last = last_by_key(read_to_end(bootstrap, topic))
    return all(u in last and last[u] is None for u in users)


@pytest.mark.timeout(300)
def test_deletion_forgets_the_user_everywhere(broker, topic_prefix, tmp_path, checkpoint_without_context):
    checkpoint = checkpoint_without_context  # the last check recomputes lists: they must depend on state alone
    spec = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state").create_topics()
    settings = spec.settings()
    history = histories(n_users=12, per_user=8)
    users = sorted(history)
    gone, back, kept = set(users[:4]), set(users[4:8]), set(users[8:])
    first = sorted((e for evs in history.values() for e in evs), key=lambda e: e.ts)
    deletions = [UserDeletion(event_id=f"del-{u}", user_id=u, ts=TS) for u in sorted(gone | back)]
    item = first[0].item_id
    again = [Interaction(event_id=f"again-{u}", user_id=u, item_id=item, type="click", ts=TS + 1)
             for u in sorted(back)]
    rec_topic, send = settings.recommendations_topic, lambda evs: produce(
        broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in evs])

    worker = WorkerProcess(spec, tmp_path / "worker.log")
    try:
        send(first)
        await_recommendations(broker.bootstrap, rec_topic, {e.user_id: e.event_id for e in first}, 120,
                              alive=[worker])
        send(deletions)
        wait_until(lambda: tombstoned(broker.bootstrap, rec_topic, gone | back), 120,
                   "tombstones for the deleted users' lists", alive=[worker])
        send(again)
        await_recommendations(broker.bootstrap, rec_topic, {e.user_id: e.event_id for e in again}, 120,
                              alive=[worker])
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]

    # the table: gone users only a marker, returning users hold only their new event, the others untouched
    expected = reference_states([e for e in first if e.user_id in kept] + again)
    stored = read_user_states(spec.data_dir)
    assert all(is_marker(stored[u]) for u in gone), "a deleted user's state is a marker and nothing else"
    assert_states_equal({u: s for u, s in stored.items() if u not in gone}, expected, "RocksDB")
    changelog = read_to_end(broker.bootstrap, changelog_topic(settings.app_id))
    last = last_by_key(changelog)
    assert all(is_marker(decode_state(last[u])) for u in gone), "a deleted user's last changelog record"
    for u in back:
        values = [decode_state(m.value()) for m in changelog if m.key().decode() == u]
        assert any(is_marker(v) for v in values[:-1]) and not is_deleted(values[-1]), (
            f"{u}: old state, the marker, then the new state")

    # the output: gone users' last record is a tombstone; returning users got the list of their new state alone
    latest = last_recommendations(broker.bootstrap, rec_topic)
    assert all(latest[u] is None for u in gone)
    assert all(latest[u] is not None and latest[u].event_id == f"again-{u}" for u in back)
    model = Recommender.load(versions.resolve(checkpoint))
    for u in back:
        (want,) = model.recommend([adapt_request(u, expected[u], model.config.objective)], settings.top_k)
        assert [s.item_id for s in latest[u].items] == want.items, (
            f"{u}'s list after deletion is not the list of their new state alone: the old history leaked")
        assert [s.score for s in latest[u].items] == pytest.approx(want.scores, rel=1e-4, abs=1e-5)
