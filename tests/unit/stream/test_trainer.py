"""The continual trainer's window: bounded, and a deleted user's events leave it."""

from __future__ import annotations

from schemas.records import Interaction, UserDeletion
from stream.trainer import EventWindow

TS = 1_700_000_000.0


def ev(i: int, user: str, type_: str = "click", value: float | None = None) -> Interaction:
    return Interaction(event_id=f"e{i}", user_id=user, item_id=f"i{i % 7}", type=type_, ts=TS + i, value=value)


def test_window_keeps_the_most_recent_events():
    window = EventWindow(capacity=5)
    for i in range(12):
        window.add(ev(i, f"u{i % 3}"))
    log = window.to_log()
    assert len(log) == 5
    assert list(log.ts) == [TS + i for i in range(7, 12)]


def test_deletion_removes_the_users_events_from_the_window():
    window = EventWindow(capacity=100)
    for i in range(10):
        window.add(ev(i, "gone" if i % 2 else "kept"))
    window.add(UserDeletion(event_id="d", user_id="gone", ts=TS + 20))
    log = window.to_log()
    assert log.user_ids == ["kept"]
    assert len(log) == 5


def test_mostly_ratings_make_an_explicit_log():
    window = EventWindow(capacity=10)
    for i in range(4):
        window.add(ev(i, "u", "rating", 4.0))
    window.add(ev(9, "u"))
    assert window.to_log().explicit
    assert not EventWindow(capacity=3).to_log().explicit
