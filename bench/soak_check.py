"""What the soak benchmark concludes from what it read: pure functions over plain values, unit-tested.

- :func:`state_losses`: events lost or applied twice, from each user's event count against a computation
  from scratch (and the users whose state differs in anything the events determine).
- :func:`list_coverage`: which events the recommendations topic names. A worker sends one list per user
  per batch, for the user's latest event in it (``stream/pipeline.py``), so an event inside a batch can have
  no list of its own and still be in the state behind the next one. An event is *missing* its list when no
  list names it or a later event of the same user: its effect never reached the output.
- :func:`stall_episodes`: partitions whose committed offset stayed put, below the end, for ``stall_s`` or more
  while nobody disturbed the workers.
- :func:`worker_phase`: where a worker stands (starting, rebalance, recovery, processing), from its log.
- :func:`state_writes`: changelog records written from a stale state. A state names the last source offset it
  applied, so it must count exactly the user's events up to that offset; fewer means a worker built it on an
  older state than the changelog already held (an overwrite: the events in between are lost unless a later
  record happens to restore them), more means events applied twice.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise


def state_losses(actual_counts: Mapping[str, int], expected_counts: Mapping[str, int],
                 differing: Iterable[str] = ()) -> dict[str, int]:
    """Lost and doubled events from per-user event counts (a missing user lost all of theirs)."""
    lost = doubled = 0
    for user, want in expected_counts.items():
        got = actual_counts.get(user, 0)
        lost += max(0, want - got)
        doubled += max(0, got - want)
    return {
        "lost": lost,
        "doubled": doubled,
        "users_missing": sum(1 for user in expected_counts if user not in actual_counts),
        "users_unexpected": sum(1 for user in actual_counts if user not in expected_counts),
        "users_differing": len(set(differing)),
    }


@dataclass(frozen=True)
class Listed:
    """One list read from the recommendations topic: whose, for which event, and what it holds."""

    user_id: str
    event_id: str
    items: tuple[str, ...]


def list_coverage(events_by_user: Mapping[str, Sequence[str]], lists: Iterable[Listed]) -> dict[str, int]:
    """Count lists per event against each user's events in order (see the module's docstring)."""
    position = {(user, event): i for user, events in events_by_user.items() for i, event in enumerate(events)}
    named: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    unknown = total = 0
    for rec in lists:
        total += 1
        if (rec.user_id, rec.event_id) not in position:
            unknown += 1
            continue
        named.setdefault((rec.user_id, rec.event_id), []).append(rec.items)
    latest_named = {user: -1 for user in events_by_user}
    for (user, event) in named:
        latest_named[user] = max(latest_named[user], position[(user, event)])
    n_events = len(position)
    return {
        "lists": total,
        "events_listed": len(named),
        "events_unlisted": n_events - len(named),
        "missing_lists": sum(len(events) - 1 - latest_named[user] for user, events in events_by_user.items()),
        "users_without_a_list_for_their_last_event": sum(
            1 for user, events in events_by_user.items() if events and latest_named[user] != len(events) - 1),
        "events_listed_more_than_once": sum(1 for found in named.values() if len(found) > 1),
        "events_relisted_differently": sum(1 for found in named.values() if len(set(found)) > 1),
        "lists_for_unknown_events": unknown,
    }


@dataclass(frozen=True)
class Stall:
    """A partition whose commit stayed at ``committed`` for ``seconds`` (from ``since_s``) with ``end`` beyond
    it; ``quiet_s`` is the longest part of that time in which no worker was killed, stopped or started."""

    partition: int
    committed: int
    end: int
    since_s: float
    seconds: float
    quiet_s: float


def standstills(samples: Sequence[tuple[float, Mapping[int, int], Mapping[int, int]]], min_s: float,
                disruptions: Sequence[float] = ()) -> list[Stall]:
    """Runs of samples ``(t, committed per partition, end per partition)`` in which a partition's committed
    offset stays the same below its end (lag > 0), lasting ``min_s`` or more, in time order."""
    found: list[Stall] = []
    run: dict[int, tuple[float, int]] = {}  # partition -> (first t of the run, committed)
    last: dict[int, tuple[float, int]] = {}  # partition -> (t, end) of the run's latest sample

    def close(part: int) -> None:
        start, committed = run.pop(part)
        t, end = last.pop(part)
        if t - start >= min_s:
            cuts = [start, *sorted(d for d in disruptions if start < d < t), t]
            quiet = max(b - a for a, b in pairwise(cuts))
            found.append(Stall(part, committed, end, start, t - start, quiet))

    for t, committed, ends in samples:
        for part in sorted(set(committed) | set(ends) | set(run)):
            got, end = committed.get(part, 0), ends.get(part, 0)
            if part in run and (run[part][1] != got or got >= end):
                close(part)
            if got < end:
                run.setdefault(part, (t, got))
                last[part] = (t, end)
    for part in list(run):
        close(part)
    return sorted(found, key=lambda s: (s.since_s, s.partition))


def stall_episodes(samples: Sequence[tuple[float, Mapping[int, int], Mapping[int, int]]], stall_s: float,
                   disruptions: Sequence[float] = ()) -> list[Stall]:
    """Standstills with ``stall_s`` or more of it undisturbed: the commit had every chance to move and did not
    (a partition whose owner is killed every few seconds stands still too, but that is no stall)."""
    return [s for s in standstills(samples, stall_s, disruptions) if s.quiet_s >= stall_s]


def ongoing_stalls(samples: Sequence[tuple[float, Mapping[int, int], Mapping[int, int]]], stall_s: float,
                   disruptions: Sequence[float] = ()) -> list[Stall]:
    """The stalls still going on at the last sample."""
    if not samples:
        return []
    now = samples[-1][0]
    return [s for s in stall_episodes(samples, stall_s, disruptions) if s.since_s + s.seconds >= now]


def lost_evidence(missing: Iterable[str],
                  placement: Mapping[str, tuple[int, int]]) -> dict[int, dict[str, int]]:
    """Where identified lost events sat in the input topic: per partition, how many and their offset range."""
    out: dict[int, dict[str, int]] = {}
    for event_id in missing:
        part, offset = placement[event_id]
        got = out.setdefault(part, {"count": 0, "first_offset": offset, "last_offset": offset})
        got["count"] += 1
        got["first_offset"] = min(got["first_offset"], offset)
        got["last_offset"] = max(got["last_offset"], offset)
    return dict(sorted(out.items()))


# Faust's log lines that mark where a worker stands, and the phase each begins.
PHASE_MARKS = (
    ("Revoking previously assigned partitions", "rebalance"),
    ("(Re-)joining group", "rebalance"),
    ("Setting newly assigned partitions", "recovery"),
    ("[^---Recovery]: Worker ready", "processing"),
)


def worker_phase(log_text: str) -> str:
    """The phase the latest mark in a worker's log begins; ``starting`` before any."""
    best, phase = -1, "starting"
    for mark, begins in PHASE_MARKS:
        at = log_text.rfind(mark)
        if at > best:
            best, phase = at, begins
    return phase


@dataclass(frozen=True)
class Written:
    """One state record of the users changelog: whose, where it sits, what it counts, how far it applied."""

    user_id: str
    partition: int
    offset: int
    interactions: int
    applied_to: int  # the last source offset the state applied (-1: none)


def state_writes(written: Iterable[Written], event_offsets: Mapping[str, Sequence[int]],
                 examples: int = 5) -> dict[str, object]:
    """Count records whose event count is below (``stale``) or above (``doubled``) what their applied source
    offset implies; ``event_offsets`` holds each user's source offsets, sorted (a user's events sit in one
    partition). The first few stale records are given as (user, changelog partition, offset, counted, due)."""
    records = stale = doubled = 0
    first: list[tuple[str, int, int, int, int]] = []
    for w in written:
        records += 1
        due = bisect_right(event_offsets.get(w.user_id, ()), w.applied_to)
        if w.interactions < due:
            stale += 1
            if len(first) < examples:
                first.append((w.user_id, w.partition, w.offset, w.interactions, due))
        elif w.interactions > due:
            doubled += 1
    return {"records": records, "stale": stale, "doubled": doubled, "first_stale": first}
