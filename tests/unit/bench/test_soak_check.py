"""The soak's counting rules (bench/soak_check.py) on small hand-made cases."""

from __future__ import annotations

from bench.soak_check import (
    Listed,
    Stall,
    Written,
    list_coverage,
    lost_evidence,
    ongoing_stalls,
    stall_episodes,
    standstills,
    state_losses,
    state_writes,
    worker_phase,
)


def test_state_losses_count_missing_and_extra_events_per_user() -> None:
    expected = {"u1": 3, "u2": 2, "u3": 1}
    actual = {"u1": 2, "u2": 4, "u4": 1}  # u1 lost one, u2 has two twice, u3 lost entirely, u4 unexpected
    got = state_losses(actual, expected, differing=["u1", "u2", "u3", "u1"])
    assert got == {"lost": 2, "doubled": 2, "users_missing": 1, "users_unexpected": 1, "users_differing": 3}
    assert state_losses(expected, expected) == {"lost": 0, "doubled": 0, "users_missing": 0,
                                                "users_unexpected": 0, "users_differing": 0}


def test_an_event_misses_its_list_only_when_no_list_names_it_or_a_later_event_of_its_user() -> None:
    events = {"u1": ["a1", "a2", "a3"], "u2": ["b1", "b2"], "u3": ["c1"]}
    lists = [
        Listed("u1", "a2", ("x",)),  # a1 and a2 covered (one batch), a3 not
        Listed("u2", "b2", ("y",)), Listed("u2", "b2", ("y",)),  # b2 listed twice, alike
        Listed("u2", "b1", ("z",)),  # a late list for b1 (after a crash)
        Listed("u2", "b1", ("w",)),  # b1 listed twice, differently
        Listed("u9", "zz", ("q",)),  # an event nobody sent
    ]
    got = list_coverage(events, lists)
    assert got == {
        "lists": 6,
        "events_listed": 3,  # a2, b2, b1
        "events_unlisted": 3,  # a1, a3, c1
        "missing_lists": 2,  # a3 (after u1's last listed event) and c1 (u3 has no list)
        "users_without_a_list_for_their_last_event": 2,  # u1, u3
        "events_listed_more_than_once": 2,  # b2, b1
        "events_relisted_differently": 1,  # b1
        "lists_for_unknown_events": 1,
    }


def test_a_stall_is_a_commit_standing_still_below_the_end_for_long_enough() -> None:
    samples = [
        (0.0, {0: 5, 1: 0}, {0: 10, 1: 4}),
        (10.0, {0: 5, 1: 4}, {0: 10, 1: 4}),  # partition 1 caught up: no lag, nothing to stall
        (30.0, {0: 5, 1: 4}, {0: 12, 1: 4}),
        (61.0, {0: 5, 1: 4}, {0: 12, 1: 8}),  # partition 0: 61 s at 5 with lag: a stall; 1 starts lagging
        (70.0, {0: 9, 1: 4}, {0: 12, 1: 8}),  # partition 0 moves on
        (200.0, {0: 12, 1: 4}, {0: 12, 1: 8}),  # partition 1 stood at 4 from 61 s to the end: another
    ]
    got = stall_episodes(samples, stall_s=60.0)
    assert got == [Stall(0, 5, 12, 0.0, 61.0, 61.0), Stall(1, 4, 8, 61.0, 139.0, 139.0)]
    assert stall_episodes(samples, stall_s=200.0) == []
    assert stall_episodes([(0.0, {0: 3}, {0: 3}), (500.0, {0: 3}, {0: 3})], stall_s=60.0) == []
    assert ongoing_stalls(samples, 60.0) == [Stall(1, 4, 8, 61.0, 139.0, 139.0)]
    assert ongoing_stalls(samples[:5], 60.0) == []


def test_a_commit_that_was_never_left_alone_long_enough_is_no_stall() -> None:
    samples = [(float(t), {0: 0}, {0: 100}) for t in range(0, 130, 10)]  # 120 s at 0 with lag
    kills = [25.0, 55.0, 85.0, 115.0]  # the owner killed every 30 s
    (still,) = standstills(samples, 60.0, kills)
    assert (still.seconds, still.quiet_s) == (120.0, 30.0)
    assert stall_episodes(samples, 60.0, kills) == []
    assert stall_episodes(samples, 60.0, [25.0, 115.0]) == [Stall(0, 0, 100, 0.0, 120.0, 90.0)]


def test_lost_events_are_placed_by_partition_and_offset_range() -> None:
    placement = {"e1": (0, 7), "e2": (0, 3), "e3": (2, 40), "e4": (1, 1)}
    assert lost_evidence(["e1", "e2", "e3"], placement) == {
        0: {"count": 2, "first_offset": 3, "last_offset": 7},
        2: {"count": 1, "first_offset": 40, "last_offset": 40},
    }


def test_the_phase_is_the_one_the_latest_mark_in_the_log_begins() -> None:
    assert worker_phase("settings...\n[^Worker]: Starting...") == "starting"
    joined = "(Re-)joining group g\nJoined group 'g'\n"
    assert worker_phase(joined) == "rebalance"
    recovering = joined + "Setting newly assigned partitions\n[^---Recovery]: Highwater\n"
    assert worker_phase(recovering) == "recovery"
    ready = recovering + "[^---Recovery]: Worker ready\n"
    assert worker_phase(ready) == "processing"
    assert worker_phase(ready + "Revoking previously assigned partitions {} for group g\n") == "rebalance"


def test_a_changelog_record_must_count_the_events_up_to_the_offset_it_applied() -> None:
    offsets = {"u1": [3, 7, 12, 20], "u2": [5]}
    written = [
        Written("u1", 0, 100, 2, 7),  # 3 and 7: right
        Written("u1", 0, 101, 3, 12),  # right
        Written("u1", 0, 102, 3, 20),  # built on the state of @100 (2 events) plus 20: 12 was overwritten
        Written("u2", 1, 50, 2, 5),  # one event counted twice
        Written("u2", 1, 51, 0, -1),  # nothing applied yet: right
    ]
    got = state_writes(written, offsets)
    assert got == {"records": 5, "stale": 1, "doubled": 1, "first_stale": [("u1", 0, 102, 3, 4)]}
    assert state_writes([], offsets) == {"records": 0, "stale": 0, "doubled": 0, "first_stale": []}
