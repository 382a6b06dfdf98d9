"""The whole pipe on a real broker: events in, per-user state in RocksDB, recommendations and dead letters out."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from models.data.synthetic import generate
from schemas.decode import decode_recommendation, encode
from schemas.records import HEADER_REASON, Interaction
from stream.replay import interactions
from stream.settings import Settings
from stream.topics import app_topic_specs, ensure_topics
from tests.integration.kafka_helpers import consume_until, headers_of, produce
from tests.integration.workers import WorkerProcess, WorkerSpec, read_user_states

pytestmark = pytest.mark.integration


def make_settings(bootstrap: str, prefix: str) -> Settings:
    return Settings(brokers=bootstrap, topic_prefix=prefix, app_id=f"{prefix}app")


def user_events(n_users: int, per_user: int, seed: int, id_prefix: str) -> dict[str, list[Interaction]]:
    """The first ``per_user`` events of the first ``n_users`` synthetic users who have that many."""
    log = generate(seed=seed, n_users=300, n_items=200, mean_events=20).sorted_by_time()
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for record in interactions(log, id_prefix=id_prefix):
        by_user[record.user_id].append(record)
    users = [u for u, evs in by_user.items() if len(evs) >= per_user][:n_users]
    assert len(users) == n_users, "the synthetic world has too few active users for this test"
    return {u: by_user[u][:per_user] for u in users}


def in_time_order(groups) -> list[Interaction]:
    return sorted((e for evs in groups for e in evs), key=lambda e: e.ts)


def events_for(n_users: int, per_user: int, seed: int, id_prefix: str) -> list[Interaction]:
    return in_time_order(user_events(n_users, per_user, seed, id_prefix).values())


def send(bootstrap: str, topic: str, events: list[Interaction]) -> None:
    produce(bootstrap, topic, [(e.user_id.encode(), encode(e)) for e in events])


def latest_recs(bootstrap: str, topic: str, last_ids: dict[str, str], worker: WorkerProcess,
                timeout_s: float = 90.0):
    """Consume recommendations until every user has one triggered by their last event (fails if the worker dies)."""
    pending = dict(last_ids)

    def done(msgs) -> bool:
        assert worker.alive(), f"the worker exited: {worker.log_text()[-2000:]}"
        for m in msgs[done.seen:]:
            if m.value() is not None:
                rec = decode_recommendation(m.value())
                if pending.get(rec.user_id) == rec.event_id:
                    del pending[rec.user_id]
        done.seen = len(msgs)
        return not pending

    done.seen = 0
    msgs = consume_until(bootstrap, [topic], done, timeout_s=timeout_s)
    assert not pending, f"{len(pending)} users never got a recommendation for their last event"
    return [decode_recommendation(m.value()) for m in msgs if m.value() is not None]


@pytest.fixture
def worker_spec(broker, topic_prefix, tmp_path, checkpoint) -> WorkerSpec:
    settings = make_settings(broker.bootstrap, topic_prefix)
    ensure_topics(settings.kafka_config(), app_topic_specs(settings))
    return WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state")


def test_every_user_gets_fresh_recommendations_without_seen_items(broker, worker_spec, tmp_path):
    settings = make_settings(broker.bootstrap, worker_spec.prefix)
    events = events_for(n_users=40, per_user=6, seed=3, id_prefix="a")
    worker = WorkerProcess(worker_spec, tmp_path / "worker.log")
    try:
        send(broker.bootstrap, settings.interactions_topic, events)
        last = {e.user_id: e.event_id for e in events}
        recs = latest_recs(broker.bootstrap, settings.recommendations_topic, last, worker)
    finally:
        worker.stop()
    position = {e.event_id: i for i, e in enumerate(events)}
    seen_before: dict[str, set[str]] = defaultdict(set)
    for rec in recs:
        assert rec.event_id in position, "each recommendation names the event that triggered it"
        trigger = position[rec.event_id]
        seen = {e.item_id for e in events[: trigger + 1] if e.user_id == rec.user_id}
        assert len(rec.items) == 10
        assert not seen & {s.item_id for s in rec.items}, f"{rec.user_id} was recommended an item they had seen"
        seen_before[rec.user_id] |= seen
    assert set(seen_before) == set(last)


def test_malformed_events_go_to_dead_letters_and_valid_ones_are_processed(broker, worker_spec, tmp_path):
    settings = make_settings(broker.bootstrap, worker_spec.prefix)
    valid = events_for(n_users=10, per_user=3, seed=4, id_prefix="v")
    base = {"kind": "interaction", "event_id": "bad", "user_id": "u-bad", "item_id": "x", "type": "click",
            "ts": 1_700_000_000.0}
    bad = [
        (b"u-bad", b"this is not json"),
        (b"u-bad", json.dumps({**base, "item_id": 12345}).encode()),
        (b"u-bad", json.dumps({**base, "type": "teleport"}).encode()),
        (b"u-bad", json.dumps({k: v for k, v in base.items() if k != "user_id"}).encode()),
        (b"u-bad", b"\xff\xfe\xfd"),
    ]
    records = [(e.user_id.encode(), encode(e)) for e in valid]
    mixed = records[:10] + bad[:2] + records[10:20] + bad[2:] + records[20:]
    worker = WorkerProcess(worker_spec, tmp_path / "worker.log")
    try:
        produce(broker.bootstrap, settings.interactions_topic, mixed)
        latest_recs(broker.bootstrap, settings.recommendations_topic, {e.user_id: e.event_id for e in valid}, worker)
        dead = consume_until(broker.bootstrap, [settings.dead_letters_topic], len(bad), timeout_s=30)
    finally:
        worker.stop()
    assert sorted(m.value() for m in dead) == sorted(v for _, v in bad), "original bytes are kept"
    by_payload = {m.value(): headers_of(m)[HEADER_REASON].decode() for m in dead}
    assert [by_payload[v] for _, v in bad] == ["not_json", "wrong_type", "invalid", "missing_field", "not_utf8"]


def test_state_survives_a_restart_and_no_event_is_counted_twice(broker, worker_spec, tmp_path):
    settings = make_settings(broker.bootstrap, worker_spec.prefix)
    per_user = user_events(n_users=20, per_user=14, seed=5, id_prefix="r")
    first = in_time_order(evs[:10] for evs in per_user.values())
    extra = in_time_order(evs[10:] for evs in per_user.values())
    worker = WorkerProcess(worker_spec, tmp_path / "worker-1.log")
    try:
        send(broker.bootstrap, settings.interactions_topic, first)
        latest_recs(broker.bootstrap, settings.recommendations_topic, {e.user_id: e.event_id for e in first}, worker)
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    # restart: the same events arrive again (a redelivery) followed by new ones
    worker = WorkerProcess(worker_spec, tmp_path / "worker-2.log")
    try:
        send(broker.bootstrap, settings.interactions_topic, first + extra)
        latest_recs(broker.bootstrap, settings.recommendations_topic, {e.user_id: e.event_id for e in extra}, worker)
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    states = read_user_states(worker_spec.data_dir)
    expected: dict[str, int] = defaultdict(int)
    for e in first + extra:
        expected[e.user_id] += 1
    assert {u: s.interactions for u, s in states.items()} == dict(expected)
    for user, state in states.items():
        assert state.last_event_id == [e for e in first + extra if e.user_id == user][-1].event_id
