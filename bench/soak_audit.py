"""The soak's audit: what the stores and the output topic hold against a computation from scratch.

Kept apart from the driver (``bench/soak.py``) so the comparison reads in one place; the counting rules are
the pure functions of ``bench/soak_check.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Message

from bench.ground_truth import differing_users, reference_states
from bench.soak_check import Listed, Written, list_coverage, lost_evidence, state_losses, state_writes
from schemas.decode import decode_recommendation
from schemas.records import Interaction, Recommendation
from stream.state import UserState, decode_state


class _EventHead(msgspec.Struct):
    event_id: str


_head = msgspec.json.Decoder(_EventHead)


def audit(events: Sequence[Interaction], inputs: Sequence[Message], changelog: dict[str, UserState],
          rocksdb: dict[str, UserState], recs: Sequence[Message], checkpoint: Path,
          top_k: int, changelog_records: Sequence[Message] = ()) -> dict[str, Any]:
    """``lost`` and ``doubled`` (the worse of the two stores), per-store detail, where lost events sat in the
    input topic, a check that the input topic holds every event once, list coverage, latest lists, and every
    changelog record written from a stale state (``changelog_records``: the whole topic, in order)."""
    expected = reference_states(events)
    placement = {_head.decode(m.value()).event_id: (m.partition(), m.offset()) for m in inputs}
    on_topic = Counter(_head.decode(m.value()).event_id for m in inputs)
    sent = {e.event_id for e in events}
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
    seen_lost = [event_id for user, state in changelog.items() if user in expected
                 for event_id in expected[user].recent_ids if event_id not in state.recent_ids]
    listed = {r.event_id for r in decoded}
    return {
        "input_topic": {"records": len(inputs), "events_absent": len(sent - set(on_topic)),
                        "events_twice": sum(1 for n in on_topic.values() if n > 1)},
        "lost_seen_in_recent_id_windows": lost_evidence(seen_lost, placement),
        # a lost event some list names was applied once and later overwritten (a state restored stale);
        # one no list names was never applied (its offset committed past)
        "lost_seen_with_a_list": sum(1 for event_id in seen_lost if event_id in listed),
        "lost": max(s["lost"] for s in stores.values()),
        "doubled": max(s["doubled"] for s in stores.values()),
        "state": stores,
        "lists": lists,
        "latest_lists": latest_lists_against_the_model(decoded, expected, checkpoint, top_k),
        "changelog_writes": changelog_writes(inputs, changelog_records),
    }


def changelog_writes(inputs: Sequence[Message], records: Sequence[Message]) -> dict[str, object]:
    """Every state record of the changelog checked against the events up to the source offset it applied."""
    offsets: dict[str, list[int]] = {}
    for m in inputs:
        offsets.setdefault(m.key().decode(), []).append(m.offset())
    for user_offsets in offsets.values():
        user_offsets.sort()
    written = []
    for m in records:
        if m.value() is None:
            continue
        state = decode_state(m.value())
        written.append(Written(m.key().decode(), m.partition(), m.offset(), state.interactions,
                               max(state.offsets.values(), default=-1)))
    return state_writes(written, offsets)


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
