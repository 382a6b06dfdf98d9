"""The soak's audit: what the stores and the output topic hold against a computation from scratch.

Kept apart from the driver (``bench/soak.py``) so the comparison reads in one place; the counting rules are
the pure functions of ``bench/soak_check.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Message

from bench.ground_truth import differing_users, reference_states
from bench.soak_check import Listed, list_coverage, state_losses
from schemas.decode import decode_recommendation
from schemas.records import Interaction, Recommendation
from stream.state import UserState


def audit(events: Sequence[Interaction], changelog: dict[str, UserState], rocksdb: dict[str, UserState],
          recs: Sequence[Message], checkpoint: Path, top_k: int) -> dict[str, Any]:
    """``lost`` and ``doubled`` (the worse of the two stores), per-store detail, list coverage, latest lists."""
    expected = reference_states(events)
    counts = {user: s.interactions for user, s in expected.items()}
    stores = {
        name: state_losses({u: s.interactions for u, s in states.items()}, counts,
                           differing_users(states, expected))
        for name, states in (("changelog", changelog), ("rocksdb", rocksdb))
    }
    decoded = [decode_recommendation(m.value()) for m in recs if m.value() is not None]
    by_user: dict[str, list[str]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e.event_id)
    lists = list_coverage(by_user, (Listed(r.user_id, r.event_id, tuple(s.item_id for s in r.items))
                                    for r in decoded))
    lists["tombstones"] = sum(1 for m in recs if m.value() is None)
    return {
        "lost": max(s["lost"] for s in stores.values()),
        "doubled": max(s["doubled"] for s in stores.values()),
        "state": stores,
        "lists": lists,
        "latest_lists": latest_lists_against_the_model(decoded, expected, checkpoint, top_k),
    }


def latest_lists_against_the_model(decoded: Sequence[Recommendation], expected: dict[str, UserState],
                                   checkpoint: Path, top_k: int, batch: int = 256) -> dict[str, Any]:
    """Each user's latest list against the list the model gives for their from-scratch final state (the model
    has no stream context, so the state alone decides it), built by the worker's own request code."""
    from models.serving.recommender import Recommender
    from stream import versions
    from stream.pipeline import adapt_request

    latest: dict[str, Recommendation] = {}
    for rec in decoded:
        latest[rec.user_id] = rec
    model = Recommender.load(versions.resolve(checkpoint))
    users = sorted(u for u in expected if u in latest)
    differing: list[str] = []
    for lo in range(0, len(users), batch):
        chunk = users[lo:lo + batch]
        wants = model.recommend([adapt_request(u, expected[u], model.config.objective) for u in chunk], top_k)
        differing += [u for u, want in zip(chunk, wants)
                      if [s.item_id for s in latest[u].items] != list(want.items)]
    return {"checked": len(users), "differing": len(differing), "examples": differing[:5]}
