"""Real metarec worker processes for the integration tests, and the checks the guarantee tests share.

Starting, watching and stopping workers, reading topics to their true end and computing the expected state
from scratch live in ``bench/`` (the soak benchmark does the same checks); this module adds what only the
tests need: a worker built from a :class:`WorkerSpec`, assertions, and waiting for recommendations.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Consumer

from bench.ground_truth import (  # noqa: F401 - the tests import these from here
    changelog_states,
    changelog_topic,
    committed_offsets,
    differing_users,
    end_offsets,
    last_by_key,
    read_to_end,
    read_user_states,
    reference_states,
)
from bench.worker_process import WorkerRun, WorkerSpec, events_read, wait_until  # noqa: F401
from bench.worker_process import scrape_samples as scrape  # noqa: F401 - {(name, labels): value}
from schemas.decode import decode_recommendation
from schemas.records import Recommendation
from stream.broker import free_port
from stream.state import UserState


class WorkerProcess(WorkerRun):
    """The worker a :class:`WorkerSpec` describes, on a free metrics port, with its log in ``log_path``."""

    def __init__(self, spec: WorkerSpec, log_path: Path) -> None:
        port = free_port()
        super().__init__(spec.env(port), log_path, cwd=None, metrics_port=port)


def assert_states_equal(actual: dict[str, UserState], expected: dict[str, UserState], where: str) -> None:
    """Same users, and for each the same counts, support set, seen items and remembered ids."""
    assert set(actual) == set(expected), (
        f"{where}: users missing {sorted(set(expected) - set(actual))[:5]}, "
        f"unexpected {sorted(set(actual) - set(expected))[:5]}")
    wrong = differing_users(actual, expected)
    detail = [(u, actual[u].interactions, expected[u].interactions) for u in wrong[:5]]
    assert not wrong, f"{where}: {len(wrong)} users differ (user, counted, expected): {detail}"


def last_recommendations(bootstrap: str, topic: str) -> dict[str, Recommendation | None]:
    """Each user's latest recommendation on ``topic`` (None where the latest record is a tombstone)."""
    last = last_by_key(read_to_end(bootstrap, topic))
    return {user: None if value is None else decode_recommendation(value) for user, value in last.items()}


def await_recommendations(bootstrap: str, topic: str, wanted: dict[str, str], timeout_s: float,
                          alive: Sequence[WorkerRun] = (), since: float = 0.0) -> list[Recommendation]:
    """Consume ``topic`` from the start until each user in ``wanted`` got a list for event ``wanted[user]``.

    Only lists produced at or after ``since`` (wall clock) count: after a crash, a list for a user's
    last event may come from an earlier incarnation while the new one is still re-reading older events.
    Fails (with what is still missing) after ``timeout_s``, or at once if a worker in ``alive`` exited.
    Returns every recommendation read, in order.
    """
    pending = dict(wanted)
    recs: list[Recommendation] = []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"await-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            for worker in alive:
                code, tail = worker.proc.returncode, worker.log_text()[-4000:]
                assert worker.alive(), f"worker exited ({code}):\n{tail}"
            assert time.monotonic() < deadline, (
                f"after {timeout_s:.0f}s, {len(pending)} users still lack a list for their event, e.g. "
                f"{list(pending.items())[:3]}")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None or msg.value() is None:
                    continue
                rec = decode_recommendation(msg.value())
                recs.append(rec)
                if pending.get(rec.user_id) == rec.event_id and rec.produced_ts >= since:
                    del pending[rec.user_id]
    finally:
        consumer.close()
    return recs
